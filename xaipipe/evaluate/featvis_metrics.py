"""Numbers for the feature visualisations that Nielsen et al. judged by eye (Fig. 4).

The paper argues that the ``black`` and ``mixed`` variants give "more interpretable"
visualisations: recognisable object shapes instead of high-frequency texture. Two measures
turn that judgement into numbers, per variant:

* **Recognisability**: the share of the ``C`` class visualisations (row ``c`` maximises
  class ``c``) that *another* model classifies as their target class, and the mean softmax
  probability it gives the target. Judges: every other variant's model and an independently
  seeded ``standard`` model (:data:`xaipipe.paths.REFERENCE_MODEL`, trained by
  ``workflow_scripts/train_reference.py``). The variant's own model is listed too, as a
  convergence check (its visualisations were optimised for it, so it is not evidence).
* **High-frequency share**: the share of the grey image's spectral energy (``|fft2|^2``,
  mean removed so brightness does not count) at spatial-frequency radius above
  ``hf_cutoff`` x Nyquist (Nyquist = 0.5 cycles/pixel; default cutoff 0.5, i.e. periods
  shorter than 4 pixels). A constant image has share 0 (defined: it has no energy), a pixel
  checkerboard share 1. The image is treated as periodic, as the FFT does. The mean over the
  first (up to 256) val images is given as the natural-image reference
  (``variant = val_images``).

Hand-written: a few lines of ``torch.fft``; no library offers these two scores.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from xaipipe import paths
from xaipipe.data.store import read_split
from xaipipe.device import claim_job_device
from xaipipe.errors import DataError
from xaipipe.explain.featvis import FEATVIS_ARRAY
from xaipipe.io import atomic_path
from xaipipe.models import images_to_float, load_model
from xaipipe.train import predict
from xaipipe.seeds import named_seed
from xaipipe.train_stage import train_model

log = logging.getLogger(__name__)

NYQUIST = 0.5
"""Highest representable spatial frequency, cycles per pixel."""
REFERENCE_IMAGES = "val_images"
REFERENCE_IMAGE_COUNT = 256
COLUMNS = ["variant", "replicate", "judge", "metric", "mean", "std", "n"]


def high_frequency_share(images: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Per-image share of spectral energy beyond ``cutoff * NYQUIST`` of float N x 3 x H x W
    images in [0, 1] (grey = ITU-R 601 luma, torchvision's ``rgb_to_grayscale``)."""
    grey = TF.rgb_to_grayscale(images.float())[:, 0]
    grey = grey - grey.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(grey).abs().square()
    height, width = grey.shape[-2:]
    fy = torch.fft.fftfreq(height, device=grey.device)[:, None]
    fx = torch.fft.fftfreq(width, device=grey.device)[None, :]
    high = (fy.square() + fx.square()).sqrt() > cutoff * NYQUIST
    total = power.sum(dim=(-2, -1))
    share = (power * high).sum(dim=(-2, -1)) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, share, torch.zeros_like(share))


def recognisability(model: nn.Module, visualisations: torch.Tensor,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(recognised, target probability)`` per class visualisation: row ``c`` counts as
    recognised when ``model`` predicts class ``c`` for it."""
    logits = predict(model, visualisations, device)
    if logits.shape[1] != visualisations.shape[0]:
        raise DataError(f"{visualisations.shape[0]} class visualisations but the judging model "
                        f"has {logits.shape[1]} classes; rerun the featvis stage")
    targets = torch.arange(logits.shape[0])
    recognised = (logits.argmax(1) == targets).numpy().astype(np.float64)
    probability = logits.softmax(1)[targets, targets].numpy().astype(np.float64)
    return recognised, probability


def _row(variant: str, replicate: int, judge: str, metric: str, values: np.ndarray) -> dict:
    return {"variant": variant, "replicate": replicate, "judge": judge, "metric": metric,
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
            "n": int(values.size)}


def load_visualisations(config: Mapping, variant: str, replicate: int) -> torch.Tensor:
    """One model's ``featvis.npy`` as float32 C x 3 x H x W; clear error if absent or odd."""
    path = paths.featvis_dir(config, variant, replicate=replicate) / FEATVIS_ARRAY
    if not path.is_file():
        raise DataError(f"feature visualisations {path} do not exist; run the featvis stage for "
                        f"variant {variant} first")
    try:
        array = np.load(path)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); delete it and rerun the featvis stage") from exc
    if array.ndim != 4 or array.shape[1] != 3 or not np.isfinite(array).all():
        raise DataError(f"{path} must hold finite C x 3 x H x W images, got {array.dtype} "
                        f"{array.shape}; rerun the featvis stage")
    return torch.from_numpy(array.astype(np.float32))


