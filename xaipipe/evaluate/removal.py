"""Pixel ranking and removal for ROAR / KAR (Hooker et al. 2019) and ROAD (Rong et al. 2022).

Hooker et al. (summarised in ``papers/roar-kar-evaluation-survey.txt`` §4.4, steps 1-2) rank
the input features of every image by its attribution map and replace a fraction of them by the
dataset mean, in the training *and* the test images. Choices made here (see ``docs/roar.md``):

* **The unit is a pixel, not a channel value.** Attribution maps are N x H x W; a removed
  pixel has all three channels replaced together. (The reference implementation ranked the
  three channel values of a pixel separately, so a half-removed pixel still leaks its colour.)
* **Ties** are broken by a seeded random order per image (:func:`tie_orders`), the same for
  every attribution method: flat regions are normal (IG from a black baseline is exactly 0
  on a black background, Grad-CAM is ReLU-cut, c-MWP clamped at 0), and a raster-order
  tie-break would turn "remove the top f" into "remove whole top rows" there. The order is
  the sort key ``(-score, position of the pixel in the image's permutation)``.
* **Counts**: ``round(fraction * H * W)`` pixels per image (Python's round, half to even).
* **KAR's fraction** (``roar.kar_fraction``): ``removed`` (default) follows the survey's
  text -- ROAR: "0.1, 0.3, 0.5, 0.7 or 0.9 % of the most important pixels are identified and
  replaced"; KAR: "Instead of removing the most important pixels, the least important pixels
  are identified" -- so KAR at ``f`` replaces the ``f`` least important pixels (as ROAD's
  LeRF does) and ROAR and KAR at ``f`` replace the same number of pixels. ``kept`` is the
  reference code's convention (KAR at ``f`` keeps the top ``f``). For a fraction list
  symmetric about 0.5 (the paper's 0.1 ... 0.9) both give the same runs under other labels.
* **Fill value**: the per-channel mean of the variant's *training* split, rounded to the
  nearest uint8 level because the tensor store (and the retraining) work on uint8 images.

Everything is vectorised over the whole split on the device (one gather and one stable sort
per chunk of images on ``N x (H*W)``), not looped per image.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from xaipipe.data.store import Split
from xaipipe.errors import DataError
from xaipipe.seeds import id_seed

CHUNK_IMAGES = 256
"""Images per vectorised sort; bounds device memory at 224 px (256 x 50176 x 8 bytes)."""

TIE_STREAM = zlib.crc32(b"ties")
"""The :func:`xaipipe.seeds.id_seed` stream of the tie-breaking permutations."""


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


def tie_orders(ids: Sequence[str], pixels: int, seed: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``N x pixels`` int64: per image a uniformly random permutation of its flat pixel
    indices, seeded by ``(seed, image id)`` only, so every attribution method, every fraction
    and every metric (ROAR/KAR, ROAD, the SCG/CCG top-rho mask, the pointing game) breaks the
    ties of one image the same way, whatever the row order or batching."""
    if not len(ids):
        return torch.zeros(0, pixels, dtype=torch.int64, device=device)
    orders = np.stack([np.random.default_rng(id_seed(seed, TIE_STREAM, str(i))).permutation(pixels)
                       for i in ids])
    return torch.as_tensor(orders, device=device)


def split_ids(split: Split) -> list[str]:
    """The image ids of ``split``'s rows, which seed its :func:`tie_orders`."""
    ids = split.ids
    if len(ids) != len(split):
        raise DataError(f"the tensor store split has {len(ids)} ids for {len(split)} images; "
                        "rerun the variant stage (ties are seeded by image id)")
    return ids


def split_ties(split: Split, seed: int) -> torch.Tensor:
    """:func:`tie_orders` of every row of ``split`` (one permutation of its pixels per image)."""
    return tie_orders(split_ids(split), int(np.prod(split.images.shape[2:])), seed)


