"""Simple and Concise Confidence Gain (SCG / CCG) of attribution maps.

Implements the confidence-gain paper (``papers/scg-ccg-confidence-gain.txt``):

* **Heat-map dilation** (§5.2): "*grad*'s heat map *H* is of high entropy, so we dilate the
  raw heat map 0, 2, and 5 times with a 3x3 kernel" -- a grey-value dilation (3 x 3 maximum
  filter) applied ``d`` times before thresholding, per method and setting
  (``confidence_gain.heatmap_dilations``, default ``{gradient: [0, 2, 5]}``); every setting
  is its own row, as in the paper's Table 1. Agreement masks use one setting per method
  (``confidence_gain.agreement_dilations``, default ``{gradient: 5}``: "for grad, the number
  of dilating operations is 5").
* **Mask** (§4.1): ``M`` = the top ``rho`` pixels of the heat map ``H`` (``round(rho*H*W)``
  pixels; ties broken by the per-image seeded order of
  :func:`xaipipe.evaluate.removal.tie_orders`, the same for every method).
* **Base image** ``I_K`` (§4.1, §5.2): a Gaussian kernel ``G_k`` (blur, 17 x 17 at 224 px) or
  the zero kernel ``Z_k`` (black). **Hybrid** ``I_{M,K}`` = ``I`` where ``M`` else ``I_K``.
* **SCG** (Eq. 2): ``(p(I_{M,K}) - p(I_K)) / (p(I) - p(I_K))`` with ``p`` the softmax
  probability of the true class ``y``.
* **CCG** (Eq. 3, Algorithm 1): grow ``M`` by 3 x 3 dilation until the hybrid is classified
  as ``y`` (the accurate mask ``AM``), then
  ``(p(I_{AM,K}) - p(I_K)) * N / ((p(I) - p(I_K)) * A_AM)``.
* **Exclusions** (§5.2): images with ``p(I) - p(I_K) <= min_denominator`` are excluded from
  both metrics. The paper excludes "less than zero" (``min_denominator: 0``, plus zero, which
  would divide by zero); the default 0.05 also drops images whose full image barely beats the
  base, where Eq. 2 and 3 divide by noise (measured on the demo's black model: SCG values up
  to 180 where the metric lives near [0, 1], and means decided by one image). A negative
  numerator excludes the image from that metric; CCG excludes images whose mask had to be
  grown more than ``max_growth`` (50) times. An empty mask (an agreement mask with no common
  pixel) cannot grow and is excluded from CCG. Every exclusion is counted by reason.
* **Agreement** (§4.4): the intersection of two methods' binary masks, for every pair.

Batching: the images of a chunk and all its masks (methods x pairs) are one flat set of
"items"; every growth step runs one forward pass (in ``batch_size`` pieces) over the items
still growing, never a per-image Python loop. The growth loop itself is hand-written (no
library implements SCG/CCG); dilation is ``max_pool2d`` and the blur torchvision's
``gaussian_blur``.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from xaipipe import paths
from xaipipe.data.store import Split, read_split
from xaipipe.device import claim_job_device
from xaipipe.errors import DataError
from xaipipe.evaluate.removal import load_maps, pixel_count, rank_mask, split_ids, tie_orders
from xaipipe.io import atomic_path
from xaipipe.models import images_to_float, load_model

log = logging.getLogger(__name__)

KERNELS = ("gaussian", "zero")
PAPER_RESOLUTION = 224
"""The paper's kernel size (17) is given for ~224 px inputs (AlexNet, 227 px)."""
ITEMS_PER_BATCH_FACTOR = 16
"""A chunk holds at most ``batch_size * 16`` (image, mask) items, bounding device memory."""

# Per-item status of one metric; the names are the table's ``excluded_*`` columns.
OK, DENOMINATOR, NEGATIVE_GAIN, GROWTH_LIMIT, EMPTY_MASK = range(5)
EXCLUSION_REASONS = {DENOMINATOR: "denominator", NEGATIVE_GAIN: "negative_gain",
                     GROWTH_LIMIT: "growth_limit", EMPTY_MASK: "empty_mask"}


# --- masks and base images ------------------------------------------------------------------

def top_fraction_mask(maps: torch.Tensor, rho: float, ties: torch.Tensor) -> torch.Tensor:
    """Boolean N x H x W mask of the top ``rho`` share of each heat map (§4.1, "GetBitMask"),
    ties in the order of ``ties`` (:func:`xaipipe.evaluate.removal.tie_orders`)."""
    _, height, width = maps.shape
    return rank_mask(maps, pixel_count(rho, height, width), most_relevant=True, ties=ties)


