"""Undesirable pixels: F-TC and F-NTC learned perturbation masks (Kang, Jung & Lee).

"Interpreting Undesirable Pixels for Image Classification on Black-Box Models", section 3:
a low-resolution mask ``M`` in [0, 1]^(d x d) is upsampled bilinearly to ``M' = Inp(M)`` and
blends the image with its Gaussian blur (Eq. 1)::

    Q(X; M', h) = X * M' + h(X) * (1 - M')

Where ``M'`` is low the pixel is blurred away. The mask is learned with Adam so that the
perturbation *helps* the target class ``k``:

* F-TC (Eq. 5):  max_M  f_k(Q) - R_M - R_F-TC,   R_F-TC = gamma * |mean_{i != k} (f'_i(Q) - f'_i(X))|  (Eq. 4)
* F-NTC (Eq. 7): min_M  sum_{i != k} f_i(Q) + R_M + R_F-NTC,   R_F-NTC = gamma * |f'_k(Q) - f'_k(X)|  (Eq. 6)

with ``f`` the softmax probabilities, ``f'`` the logits and the mask regulariser (Eq. 3)::

    R_M = lambda1 * sum_ij ((M_i+1,j - M_ij)^beta + (M_i,j+1 - M_ij)^beta)^(1/beta) + lambda2 * ||1 - M||_1

Undesirable pixels are those where ``1 - M'`` exceeds a threshold (paper 0.6, section 4.4)
and the metric phi (Eq. 8) is the relative improvement of ``f_k`` when they are blurred.
The per-image losses are summed over a batch; since every mask only touches its own image's
loss and Adam is element-wise, this equals optimising each image on its own.

Hand-written because no library implements these objectives; the blur is torchvision's
``gaussian_blur`` and the upsampling ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from xaipipe import paths
from xaipipe.data.store import read_split
from xaipipe.device import claim_job_device
from xaipipe.errors import DataError
from xaipipe.io import atomic_path, write_json
from xaipipe.models import images_to_float, load_model

log = logging.getLogger(__name__)

METHODS = ("ftc", "fntc")
TV_EPS = 1e-12
"""Added inside the 1/beta root of the TV term so its gradient is finite where the mask is
flat (the optimisation starts from a flat mask)."""


# --- Eq. 1: the perturbation -------------------------------------------------------------

def blur(images: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """``h(X) = g_{sigma,s}(X)``, the Gaussian blur of section 3 (torchvision)."""
    return gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def upsample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``M' = Inp(M)``: bilinear interpolation of N x 1 x d x d masks to N x 1 x H x W."""
    return F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False)


def perturb(images: torch.Tensor, blurred: torch.Tensor, mask_up: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``Q = X * M' + h(X) * (1 - M')``."""
    return images * mask_up + blurred * (1.0 - mask_up)


# --- Eq. 3: the mask regulariser R_M -----------------------------------------------------

def tv_norm(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """TV term of Eq. 3 per mask: ``sum_ij (|M_i+1,j - M_ij|^beta + |M_i,j+1 - M_ij|^beta)^(1/beta)``
    over the positions where both neighbours exist ((d-1) x (d-1)), with :data:`TV_EPS`
    inside the root. ``mask``: N x 1 x d x d -> N."""
    dy = (mask[:, :, 1:, :-1] - mask[:, :, :-1, :-1]).abs()
    dx = (mask[:, :, :-1, 1:] - mask[:, :, :-1, :-1]).abs()
    return (dy.pow(beta) + dx.pow(beta) + TV_EPS).pow(1.0 / beta).flatten(1).sum(1)


def l1_area(mask: torch.Tensor) -> torch.Tensor:
    """``||1 - M||_1`` of Eq. 3 per mask (the perturbed area). ``mask``: N x 1 x d x d -> N."""
    return (1.0 - mask).abs().flatten(1).sum(1)


def mask_regulariser(mask: torch.Tensor, lambda1: float, lambda2: float, beta: float,
                     reduction: str = "mean") -> torch.Tensor:
    """``R_M`` of Eq. 3 per mask. ``reduction="sum"`` is Eq. 3 as written; ``"mean"`` divides
    it by the number of mask elements d*d (see ``undesirable.reg_reduction``)."""
    value = lambda1 * tv_norm(mask, beta) + lambda2 * l1_area(mask)
    if reduction == "mean":
        return value / mask[0].numel()
    if reduction != "sum":
        raise ValueError(f"unknown reduction {reduction!r} (mean or sum)")
    return value


# --- Eq. 4 and 6: the logit regularisers -------------------------------------------------

def _others(num_classes: int, targets: torch.Tensor) -> torch.Tensor:
    """N x C boolean: True for every class except the row's target."""
    return torch.arange(num_classes, device=targets.device)[None, :] != targets[:, None]