def rank_order(maps: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """``N x (H*W)`` flat pixel indices of each map from most to least relevant: descending
    score, equal scores in the order of ``ties`` (:func:`tie_orders`)."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1).float()
    if ties.shape != flat.shape:
        raise ValueError(f"ties have shape {tuple(ties.shape)}, maps {tuple(flat.shape)}")
    shuffled = flat.gather(1, ties)
    order = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    return ties.gather(1, order)


def rank_mask(maps: torch.Tensor, count: int, most_relevant: bool,
              ties: torch.Tensor) -> torch.Tensor:
    """Boolean ``N x H x W`` mask marking ``count`` pixels per image.

    ``most_relevant=True`` marks the ``count`` highest-scoring pixels (ROAR, ROAD's MoRF),
    ``False`` the ``count`` lowest-scoring ones (KAR removes them, ROAD's LeRF). Ties follow
    :func:`rank_order` in both cases, so LeRF's set is exactly the complement of the top
    ``H*W - count``.
    """
    n, height, width = maps.shape
    pixels = height * width
    if not 0 <= count <= pixels:
        raise ValueError(f"count {count} outside [0, {pixels}]")
    order = rank_order(maps, ties)
    chosen = order[:, :count] if most_relevant else order[:, pixels - count:]
    mask = torch.zeros(n, pixels, dtype=torch.bool, device=maps.device)
    mask.scatter_(1, chosen, True)
    return mask.view(n, height, width)


KAR_FRACTIONS = ("removed", "kept")


def removal_count(kind: str, fraction: float, height: int, width: int,
                  kar_fraction: str = "removed") -> tuple[int, bool]:
    """``(pixels removed per image, removed from the top?)`` for ``kind`` ``roar`` or ``kar``.

    ROAR removes the top ``round(f*H*W)`` pixels. KAR removes the bottom ``round(f*H*W)``
    (``kar_fraction="removed"``), or keeps exactly that many top pixels and removes the other
    ``H*W - round(f*H*W)`` (``"kept"``).
    """
    count = pixel_count(fraction, height, width)
    if kind == "roar":
        return count, True
    if kind != "kar":
        raise ValueError(f"kind must be 'roar' or 'kar', got {kind!r}")
    if kar_fraction == "removed":
        return count, False
    if kar_fraction == "kept":
        return height * width - count, False
    raise ValueError(f"kar_fraction must be one of {KAR_FRACTIONS}, got {kar_fraction!r}")


def remove_pixels(split: Split, maps: np.ndarray, kind: str, fraction: float,
                  fill: np.ndarray, seed: int, device: torch.device | str = "cpu",
                  kar_fraction: str = "removed") -> Split:
    """A copy of ``split`` whose ROAR/KAR-removed pixels (:func:`removal_count`) are set to
    ``fill`` (3 uint8 values), ties broken by :func:`tie_orders` with ``seed``.

    Masks, labels and meta are carried over; ``meta['removal']`` records what was done.
    """
    n, _, height, width = split.images.shape
    count, from_top = removal_count(kind, fraction, height, width, kar_fraction)
    fill_t = torch.as_tensor(np.asarray(fill, dtype=np.uint8), device=device).view(1, 3, 1, 1)
    ids = split_ids(split)
    out = np.empty_like(split.images)
    for start in range(0, n, CHUNK_IMAGES):
        stop = min(start + CHUNK_IMAGES, n)
        scores = torch.as_tensor(np.array(maps[start:stop], dtype=np.float32), device=device)
        ties = tie_orders(ids[start:stop], height * width, seed, device)
        mask = rank_mask(scores, count, most_relevant=from_top, ties=ties)
        images = torch.as_tensor(np.array(split.images[start:stop]), device=device)
        out[start:stop] = torch.where(mask[:, None], fill_t, images).cpu().numpy()
    meta = dict(split.meta)
    meta["removal"] = {"kind": kind, "fraction": fraction, "pixels_removed": count,
                       "fill": [int(v) for v in fill], "tie_seed": seed}
    return Split(images=out, masks=np.asarray(split.masks), labels=np.asarray(split.labels),
                 meta=meta)
