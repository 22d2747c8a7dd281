"""Localisation of attribution maps against the ground-truth foreground masks.

Per-image scores of every explanation method, reported as mean and std, next to the value a
map that knows nothing about the object would get:

* **Energy in mask** (the share of attribution mass inside the object, as in the
  "energy-based pointing game" of Score-CAM, Wang et al. 2020):
  ``sum(A+ * mask) / sum(A+)`` where ``A+`` is the map with negative values set to 0
  (``localisation.negative: clip``, only positive evidence counts) or their magnitude
  (``abs``). Maps without any mass (all zero after that step) are excluded and counted.
* **Pointing game, strict** (``localisation.pointing`` holds ``strict``; metric
  ``pointing_game``): 1 if the map's maximum lies on the object, mean over images (Zhang et
  al. 2016 without their tolerance). Tied maxima (a flat or all-zero map) are broken by the
  image's seeded random pixel order (:func:`xaipipe.evaluate.removal.tie_orders`, the same
  for every method), so a flat map hits the object with the chance probability instead of
  always pointing at the top-left corner; the result is deterministic for a seed.
* **Pointing game, TorchRay protocol** (``torchray``; metric ``pointing_game_torchray``), as
  TorchRay's ``benchmark/pointing_game.py`` implements Zhang et al. 2016 ("Top-down neural
  attention by excitation backprop"): "There is a hit whenever the acceptance region
  collides with the class mask", the acceptance region being the pixels at squared distance
  ``< tolerance**2`` from the point (default tolerance 15 px); per class
  ``accuracy = hits / (hits + misses)``, and the reported number is "mean accuracy, computed
  by averaging class_accuracies" -- a mean over classes, not over images. Our tolerance is
  ``localisation.pointing_tolerance_224`` px at 224 px scaled to ``resolution``
  (:func:`pointing_tolerance`). The maximum is chosen with the same seeded tie order as the
  strict game. ``subject = center`` is TorchRay's ``center`` method (the point at the image
  centre, 69.6 on VOC07 test) under the same tolerance and class mean. Adaptation: one
  (image, label) pair per image (the largest-area class) against the whole foreground
  (docs/metrics.md says what that changes).
* **Chance**: a uniform map has energy-in-mask = the image's foreground fraction, and a
  uniformly random point hits the object with that same probability, so the mean
  foreground fraction is the chance level of both scores; for the TorchRay game the chance
  row is the class mean of the share of pixels that count as a hit (object plus tolerance).

The per-image scores come from pure functions (:func:`energy_in_mask`,
:func:`pointing_game`, :func:`hit_region`, :func:`class_means`), so later steps (paired
intervals over images) can recompute them without the stage.

Background reliance of the model: accuracy on the unmodified val images, on foreground-only
images (val x mask, background black) and background-only images (object pixels imputed
from the background, or black, by ``train.bg_only_fill``); the image builders
(:func:`xaipipe.train_stage.background_only`) and the prediction code are the train stage's
own, so these rows match metrics.json.

Masks are 1 = foreground. Energy in mask and the pointing games are a few tensor reductions
(no library has them); the tolerance region is SciPy's Euclidean distance transform.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import distance_transform_edt

from xaipipe import paths
from xaipipe.architectures import configured_architecture
from xaipipe.baselines import chance_rate, majority_rate
from xaipipe.config import train_settings
from xaipipe.data.store import Split, read_split
from xaipipe.device import claim_job_device
from xaipipe.evaluate.removal import load_maps, split_ties
from xaipipe.explain.oracle import REFERENCE_METHODS
from xaipipe.io import atomic_path
from xaipipe.models import build_model, load_model
from xaipipe.seeds import named_seed
from xaipipe.train import predict
from xaipipe.train_stage import background_only, foreground_only

log = logging.getLogger(__name__)

CHANCE = "chance"
MAJORITY = "majority"
MODEL = "model"
CENTER = "center"
"""The ``subject`` of the TorchRay centre-point baseline (TorchRay's method name)."""
STRICT = "strict"
TORCHRAY = "torchray"
POINTING_VARIANTS = (STRICT, TORCHRAY)
"""The ``localisation.pointing`` variants (the schema's enum holds the same names)."""
POINTING_METRICS = {STRICT: "pointing_game", TORCHRAY: "pointing_game_torchray"}
TORCHRAY_RESOLUTION = 224
"""``localisation.pointing_tolerance_224`` is given in pixels at this input size."""
UNTRAINED = "untrained"
"""The ``variant`` of the untrained-model rows (:func:`run_untrained_localisation`)."""
COLUMNS = ["variant", "subject", "metric", "mean", "std", "n", "excluded"]
IMAGE_COLUMNS = ["image_id", "subject", "metric", "value"]


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor, negative: str = "clip") -> torch.Tensor:
    """Per-image share of non-negative attribution mass inside the mask (NaN for maps with
    no mass). ``maps``: N x H x W, ``masks``: N x H x W (1 = foreground)."""
    if negative == "clip":
        mass = maps.float().clamp(min=0)
    elif negative == "abs":
        mass = maps.float().abs()
    else:
        raise ValueError(f"negative must be 'clip' or 'abs', got {negative!r}")
    total = mass.flatten(1).sum(1)
    inside = (mass * (masks > 0)).flatten(1).sum(1)
    return torch.where(total > 0, inside / total, torch.nan)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """Per-image 1.0 if the map's maximum lies in ``masks`` (N x H x W, nonzero = a hit: the
    foreground for the strict game, :func:`hit_region` for TorchRay's); among tied maxima the
    first in the order of ``ties`` (N x H*W permutations, :func:`tie_orders`) counts."""
    n = maps.shape[0]
    shuffled = maps.reshape(n, -1).float().gather(1, ties)
    first_max = shuffled.argmax(dim=1)  # documented: the first maximal value
    hit = masks.reshape(n, -1).gather(1, ties.gather(1, first_max[:, None]))[:, 0]
    return (hit > 0).float()