def ftc_regulariser(logits_q: torch.Tensor, logits_x: torch.Tensor, targets: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """Eq. 4: ``gamma * || 1/(N-1) sum_{i != k} (f'_i(Q) - f'_i(X)) ||_2`` per image; the sum
    is a scalar per image, so its L2 norm is its absolute value."""
    others = _others(logits_q.shape[1], targets)
    mean_change = ((logits_q - logits_x) * others).sum(1) / (logits_q.shape[1] - 1)
    return gamma * mean_change.abs()


def fntc_regulariser(logits_q: torch.Tensor, logits_x: torch.Tensor, targets: torch.Tensor,
                     gamma: float) -> torch.Tensor:
    """Eq. 6: ``gamma * ||f'_k(Q) - f'_k(X)||_2`` per image (absolute change of the target logit)."""
    change = (logits_q - logits_x).gather(1, targets[:, None]).squeeze(1)
    return gamma * change.abs()


def ftc_loss(logits_q: torch.Tensor, logits_x: torch.Tensor, targets: torch.Tensor,
             gamma: float) -> torch.Tensor:
    """Eq. 5 without R_M, as a loss to minimise: ``-f_k(Q) + R_F-TC`` per image."""
    prob_k = logits_q.softmax(1).gather(1, targets[:, None]).squeeze(1)
    return -prob_k + ftc_regulariser(logits_q, logits_x, targets, gamma)


def fntc_loss(logits_q: torch.Tensor, logits_x: torch.Tensor, targets: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """Eq. 7 without R_M: ``sum_{i != k} f_i(Q) + R_F-NTC`` per image."""
    others = _others(logits_q.shape[1], targets)
    return (logits_q.softmax(1) * others).sum(1) + fntc_regulariser(logits_q, logits_x, targets, gamma)


LOSSES = {"ftc": ftc_loss, "fntc": fntc_loss}


# --- optimisation ------------------------------------------------------------------------

def learn_masks(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
                settings: Mapping, progress: bool = True) -> torch.Tensor:
    """Learn one mask per image for ``method`` (``ftc`` or ``fntc``); returns N x 1 x d x d in [0, 1].

    ``images``: float N x 3 x H x W in [0, 1] on the model's device; ``settings``: the
    ``undesirable`` config section. The mask starts at 1 (``Q = X``) and is clamped to
    [0, 1] after every Adam step (the projection of Fong & Vedaldi, the paper's [3]).
    """
    loss_fn = LOSSES[method]
    size = settings["mask_size"]
    mask = torch.ones(images.shape[0], 1, size, size, device=images.device, requires_grad=True)
    optimiser = torch.optim.Adam([mask], lr=settings["lr"])
    blurred = blur(images, settings["blur_kernel"], settings["blur_sigma"])
    with torch.no_grad():
        logits_x = model(images).float()
    for _ in tqdm(range(settings["iterations"]), desc=f"{method} masks", disable=not progress, leave=False):
        optimiser.zero_grad(set_to_none=True)
        logits_q = model(perturb(images, blurred, upsample_mask(mask, images.shape[2:]))).float()
        loss = loss_fn(logits_q, logits_x, targets, settings["gamma"]) + mask_regulariser(
            mask, settings["lambda1"], settings["lambda2"], settings["beta"], settings["reg_reduction"])
        loss.sum().backward()
        optimiser.step()
        with torch.no_grad():
            mask.clamp_(0.0, 1.0)
    return mask.detach()


# --- Eq. 8 and the pixel statistics ------------------------------------------------------

def relative_improvement(prob_before: torch.Tensor, prob_after: torch.Tensor) -> torch.Tensor:
    """The term inside Eq. 8 per image: ``(f_h(Q) - f_h(X)) / (1 - f_h(X)) * 100``."""
    return (prob_after - prob_before) / (1.0 - prob_before) * 100.0


def phi(prob_before: np.ndarray, prob_after: np.ndarray, min_residual: float) -> tuple[float, int]:
    """Eq. 8: the mean relative improvement over images whose residual ``1 - f(X)`` is at
    least ``min_residual`` (the others would divide by ~0). Returns (phi, images used)."""
    prob_before = np.asarray(prob_before, dtype=np.float64)
    prob_after = np.asarray(prob_after, dtype=np.float64)
    used = (1.0 - prob_before) >= min_residual
    if not used.any():
        return float("nan"), 0
    values = relative_improvement(torch.from_numpy(prob_before[used]), torch.from_numpy(prob_after[used]))
    return float(values.mean()), int(used.sum())


def undesirable_pixels(mask: torch.Tensor, size: Sequence[int], threshold: float) -> torch.Tensor:
    """Boolean N x H x W: pixels whose undesirability ``1 - M'`` exceeds ``threshold``
    (section 4.4: "pixels that have magnitude above a threshold 0.6")."""
    return (1.0 - upsample_mask(mask, size))[:, 0] > threshold


@dataclass
class PixelStats:
    """Per image: undesirable pixel count, how many of them lie on the background, and the
    image's background pixel count (the share expected if undesirable pixels were uniform)."""

    undesirable: np.ndarray
    on_background: np.ndarray
    background: np.ndarray
    pixels: int

    @classmethod
    def measure(cls, undesirable: np.ndarray, foreground: np.ndarray) -> "PixelStats":
        background = foreground == 0
        return cls(undesirable=undesirable.sum((1, 2)), on_background=(undesirable & background).sum((1, 2)),
                   background=background.sum((1, 2)), pixels=int(np.prod(undesirable.shape[1:])))

    def summary(self) -> dict:
        """Mean undesirable ratio (Table 2), pooled background share of undesirable pixels,
        and the mean background fraction of the images (chance level of that share)."""
        total = int(self.undesirable.sum())
        return {
            "undesirable_ratio": float(np.mean(self.undesirable / self.pixels)),
            "background_share": float(self.on_background.sum() / total) if total else float("nan"),
            "background_fraction": float(np.mean(self.background / self.pixels)),
            "undesirable_pixels": total,
        }


# --- the stage ---------------------------------------------------------------------------

def choose_images(num_rows: int, num_images: int, seed: int) -> np.ndarray:
    """Sorted seeded subset of ``min(num_images, num_rows)`` row indices, the same for every
    variant (the generator depends on ``seed`` and the stage name only)."""
    rng = np.random.default_rng([seed, zlib.crc32(b"undesirable")])
    return np.sort(rng.choice(num_rows, size=min(num_images, num_rows), replace=False))


@dataclass
class MethodResult:
    masks: np.ndarray          # n x d x d float32
    undesirable: np.ndarray    # n x H x W bool
    prob_before: np.ndarray    # f_k(X)
    prob_after: np.ndarray     # f_k(Q)
    pred_before: np.ndarray
    pred_after: np.ndarray


def explain_images(model: nn.Module, images_u8: np.ndarray, labels: np.ndarray, method: str,
                   settings: Mapping, device: torch.device | str = "cpu", progress: bool = True) -> tuple[MethodResult, np.ndarray]:
    """Learn ``method`` masks for uint8 N x 3 x H x W images in batches; returns the result
    and the target classes (``settings['target_class']``: true label or clean prediction)."""
    device = torch.device(device)
    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    parts: dict[str, list] = {name: [] for name in ("masks", "undesirable", "prob_before", "prob_after",
                                                     "pred_before", "pred_after", "targets")}
    batch_size = settings["batch_size"]
    for start in tqdm(range(0, len(images_u8), batch_size), desc=method, disable=not progress):
        images = images_to_float(torch.from_numpy(np.asarray(images_u8[start:start + batch_size]))).to(device)
        with torch.no_grad():
            probs_x = model(images).float().softmax(1)
        if settings["target_class"] == "predicted":
            targets = probs_x.argmax(1)
        else:
            targets = torch.as_tensor(np.asarray(labels[start:start + batch_size]), device=device)
        mask = learn_masks(model, images, targets, method, settings, progress)
        with torch.no_grad():
            blurred = blur(images, settings["blur_kernel"], settings["blur_sigma"])
            probs_q = model(perturb(images, blurred, upsample_mask(mask, images.shape[2:]))).float().softmax(1)
        parts["masks"].append(mask[:, 0].cpu().numpy())
        parts["undesirable"].append(undesirable_pixels(mask, images.shape[2:], settings["threshold"]).cpu().numpy())
        parts["prob_before"].append(probs_x.gather(1, targets[:, None])[:, 0].cpu().numpy())
        parts["prob_after"].append(probs_q.gather(1, targets[:, None])[:, 0].cpu().numpy())
        parts["pred_before"].append(probs_x.argmax(1).cpu().numpy())
        parts["pred_after"].append(probs_q.argmax(1).cpu().numpy())
        parts["targets"].append(targets.cpu().numpy())
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    targets = joined.pop("targets")
    return MethodResult(**joined), targets


def method_table(result: MethodResult, stats: PixelStats, rows: np.ndarray, ids: Sequence[str],
                 labels: np.ndarray, targets: np.ndarray, method: str) -> pd.DataFrame:
    """Per-image rows of one method (the per-image CSV)."""
    return pd.DataFrame({
        "method": method, "row": rows, "image_id": [ids[r] for r in rows] if ids else rows,
        "label": labels, "target": targets,
        "prob_before": result.prob_before, "prob_after": result.prob_after,
        "relative_improvement": relative_improvement(torch.from_numpy(result.prob_before.astype(np.float64)),
                                                     torch.from_numpy(result.prob_after.astype(np.float64))).numpy(),
        "pred_before": result.pred_before, "pred_after": result.pred_after,
        "undesirable_ratio": stats.undesirable / stats.pixels,
        "undesirable_pixels": stats.undesirable, "undesirable_on_background": stats.on_background,
        "background_fraction": stats.background / stats.pixels,
    })


def method_summary(result: MethodResult, stats: PixelStats, labels: np.ndarray, min_residual: float) -> dict:
    """results.json numbers of one method: phi (Eq. 8), Table 2 ratio, background share, accuracy."""
    phi_value, phi_images = phi(result.prob_before, result.prob_after, min_residual)
    return {
        "phi": phi_value, "phi_images": phi_images,
        "mean_prob_before": float(result.prob_before.mean()), "mean_prob_after": float(result.prob_after.mean()),
        "accuracy_before": float((result.pred_before == labels).mean()),
        "accuracy_after": float((result.pred_after == labels).mean()),
        **stats.summary(),
    }


def examples_figure(images_u8: np.ndarray, undesirability: Mapping[str, np.ndarray],
                    titles: Sequence[str], out_png: str | Path) -> None:
    """Columns = images; first row the image, then one row per method showing ``1 - M'``
    over the image (bright = undesirable)."""
    n = len(images_u8)
    fig = Figure(figsize=(1.6 * n + 0.8, 1.6 * (1 + len(undesirability))), layout="constrained")
    axes = fig.subplots(1 + len(undesirability), n, squeeze=False)
    for col in range(n):
        image = np.transpose(np.asarray(images_u8[col]), (1, 2, 0))
        axes[0, col].imshow(image)
        axes[0, col].set_title(titles[col], fontsize=7)
        for row, (method, maps) in enumerate(undesirability.items(), start=1):
            axes[row, col].imshow(image)
            axes[row, col].imshow(maps[col], cmap="inferno", vmin=0, vmax=1, alpha=0.6)
            if col == 0:
                axes[row, col].set_ylabel(method.upper().replace("FTC", "F-TC").replace("FNTC", "F-NTC"), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def run_undesirable_stage(config: Mapping, variant: str, *, replicate: int,
                          progress: bool = True) -> Path:
    """The ``undesirable`` stage of one model (replicate ``replicate`` of ``variant``):
    F-TC/F-NTC masks on a seeded subset of the variant store's ``val`` split, the same images
    for every model; writes ``paths.undesirable_dir`` (``results.json``, ``per_image.csv``,
    ``masks_<method>.npy``, ``examples.png``)."""
    model, meta = load_model(paths.model_weights(config, variant, replicate=replicate),
                             config=config)
    val = read_split(paths.variant_split_dir(config, variant, "val"))
    if len(val) == 0:
        raise DataError(f"{paths.variant_split_dir(config, variant, 'val')} has no images; rerun the variant stage")
    settings = config["undesirable"]
    rows = choose_images(len(val), settings["num_images"], config["seed"])
    images = np.asarray(val.images[rows])
    labels = np.asarray(val.labels[rows])
    foreground = np.asarray(val.masks[rows])
    summaries, tables, masks, maps = {}, [], {}, {}
    with claim_job_device(config) as device:
        for method in settings["methods"]:
            result, targets = explain_images(model, images, labels, method, settings, device, progress)
            stats = PixelStats.measure(result.undesirable, foreground)
            summaries[method] = method_summary(result, stats, labels, settings["min_residual"])
            tables.append(method_table(result, stats, rows, val.ids, labels, targets, method))
            masks[method] = result.masks
            shown = torch.from_numpy(result.masks[:settings["figure_images"], None])
            maps[method] = (1.0 - upsample_mask(shown, images.shape[2:]))[:, 0].numpy()
            log.info("undesirable %s %s: phi %.2f, ratio %.4f, background share %.3f",
                     variant, method, summaries[method]["phi"], summaries[method]["undesirable_ratio"],
                     summaries[method]["background_share"])
    out = paths.undesirable_dir(config, variant, replicate=replicate)
    class_names = list(meta.get("class_names") or val.class_names)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "results.json", {
            "variant": variant, "replicate": replicate, "num_images": len(rows),
            "methods": summaries,
            "settings": dict(settings), "seed": config["seed"],
        })
        with atomic_path(tmp / "per_image.csv") as csv_tmp:
            pd.concat(tables, ignore_index=True).to_csv(csv_tmp, index=False)
        for method, array in masks.items():
            np.save(tmp / f"masks_{method}.npy", array.astype(np.float16))
        shown_rows = range(min(settings["figure_images"], len(rows)))
        titles = [class_names[labels[i]] if class_names else str(labels[i]) for i in shown_rows]
        examples_figure(images[:len(titles)], maps, titles, tmp / "examples.png")
    return out
