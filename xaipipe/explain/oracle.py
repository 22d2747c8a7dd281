"""Oracle attribution maps from the ground-truth segmentation masks: the known-good and the
known-bad explanation every metric is validated with (``docs/metrics.md``, "Metric
validation").

* ``oracle_object`` -- 1 on the object (mask = 1, outlines included), 0 on the background:
  the map of a model that looks only at the object.
* ``oracle_background`` -- its complement: the map of a model that looks only at the
  background.

Both get seeded tie noise, ``TIE_NOISE * U(0, 1)`` per pixel, drawn from a generator seeded
by ``(seed, image id)``: small enough that every object pixel of ``oracle_object`` still
ranks above every background pixel and its energy in the mask stays ~1, large enough that
hardly any two pixels tie (the few float32 collisions are broken by the metrics' seeded tie
order), so the order within the object (and within the background) is random rather than
raster order.

No model is involved: a metric must rank ``oracle_object`` above ``random`` above
``oracle_background`` (in its own direction) on a model for which the object is the only
cue, or the metric is broken.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from xaipipe.seeds import id_seed

ORACLE_METHODS = ("oracle_object", "oracle_background")
REFERENCE_METHODS = ("random", *ORACLE_METHODS)
"""Reference maps, not explanations of the model: left out of every "mean over methods",
verdict and ranking of attribution methods."""
TIE_NOISE = 1e-3
"""Amplitude of the uniform tie noise; well below the 0/1 gap between object and background."""
ORACLE_STREAM = zlib.crc32(b"oracle")


def object_map(model, images, targets, *, seed, masks, ids, **_):
    """``oracle_object`` with the registry's method signature (:mod:`xaipipe.registry`)."""
    return _as_method(masks, ids, "oracle_object", seed, images.device)


def background_map(model, images, targets, *, seed, masks, ids, **_):
    """``oracle_background`` with the registry's method signature."""
    return _as_method(masks, ids, "oracle_background", seed, images.device)


def _as_method(masks, ids, method: str, seed: int, device):
    import torch

    return torch.from_numpy(oracle_maps(masks.cpu().numpy(), ids, method, seed)).to(device)


def oracle_maps(masks: np.ndarray, ids: Sequence[str], method: str, seed: int) -> np.ndarray:
    """float32 N x H x W oracle maps of ``method`` for uint8 N x H x W masks (1 = object)."""
    if method not in ORACLE_METHODS:
        raise ValueError(f"oracle method must be one of {ORACLE_METHODS}, got {method!r}")
    masks = np.asarray(masks)
    if len(ids) != len(masks):
        raise ValueError(f"{len(ids)} ids for {len(masks)} masks")
    target = (masks > 0) if method == "oracle_object" else (masks == 0)
    out = target.astype(np.float32)
    for i, image_id in enumerate(ids):
        rng = np.random.default_rng(id_seed(seed, ORACLE_STREAM, str(image_id)))
        out[i] += TIE_NOISE * rng.random(masks.shape[1:], dtype=np.float32)
    return out