def pointing_tolerance(tolerance_224: int, resolution: int) -> int:
    """TorchRay's tolerance (15 px in TorchRay and Zhang et al.), given at 224 px, scaled to
    ``resolution``: ``max(1, round(tolerance_224 * resolution / 224))`` with Python's round
    (half to even); 15 -> 2 px at 32 px (2.14), 4 at 64 px, 15 at 224 px. At least 1, the
    tolerance under which only the object itself counts (the acceptance test is strict)."""
    if tolerance_224 < 1 or resolution < 1:
        raise ValueError(f"tolerance_224 and resolution must be >= 1, got {tolerance_224}, "
                         f"{resolution}")
    return max(1, round(tolerance_224 * resolution / TORCHRAY_RESOLUTION))


def hit_region(masks: np.ndarray | torch.Tensor, tolerance: int) -> torch.Tensor:
    """Boolean N x H x W: the pixels at Euclidean distance ``< tolerance`` from a foreground
    pixel of ``masks`` (N x H x W, 1 = foreground), TorchRay's acceptance test ``(v + u) <
    tolerance**2`` seen from the mask's side. ``tolerance = 1`` gives the mask itself (the
    strict game); an image without foreground has an empty region (every point misses).

    SciPy's exact Euclidean distance transform (``distance_transform_edt``) of the background
    gives every pixel's distance to the nearest object pixel; it runs per image (a 3-d call
    would measure across images too).
    """
    if tolerance < 1:
        raise ValueError(f"tolerance must be >= 1 pixel, got {tolerance}")
    masks = np.asarray(masks) > 0
    region = np.zeros(masks.shape, dtype=bool)
    for i, mask in enumerate(masks):
        if mask.any():
            region[i] = distance_transform_edt(~mask) < tolerance
    return torch.from_numpy(region)