def load_judges(config: Mapping, replicate: int, device: torch.device) -> dict[str, nn.Module]:
    """Replicate ``replicate`` of every variant's model plus the reference model, on
    ``device``."""
    reference = paths.model_weights(config, paths.REFERENCE_MODEL, replicate=0)
    if not reference.is_file():
        raise DataError(f"reference model {reference} does not exist; run "
                        "workflow_scripts/train_reference.py first")
    weights = {v: paths.model_weights(config, v, replicate=replicate) for v in config["variants"]}
    weights[paths.REFERENCE_MODEL] = reference
    return {name: load_model(path, map_location=device, config=config)[0]
            for name, path in weights.items()}


def featvis_metric_rows(visualisations: Mapping[str, torch.Tensor], judges: Mapping[str, nn.Module],
                        cutoff: float, device: torch.device, replicate: int) -> list[dict]:
    """Recognisability rows (variant x judge) and the high-frequency row of every variant's
    replicate ``replicate``."""
    rows = []
    for variant, images in visualisations.items():
        for judge, model in judges.items():
            recognised, probability = recognisability(model, images, device)
            rows.append(_row(variant, replicate, judge, "recognised", recognised))
            rows.append(_row(variant, replicate, judge, "target_probability", probability))
        rows.append(_row(variant, replicate, "", "hf_share",
                         high_frequency_share(images, cutoff).numpy()))
    return rows


def run_featvis_metrics(config: Mapping) -> pd.DataFrame:
    """The ``featvis_metrics`` stage: write ``paths.featvis_metrics_table`` for every model.
    Replicate r's visualisations are judged by replicate r of every variant and by the
    reference model."""
    cutoff = config["featvis_metrics"]["hf_cutoff"]
    val = read_split(paths.variant_split_dir(config, config["variants"][0], "val"))
    natural = images_to_float(torch.from_numpy(np.array(val.images[:REFERENCE_IMAGE_COUNT])))
    rows = []
    with claim_job_device(config) as device:
        for replicate in range(config["replicates"]):
            visualisations = {v: load_visualisations(config, v, replicate)
                              for v in config["variants"]}
            judges = load_judges(config, replicate, device)
            rows += featvis_metric_rows(visualisations, judges, cutoff, device, replicate)
    rows.append(_row(REFERENCE_IMAGES, 0, "", "hf_share",
                     high_frequency_share(natural, cutoff).numpy()))
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(paths.featvis_metrics_table(config)) as tmp:
        table.to_csv(tmp, index=False)
    log.info("feature-visualisation metrics of %d variants x %d replicates -> %s",
             len(config["variants"]), config["replicates"], paths.featvis_metrics_table(config))
    return table


def run_train_reference(config: Mapping) -> dict:
    """Train the judge :data:`xaipipe.paths.REFERENCE_MODEL`: exactly like ``standard``
    (its store, its ``train`` settings) but with ``standard``'s seed + 1, so it shares no
    initialisation or batch order with the model whose visualisations it judges. Writes
    ``model.pt``, ``metrics.json``, ``history.csv`` and ``learning_curve.png`` under
    ``paths.model_dir(config, REFERENCE_MODEL, replicate=0)`` (one reference model)."""
    return train_model(config, paths.REFERENCE_MODEL, store_variant="standard",
                       seed=named_seed(config, "standard") + 1, replicate=0)