def dilate_heatmap(maps: torch.Tensor, times: int) -> torch.Tensor:
    """Grey-value dilation of N x H x W heat maps with a 3 x 3 kernel, ``times`` times
    (§5.2): each pixel becomes the maximum of its 3 x 3 neighbourhood inside the image."""
    out = maps.float()[:, None]
    for _ in range(times):
        out = F.max_pool2d(out, kernel_size=3, stride=1, padding=1)
    return out[:, 0]


def dilate(masks: torch.Tensor) -> torch.Tensor:
    """One 3 x 3 dilation of boolean N x H x W masks (§5.2, "DilateGrow")."""
    grown = F.max_pool2d(masks[:, None].float(), kernel_size=3, stride=1, padding=1)
    return grown[:, 0].bool()


def gaussian_kernel_size(size_at_224: int, resolution: int) -> int:
    """``size_at_224`` scaled to ``resolution``, rounded to the nearest odd size >= 3."""
    scaled = size_at_224 * resolution / PAPER_RESOLUTION
    return max(3, 2 * int(round((scaled - 1) / 2)) + 1)


def opencv_sigma(kernel_size: int) -> float:
    """The sigma OpenCV (and torchvision) derive from a kernel size when none is given:
    ``0.3 * ((k - 1) / 2 - 1) + 0.8`` (2.9 for the paper's 17 x 17). The paper names only the
    size, so this is our reading of "a Gaussian kernel of size 17*17"."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def base_images(images: torch.Tensor, kernel: str, kernel_size: int, sigma: float) -> torch.Tensor:
    """The base image ``I_K`` of float images in [0, 1] (§4.1): blurred (``gaussian``, reflect
    padding) or black (``zero``)."""
    if kernel == "zero":
        return torch.zeros_like(images)
    if kernel == "gaussian":
        return TF.gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


# --- model queries --------------------------------------------------------------------------

@torch.inference_mode()
def class_probability(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p(I = y | w), predicted class)`` for float images, ``batch_size`` at a time."""
    probs, preds = [], []
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start:start + batch_size]).float()
        p = logits.softmax(dim=1)
        probs.append(p.gather(1, labels[start:start + batch_size, None])[:, 0])
        preds.append(logits.argmax(dim=1))
    if not probs:
        empty = images.new_zeros(0)
        return empty, empty.long()
    return torch.cat(probs), torch.cat(preds)