def center_maps(n: int, height: int, width: int) -> torch.Tensor:
    """N x H x W maps whose only maximum is the image centre, pixel ``(H // 2, W // 2)``:
    TorchRay's ``center`` method points at ``(w / 2, h / 2)``, the same pixel for even
    sizes (half a pixel off for odd ones)."""
    maps = torch.zeros(n, height, width)
    maps[:, height // 2, width // 2] = 1.0
    return maps


def class_means(values: np.ndarray | torch.Tensor, labels: np.ndarray) -> pd.Series:
    """Mean of the per-image ``values`` (N,) within each class of ``labels`` (N,), one entry
    per class present, indexed by class: TorchRay's ``class_accuracies`` for hit vectors.
    Their mean is the TorchRay pointing-game number (classes without an image are left
    out; TorchRay would count them as accuracy 0)."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    if values.shape != labels.shape:
        raise ValueError(f"values have shape {values.shape}, labels {labels.shape}")
    return pd.Series(values).groupby(labels).mean()


@dataclass(frozen=True)
class Pointing:
    """Which pointing games to score (``localisation.pointing``) and the TorchRay tolerance
    in pixels at the maps' resolution (:func:`pointing_tolerance`)."""

    variants: tuple[str, ...] = (STRICT,)
    tolerance: int = 1


def pointing_settings(config: Mapping) -> Pointing:
    """:class:`Pointing` from ``config['localisation']`` and ``config['resolution']``."""
    local = config["localisation"]
    return Pointing(variants=tuple(local["pointing"]),
                    tolerance=pointing_tolerance(local["pointing_tolerance_224"],
                                                 config["resolution"]))


def _row(variant: str, subject: str, metric: str, values: np.ndarray) -> dict:
    kept = values[~np.isnan(values)]
    return {"variant": variant, "subject": subject, "metric": metric,
            "mean": float(kept.mean()) if kept.size else float("nan"),
            "std": float(kept.std(ddof=1)) if kept.size > 1 else float("nan"),
            "n": int(kept.size), "excluded": int(values.size - kept.size)}


def localisation_rows(variant: str, maps: Mapping[str, np.ndarray], masks: np.ndarray,
                      negative: str, ties: torch.Tensor, *, labels: np.ndarray | None = None,
                      pointing: Pointing = Pointing(),
                      scores: Mapping[tuple[str, str], np.ndarray] | None = None) -> list[dict]:
    """Rows of energy-in-mask and the ``pointing.variants`` pointing games for every method,
    plus the chance level (and the TorchRay game's ``center`` baseline); ``ties``: the
    images' :func:`tie_orders` (pointing-game ties); ``labels``: the images' classes (the
    TorchRay game's class mean); ``scores``: the maps' :func:`image_scores` when the caller
    has them already."""
    mask_t = torch.from_numpy(np.array(masks))
    strict, torchray = STRICT in pointing.variants, TORCHRAY in pointing.variants
    if torchray and labels is None:
        raise ValueError("the TorchRay pointing game needs the images' labels")
    region = hit_region(mask_t, pointing.tolerance) if torchray else None
    rows = []
    if scores is None:
        scores = image_scores(maps, mask_t, negative, ties, strict=strict)
    for method, method_maps in maps.items():
        map_t = torch.as_tensor(np.array(method_maps, dtype=np.float32))
        rows += [_row(variant, method, metric, values)
                 for (subject, metric), values in scores.items() if subject == method]
        if torchray:
            hits = pointing_game(map_t, region, ties)
            rows.append(_class_mean_row(variant, method, hits, labels))
    fg_fraction = mask_t.flatten(1).float().mean(1).numpy()
    chance_metrics = ["energy_in_mask"] + ([POINTING_METRICS[STRICT]] if strict else [])
    rows += [_row(variant, CHANCE, metric, fg_fraction) for metric in chance_metrics]
    if torchray:
        center_hits = pointing_game(center_maps(*mask_t.shape), region, ties)
        rows.append(_class_mean_row(variant, CHANCE, region.flatten(1).float().mean(1), labels))
        rows.append(_class_mean_row(variant, CENTER, center_hits, labels))
    return rows


def image_scores(maps: Mapping[str, np.ndarray], masks: np.ndarray | torch.Tensor, negative: str,
                 ties: torch.Tensor, *, strict: bool = True) -> dict[tuple[str, str], np.ndarray]:
    """(method, metric) -> the per-image values (N,) of energy in mask and, with ``strict``,
    the strict pointing game: what the summary rows average, and what the variant comparisons
    pair over images (NaN = a map without mass, excluded)."""
    mask_t = (masks if isinstance(masks, torch.Tensor)  # a copy: the store's memmap is read-only
              else torch.from_numpy(np.array(masks)))
    scores = {}
    for method, method_maps in maps.items():
        map_t = torch.as_tensor(np.array(method_maps, dtype=np.float32))
        scores[method, "energy_in_mask"] = energy_in_mask(map_t, mask_t, negative).numpy()
        if strict:
            scores[method, POINTING_METRICS[STRICT]] = pointing_game(map_t, mask_t, ties).numpy()
    return scores


def _class_mean_row(variant: str, subject: str, hits: torch.Tensor, labels: np.ndarray) -> dict:
    """A ``pointing_game_torchray`` row: mean and std over classes of the per-class mean of
    ``hits``; ``n`` = classes."""
    per_class = class_means(hits, labels).to_numpy()
    return _row(variant, subject, POINTING_METRICS[TORCHRAY], per_class)


def reliance_correct(model: torch.nn.Module, split, device: torch.device, batch_size: int,
                     bg_only_fill: str = "impute") -> dict[str, np.ndarray]:
    """Per-image correctness (N,) on full, foreground-only and background-only val images
    (:func:`background_only` with ``bg_only_fill``), keyed ``accuracy_full``,
    ``accuracy_fg_only``, ``accuracy_bg_only``."""
    return {metric: predict(model, images, device, batch_size).argmax(1).numpy() == split.labels
            for metric, images in (("accuracy_full", split.images),
                                   ("accuracy_fg_only", foreground_only(split)),
                                   ("accuracy_bg_only", background_only(split, bg_only_fill)))}


def reliance_rows(variant: str, correct: Mapping[str, np.ndarray], split) -> list[dict]:
    """Accuracy (mean of per-image correctness, with its std) of every
    :func:`reliance_correct` entry, each beside the two accuracies that know nothing:
    ``chance`` (1 / classes) and ``majority`` (always the split's most frequent class;
    :mod:`xaipipe.baselines`)."""
    rows = []
    n = len(split)
    baselines = {CHANCE: chance_rate(split.num_classes) if split.num_classes else float("nan"),
                 MAJORITY: majority_rate(split.labels)}
    for metric, hits in correct.items():
        rows.append(_row(variant, MODEL, metric, hits.astype(np.float64)))
        rows += [{"variant": variant, "subject": subject, "metric": metric, "mean": rate,
                  "std": float("nan"), "n": n, "excluded": 0}
                 for subject, rate in baselines.items()]
    return rows


def val_maps(config: Mapping, variant: str, methods: Sequence[str], *, replicate: int
             ) -> tuple[Split, dict[str, np.ndarray]]:
    """The unmodified val split and ``methods``' val maps of one model."""
    split = read_split(paths.variant_split_dir(config, variant, "val"))
    return split, {m: load_maps(paths.attribution_map(config, variant, m, "val",
                                                      replicate=replicate), split)
                   for m in methods}


def method_rows(config: Mapping, variant: str, methods: Sequence[str], *,
                replicate: int) -> list[dict]:
    """:func:`localisation_rows` of ``methods``' val maps of one model (the ``chance`` and
    ``center`` rows included), ties seeded by ``config['seed']``."""
    split, maps = val_maps(config, variant, methods, replicate=replicate)
    ties = split_ties(split, config["seed"])
    return localisation_rows(variant, maps, split.masks, config["localisation"]["negative"], ties,
                             labels=split.labels, pointing=pointing_settings(config))


def image_table(ids: Sequence[str], scores: Mapping[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    """Long per-image table (columns ``image_id, subject, metric, value``) of
    ``(subject, metric) -> values``: the input of the variant comparisons
    (:mod:`xaipipe.report.effects`)."""
    frames = [pd.DataFrame({"image_id": list(ids), "subject": subject, "metric": metric,
                            "value": np.asarray(values, dtype=np.float64)})
              for (subject, metric), values in scores.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=IMAGE_COLUMNS)


def run_localisation(config: Mapping, variant: str, *, replicate: int) -> pd.DataFrame:
    """The ``localisation`` stage of one model (replicate ``replicate`` of ``variant``): write
    ``paths.localisation_table`` and the per-image scores, ``paths.localisation_images``."""
    methods = list(config["explain"]["methods"])
    split, maps = val_maps(config, variant, methods, replicate=replicate)
    ties = split_ties(split, config["seed"])
    pointing, negative = pointing_settings(config), config["localisation"]["negative"]
    scores = image_scores(maps, split.masks, negative, ties, strict=STRICT in pointing.variants)
    rows = localisation_rows(variant, maps, split.masks, negative, ties, labels=split.labels,
                             pointing=pointing, scores=dict(scores))
    with claim_job_device(config) as device:
        model, _ = load_model(paths.model_weights(config, variant, replicate=replicate),
                              map_location=device, config=config)
        correct = reliance_correct(model, split, device, config["localisation"]["batch_size"],
                                   train_settings(config, variant)["bg_only_fill"])
    rows += reliance_rows(variant, correct, split)
    scores.update({(MODEL, metric): hits for metric, hits in correct.items()})
    table = pd.DataFrame(rows, columns=COLUMNS)
    out = paths.localisation_table(config, variant, replicate=replicate)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(paths.localisation_images(config, variant, replicate=replicate)) as tmp:
        image_table(split.ids, scores).to_parquet(tmp, index=False)
    log.info("%s rep%d: localisation of %d methods on %d val images -> %s", variant, replicate,
             len(methods), len(split), out)
    return table


def run_untrained_localisation(config: Mapping) -> pd.DataFrame:
    """The ``localisation_untrained`` stage: energy in mask and pointing game of the maps of
    an *untrained* model of ``model.arch`` (initialised with ``named_seed(config,
    "untrained")``), for every
    ``explain.methods`` method that depends on the model, on the unmodified val images (the
    ``standard`` store's ``val`` split, the same images every variant's ``val`` holds).

    The report reads every variant's localisation against these rows: a randomly initialised
    network's gradients already concentrate on high-contrast objects (an untrained ResNet18
    scored 0.38-0.40 energy in mask on real VOC val images with chance 0.355), so "above
    chance" alone says little. Rows have ``variant = "untrained"``.
    """
    from xaipipe.explain.attribution import attribute_split  # Captum: only this stage needs it

    split = read_split(paths.variant_split_dir(config, "standard", "val"))
    methods = [m for m in config["explain"]["methods"] if m not in REFERENCE_METHODS]
    seed = named_seed(config, UNTRAINED)
    torch.manual_seed(seed)
    arch = configured_architecture(config)
    model = build_model(split.num_classes, arch).eval()
    with claim_job_device(config) as device:
        maps = {m: attribute_split(model, split, m, config["explain"], device=device, seed=seed,
                                   config=config,
                                   desc=f"{m} untrained") for m in methods}
    ties = split_ties(split, config["seed"])
    rows = localisation_rows(UNTRAINED, maps, split.masks, config["localisation"]["negative"], ties,
                             labels=split.labels, pointing=pointing_settings(config))
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(paths.untrained_localisation_table(config)) as tmp:
        table.to_csv(tmp, index=False)
    log.info("untrained %s: localisation of %d methods on %d val images -> %s",
             arch.title, len(methods), len(split), paths.untrained_localisation_table(config))
    return table
