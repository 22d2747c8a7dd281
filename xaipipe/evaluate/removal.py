"""Pixel ranking and removal for ROAR / KAR (Hooker et al. 2019) and ROAD (Rong et al. 2022).

Hooker et al. (summarised in ``papers/roar-kar-evaluation-survey.txt`` §4.4, steps 1-2) rank
the input features of every image by its attribution map and replace a fraction of them by the
dataset mean, in the training *and* the test images. Choices made here (see ``docs/roar.md``):

* **The unit is a pixel, not a channel value.** Attribution maps are N x H x W; a removed
  pixel has all three channels replaced together. (The reference implementation ranked the
  three channel values of a pixel separately, so a half-removed pixel still leaks its colour.)
* **Ties** are broken deterministically: a stable sort on descending score keeps equal scores
  in ascending flat pixel index (row-major), i.e. the order is the sort key
  ``(-score, pixel_index)``.
* **Counts**: ``round(fraction * H * W)`` pixels per image (Python's round, half to even).
* **Fill value**: the per-channel mean of the variant's *training* split, rounded to the
  nearest uint8 level because the tensor store (and the retraining) work on uint8 images.

Everything is vectorised over the whole split on the device (one stable sort per chunk of
images on ``N x (H*W)``), not looped per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xaipipe.data.store import Split
from xaipipe.errors import DataError

CHUNK_IMAGES = 256
"""Images per vectorised sort; bounds device memory at 224 px (256 x 50176 x 8 bytes)."""


def pixel_count(fraction: float, height: int, width: int) -> int:
    """Number of pixels a ``fraction`` of an ``height x width`` image stands for."""
    return int(round(fraction * height * width))


def load_maps(path: str | Path, split: Split) -> np.ndarray:
    """Read an attribution map file and check it matches ``split`` (N x H x W, finite).

    Raises :class:`DataError` naming the file and the stage that writes it.
    """
    path = Path(path)
    n, _, height, width = split.images.shape
    if not path.is_file():
        raise DataError(f"attribution maps {path} do not exist; run the attribute stage for this "
                        "variant and method first (explain.splits must include this split)")
    try:
        maps = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"attribution maps {path} are unreadable ({exc}); delete the file and "
                        "rerun the attribute stage") from exc
    if maps.shape != (n, height, width):
        raise DataError(f"attribution maps {path} have shape {maps.shape} but the tensor store has "
                        f"{n} images of {height}x{width}; rerun the attribute stage")
    if not np.isfinite(maps).all():
        raise DataError(f"attribution maps {path} contain NaN or infinite values; rerun the "
                        "attribute stage")
    return maps


def channel_mean(images: np.ndarray) -> np.ndarray:
    """Per-channel mean (float64, uint8 scale) of an ``N x 3 x H x W`` uint8 array."""
    return images.mean(axis=(0, 2, 3), dtype=np.float64)


def fill_value(images: np.ndarray) -> np.ndarray:
    """The removal fill: the per-channel mean rounded to uint8 (see module docstring)."""
    return np.clip(np.rint(channel_mean(images)), 0, 255).astype(np.uint8)


def rank_mask(maps: torch.Tensor, count: int, most_relevant: bool) -> torch.Tensor:
    """Boolean ``N x H x W`` mask marking ``count`` pixels per image.

    ``most_relevant=True`` marks the ``count`` highest-scoring pixels (ROAR, ROAD's MoRF),
    ``False`` the ``count`` lowest-scoring ones (KAR removes them, ROAD's LeRF). Ties follow
    the order ``(-score, pixel_index)`` in both cases, so LeRF's set is exactly the complement
    of the top ``H*W - count``.
    """
    n, height, width = maps.shape
    pixels = height * width
    if not 0 <= count <= pixels:
        raise ValueError(f"count {count} outside [0, {pixels}]")
    flat = maps.reshape(n, pixels).float()
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    chosen = order[:, :count] if most_relevant else order[:, pixels - count:]
    mask = torch.zeros(n, pixels, dtype=torch.bool, device=maps.device)
    mask.scatter_(1, chosen, True)
    return mask.view(n, height, width)


def removal_count(kind: str, fraction: float, height: int, width: int) -> tuple[int, bool]:
    """``(pixels removed per image, removed from the top?)`` for ``kind`` ``roar`` or ``kar``.

    ROAR removes the top ``round(f*H*W)`` pixels; KAR keeps exactly that many top pixels and
    removes the other ``H*W - round(f*H*W)``.
    """
    keep_or_remove = pixel_count(fraction, height, width)
    if kind == "roar":
        return keep_or_remove, True
    if kind == "kar":
        return height * width - keep_or_remove, False
    raise ValueError(f"kind must be 'roar' or 'kar', got {kind!r}")


def remove_pixels(split: Split, maps: np.ndarray, kind: str, fraction: float,
                  fill: np.ndarray, device: torch.device | str = "cpu") -> Split:
    """A copy of ``split`` whose ROAR/KAR-removed pixels are set to ``fill`` (3 uint8 values).

    Masks, labels and meta are carried over; ``meta['removal']`` records what was done.
    """
    n, _, height, width = split.images.shape
    count, from_top = removal_count(kind, fraction, height, width)
    fill_t = torch.as_tensor(np.asarray(fill, dtype=np.uint8), device=device).view(1, 3, 1, 1)
    out = np.empty_like(split.images)
    for start in range(0, n, CHUNK_IMAGES):
        stop = min(start + CHUNK_IMAGES, n)
        scores = torch.as_tensor(np.asarray(maps[start:stop], dtype=np.float32), device=device)
        mask = rank_mask(scores, count, most_relevant=from_top)
        images = torch.as_tensor(np.array(split.images[start:stop]), device=device)
        out[start:stop] = torch.where(mask[:, None], fill_t, images).cpu().numpy()
    meta = dict(split.meta)
    meta["removal"] = {"kind": kind, "fraction": fraction, "pixels_removed": count,
                       "fill": [int(v) for v in fill]}
    return Split(images=out, masks=np.asarray(split.masks), labels=np.asarray(split.labels),
                 meta=meta)