def _hybrid_probability(model: nn.Module, images: torch.Tensor, base: torch.Tensor,
                        labels: torch.Tensor, masks: torch.Tensor, image_index: torch.Tensor,
                        batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`class_probability` of the hybrids ``I_{M,K}`` of items (``image_index[k]``,
    ``masks[k]``), building each batch of hybrids only when it is needed."""
    probs, preds = [], []
    for start in range(0, masks.shape[0], batch_size):
        idx = image_index[start:start + batch_size]
        hybrid = torch.where(masks[start:start + batch_size, None], images[idx], base[idx])
        p, pred = class_probability(model, hybrid, labels[idx], batch_size)
        probs.append(p)
        preds.append(pred)
    return torch.cat(probs), torch.cat(preds)


# --- SCG and CCG ----------------------------------------------------------------------------

@dataclass
class GainResult:
    """Per-item results (item = one mask of one image); excluded items hold NaN."""

    scg: torch.Tensor
    ccg: torch.Tensor
    scg_status: torch.Tensor
    """``OK`` or the reason code (``DENOMINATOR``, ``NEGATIVE_GAIN``) per item."""
    ccg_status: torch.Tensor
    """``OK`` or ``DENOMINATOR``, ``NEGATIVE_GAIN``, ``GROWTH_LIMIT``, ``EMPTY_MASK``."""
    growth: torch.Tensor
    """Dilations needed to reach the accurate mask ``AM`` (-1 where CCG is excluded)."""
    area: torch.Tensor
    """``A_AM / N``, the accurate mask's share of the image (NaN where CCG is excluded)."""


def confidence_gain(model: nn.Module, images: torch.Tensor, base: torch.Tensor,
                    labels: torch.Tensor, masks: torch.Tensor, *, max_growth: int,
                    batch_size: int, min_denominator: float = 0.0) -> GainResult:
    """SCG (Eq. 2) and CCG (Eq. 3, Algorithm 1) of ``S`` mask sets over ``n`` images.

    ``images``/``base``: float n x 3 x H x W (``I`` and ``I_K``); ``labels``: n true classes;
    ``masks``: boolean S x n x H x W. Returns flattened S*n items (row ``s*n + i`` is mask set
    ``s`` of image ``i``). Each growth step is one batched forward over the items still
    growing; an item whose mask already covers the image and is still misclassified stops
    early (it would only reach the growth limit). Images with ``p(I) - p(I_K) <=
    min_denominator`` are excluded (``DENOMINATOR``; the paper's rule is 0).
    """
    sets, n, height, width = masks.shape
    image_index = torch.arange(n, device=images.device).repeat(sets)
    item_labels = labels[image_index]
    masks = masks.reshape(sets * n, height, width).clone()
    p_image, _ = class_probability(model, images, labels, batch_size)
    p_base, _ = class_probability(model, base, labels, batch_size)
    gain_denominator = (p_image - p_base)[image_index]
    item_base = p_base[image_index]

    p_hybrid, pred = _hybrid_probability(model, images, base, labels, masks, image_index, batch_size)
    valid = gain_denominator > min_denominator
    scg_gain = p_hybrid - item_base
    scg_status = torch.full_like(image_index, OK)
    scg_status[scg_gain < 0] = NEGATIVE_GAIN
    scg_status[~valid] = DENOMINATOR
    scg = torch.where(scg_status == OK, scg_gain / gain_denominator, torch.nan)

    ccg_status = torch.full_like(image_index, GROWTH_LIMIT)
    ccg_status[masks.flatten(1).sum(1) == 0] = EMPTY_MASK
    ccg_status[~valid] = DENOMINATOR
    p_accurate = torch.full_like(p_hybrid, torch.nan)
    area = torch.full_like(p_hybrid, torch.nan)
    growth = torch.full_like(image_index, -1)
    active = torch.nonzero(ccg_status == GROWTH_LIMIT)[:, 0]
    active_p, active_pred = p_hybrid[active], pred[active]
    for step in range(max_growth + 1):
        if step > 0:
            active_p, active_pred = _hybrid_probability(
                model, images, base, labels, masks[active], image_index[active], batch_size)
        correct = active_pred == item_labels[active]
        done = active[correct]
        p_accurate[done] = active_p[correct]
        area[done] = masks[done].flatten(1).float().mean(1)
        growth[done] = step
        ccg_status[done] = OK
        active = active[~correct]
        active = active[~masks[active].flatten(1).all(1)]  # whole image and still wrong
        if step == max_growth or active.numel() == 0:
            break
        masks[active] = dilate(masks[active])
    ccg_gain = p_accurate - item_base
    ccg_status[(ccg_status == OK) & (ccg_gain < 0)] = NEGATIVE_GAIN
    ccg = torch.where(ccg_status == OK, ccg_gain / (gain_denominator * area), torch.nan)
    growth[ccg_status != OK] = -1
    area[ccg_status != OK] = torch.nan
    return GainResult(scg=scg, ccg=ccg, scg_status=scg_status, ccg_status=ccg_status,
                      growth=growth, area=area)


# --- the stage ------------------------------------------------------------------------------

MaskSet = tuple[tuple[str, int], ...]
"""One mask: ``((method, heat-map dilations), ...)``; two or more members = an agreement mask."""


def mask_sets(methods: Sequence[str], agreement: bool,
              heatmap_dilations: Mapping[str, Sequence[int]] | None = None,
              agreement_dilations: Mapping[str, int] | None = None) -> list[MaskSet]:
    """Every single method at each of its heat-map dilation settings (default ``[0]``), then
    (``agreement``) every unordered pair of methods, each at its agreement setting (default
    0) (§4.4, §5.2)."""
    heatmap_dilations = heatmap_dilations or {}
    agreement_dilations = agreement_dilations or {}
    singles = [((m, int(d)),) for m in methods for d in heatmap_dilations.get(m, [0])]
    pairs = [tuple((m, int(agreement_dilations.get(m, 0))) for m in pair)
             for pair in itertools.combinations(methods, 2)] if agreement else []
    return singles + pairs


def mask_name(mask_set: MaskSet) -> str:
    """The table's ``mask`` column: the methods joined by ``+``."""
    return "+".join(method for method, _ in mask_set)


def dilation_name(mask_set: MaskSet) -> str:
    """The table's ``dilation`` column: each member's heat-map dilations, joined by ``+``."""
    return "+".join(str(d) for _, d in mask_set)


def build_masks(maps: Mapping[str, torch.Tensor], sets: Sequence[MaskSet], rho: float,
                ties: torch.Tensor) -> torch.Tensor:
    """S x n x H x W boolean masks: each set's members' top-``rho`` masks (of the heat map
    dilated as the member says) intersected (agreement)."""
    members = {member for mask_set in sets for member in mask_set}
    singles = {(m, d): top_fraction_mask(dilate_heatmap(maps[m], d), rho, ties)
               for m, d in members}
    out = []
    for mask_set in sets:
        mask = singles[mask_set[0]]
        for member in mask_set[1:]:
            mask = mask & singles[member]
        out.append(mask)
    return torch.stack(out)


def select_images(n: int, num_images: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded subset of ``num_images`` rows (all rows if fewer).
    The generator depends only on the master seed, so every variant sees the same images."""
    if num_images >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, zlib.crc32(b"confidence_gain")])
    return np.sort(rng.choice(n, size=num_images, replace=False))


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """The tidy table: one row per (mask, rho, kernel) with means, stds and exclusion counts."""
    keys = ["mask", "dilation", "kind", "rho", "kernel"]
    rows = []
    for key, group in records.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        scg = group.loc[group.scg_status == OK, "scg"]
        ccg = group.loc[group.ccg_status == OK, ["ccg", "growth", "area"]]
        row.update(scg_mean=scg.mean(), scg_std=scg.std(), ccg_mean=ccg.ccg.mean(),
                   ccg_std=ccg.ccg.std(), growth_mean=ccg.growth.mean(), area_mean=ccg.area.mean(),
                   n_images=len(group), n_scg=len(scg), n_ccg=len(ccg))
        for code, reason in EXCLUSION_REASONS.items():
            if code in (DENOMINATOR, NEGATIVE_GAIN):
                row[f"scg_excluded_{reason}"] = int((group.scg_status == code).sum())
            row[f"ccg_excluded_{reason}"] = int((group.ccg_status == code).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_confidence_gain(model: nn.Module, split: Split, maps: Mapping[str, np.ndarray], *,
                             rhos: Sequence[float], kernels: Sequence[str], kernel_size: int,
                             sigma: float, max_growth: int, min_denominator: float,
                             sets: Sequence[MaskSet],
                             batch_size: int, tie_seed: int,
                             device: torch.device) -> pd.DataFrame:
    """Per-item SCG/CCG records of ``split`` (all rows) for every mask set, rho and kernel.

    ``maps[method]``: N x H x W heat maps in ``split``'s row order; ``sets``: from
    :func:`mask_sets`; ties of the top-rho masks follow :func:`tie_orders` of the split's
    ids with ``tie_seed``. Columns: ``mask``, ``dilation``, ``kind`` (single/agreement),
    ``rho``, ``kernel``, ``image``, ``scg``, ``ccg``, ``scg_status``, ``ccg_status``,
    ``growth``, ``area``.
    """
    model = model.to(device).eval()
    n, _, height, width = split.images.shape
    ids = split_ids(split)
    chunk = max(1, batch_size * ITEMS_PER_BATCH_FACTOR // len(sets))
    frames = []
    progress = tqdm(total=n * len(kernels) * len(rhos), desc="SCG/CCG", unit="img", leave=False)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        images = images_to_float(torch.as_tensor(np.asarray(split.images[rows]), device=device))
        labels = torch.as_tensor(np.asarray(split.labels[rows]), device=device)
        chunk_maps = {m: torch.as_tensor(np.array(a[rows], dtype=np.float32), device=device)
                      for m, a in maps.items()}
        ties = tie_orders(ids[rows], height * width, tie_seed, device)
        for kernel in kernels:
            base = base_images(images, kernel, kernel_size, sigma)
            for rho in rhos:
                masks = build_masks(chunk_maps, sets, rho, ties)
                result = confidence_gain(model, images, base, labels, masks,
                                         max_growth=max_growth, batch_size=batch_size,
                                         min_denominator=min_denominator)
                frame = pd.DataFrame({k: v.cpu().numpy() for k, v in vars(result).items()})
                count = images.shape[0]
                frame["mask"] = np.repeat([mask_name(s) for s in sets], count)
                frame["dilation"] = np.repeat([dilation_name(s) for s in sets], count)
                frame["kind"] = np.repeat(["single" if len(s) == 1 else "agreement" for s in sets],
                                          count)
                frame["image"] = np.tile(np.arange(rows.start, rows.stop), len(sets))
                frame["rho"], frame["kernel"] = rho, kernel
                frames.append(frame)
                progress.update(count)
    progress.close()
    return pd.concat(frames, ignore_index=True)


def image_records(records: pd.DataFrame, ids: Sequence[str]) -> pd.DataFrame:
    """The per-image values of the single-method masks of :func:`evaluate_confidence_gain`
    records as a long table (``image_id, subject, metric, value``; NaN = excluded): subject
    is the method (``method@d<k>`` for a heat map dilated k times), metric e.g.
    ``scg_gaussian_rho0.05``. The variant comparisons pair these over images."""
    single = records[records["kind"] == "single"]
    frames = []
    for metric in ("scg", "ccg"):
        value = single[metric].where(single[f"{metric}_status"] == OK)
        subject = np.where(single["dilation"] == "0", single["mask"],
                           single["mask"] + "@d" + single["dilation"])
        frames.append(pd.DataFrame({
            "image_id": np.asarray(ids)[single["image"].to_numpy()], "subject": subject,
            "metric": [f"{metric}_{k}_rho{r:g}" for k, r in zip(single["kernel"], single["rho"])],
            "value": value.to_numpy(dtype=np.float64)}))
    return pd.concat(frames, ignore_index=True)


def score_masks(config: Mapping, variant: str, methods: Sequence[str],
                sets: Sequence[MaskSet], *, replicate: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summarised SCG/CCG table (:func:`summarise`) of one model's mask ``sets`` of
    ``methods``' val maps, on the seeded val subset of ``confidence_gain.num_images`` (the
    same images for every model); columns as the stage's table (``variant`` first); and the
    per-image values (:func:`image_records`)."""
    settings = config["confidence_gain"]
    split = read_split(paths.variant_split_dir(config, variant, "val"))
    all_maps = {m: load_maps(paths.attribution_map(config, variant, m, "val",
                                                   replicate=replicate), split)
                for m in methods}
    rows = select_images(len(split), settings["num_images"], config["seed"])
    ids = split_ids(split)
    subset = Split(images=split.images[rows], masks=split.masks[rows], labels=split.labels[rows],
                   meta={**split.meta, "ids": [ids[r] for r in rows]})
    maps = {m: a[rows] for m, a in all_maps.items()}
    kernel_size = gaussian_kernel_size(settings["gaussian_kernel"], config["resolution"])
    sigma = settings["gaussian_sigma"] or opencv_sigma(kernel_size)
    weights = paths.model_weights(config, variant, replicate=replicate)
    with claim_job_device(config) as device:
        model, meta = load_model(weights, map_location=device, config=config)
        check_labels(subset, int(meta["num_classes"]), weights)
        records = evaluate_confidence_gain(
            model, subset, maps, rhos=settings["rhos"], kernels=settings["kernels"],
            kernel_size=kernel_size, sigma=sigma, max_growth=settings["max_growth"],
            min_denominator=settings["min_denominator"], sets=sets,
            batch_size=settings["batch_size"], tie_seed=config["seed"], device=device)
    table = summarise(records)
    table.insert(0, "variant", variant)
    table["kernel_size"] = np.where(table.kernel == "gaussian", kernel_size, 0)
    table["sigma"] = np.where(table.kernel == "gaussian", sigma, 0.0)
    return table, image_records(records, subset.ids)


def run_confidence_gain(config: Mapping, variant: str, *, replicate: int) -> pd.DataFrame:
    """The ``confidence_gain`` stage of one model (replicate ``replicate`` of ``variant``):
    read the val store, the model and every ``explain.methods`` val map, write
    ``paths.confidence_gain_table`` and the per-image values, return the table."""
    settings = config["confidence_gain"]
    methods = list(config["explain"]["methods"])
    sets = mask_sets(methods, settings["agreement"], settings["heatmap_dilations"],
                     settings["agreement_dilations"])
    table, images = score_masks(config, variant, methods, sets, replicate=replicate)
    out = paths.confidence_gain_table(config, variant, replicate=replicate)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(paths.confidence_gain_images(config, variant, replicate=replicate)) as tmp:
        images.to_parquet(tmp, index=False)
    log.info("%s rep%d: SCG/CCG of %d mask sets on %d val images -> %s", variant, replicate,
             len(sets), int(table["n_images"].max()), out)
    return table


def check_labels(split: Split, num_classes: int, model_path) -> None:
    """Raise :class:`DataError` if the store's labels do not fit the model's classes."""
    if len(split) and int(split.labels.max()) >= num_classes:
        raise DataError(f"{model_path} has {num_classes} classes but the val store has label "
                        f"{int(split.labels.max())}; rerun the train stage for this variant")
