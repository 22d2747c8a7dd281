"""ROAD imputation: the exact sparse solve vs the batched iterative solver, side by side.

Random images at ``--size`` px and one attribution map per image (``random``: uniform noise,
the removed pixels scattered; ``smooth``: Gaussian-blurred noise, the removed pixels in large
blobs as with Grad-CAM), ranked with the seeded tie orders of the pipeline, removed at every
fraction of ``roar.fractions`` in both orders (MoRF and LeRF), then imputed twice: by the exact
solver (``roar.road_solver: exact``, one SciPy LU per image and mask) and by the iterative one
(``iterative``, all masks of all images in batches on ``--device``) to ``roar.road_tolerance``.
Prints images/s (an image through every (order, fraction) point) of each, the speed-up, the
largest deviation between the two (in [0, 1] pixel units) and the load average of the machine::

    .venv/bin/python bench/bench_road.py                     # 224 px, random maps, 1 thread
    .venv/bin/python bench/bench_road.py --maps smooth --images 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xaipipe.config import load_config  # noqa: E402
from xaipipe.evaluate.removal import pixel_count, rank_mask, tie_orders  # noqa: E402
from xaipipe.evaluate.road import ORDERS, batch_linear_imputation  # noqa: E402


def make_maps(kind: str, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``n x size x size`` attribution maps: uniform noise, or noise blurred at size / 10."""
    maps = rng.random((n, size, size))
    if kind == "smooth":
        from scipy.ndimage import gaussian_filter
        maps = np.stack([gaussian_filter(m, size / 10) for m in maps])
    return torch.as_tensor(maps.astype(np.float32))


def removal_masks(maps: torch.Tensor, fractions: list[float], seed: int) -> np.ndarray:
    """``P x N x H x W`` masks, one per (order, fraction) point, as ROAD builds them."""
    n, height, width = maps.shape
    ties = tie_orders([f"bench-{i}" for i in range(n)], height * width, seed)
    return np.stack([rank_mask(maps, pixel_count(f, height, width), most_relevant=order == "morf",
                               ties=ties).numpy()
                     for order in ORDERS for f in fractions])


MAX_DEVIATION = 1e-4
"""Largest |iterative - exact| accepted, in [0, 1] pixel units (the bound of tests/test_road.py)."""


def road_case(maps: str, n: int, size: int, fractions: list[float],
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random ``3 x size x size`` images in [0, 1] and their ``P x n x H x W`` removal
    masks under ``maps`` maps (:func:`make_maps`, :func:`removal_masks`), from a fixed seed, so
    every ROAD benchmark solves the same systems."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, size, size)) / 255.0
    return images, removal_masks(make_maps(maps, n, size, rng), fractions, seed)


def timed(images: np.ndarray, removed: np.ndarray, **kwargs) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = batch_linear_imputation(images, removed, **kwargs)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config.yaml")],
                        help="config files (roar.fractions, roar.road_tolerance, seed)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--images", type=int, default=8, help="images (each at every point)")
    parser.add_argument("--maps", choices=("random", "smooth"), default="random")
    parser.add_argument("--device", default="cpu", help="device of the iterative solver")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 = what a pipeline job gets; the exact solver "
                             "is single-threaded either way)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    fractions = list(config["roar"]["fractions"])
    tolerance = config["roar"]["road_tolerance"]
    images, removed = road_case(args.maps, args.images, args.size, fractions, config["seed"])
    points = removed.shape[0]
    print(f"{args.images} images x {points} points ({', '.join(ORDERS)} at {fractions}), "
          f"{args.size} px, {args.maps} maps, {args.threads} torch thread(s), "
          f"tolerance {tolerance:g}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    iterative, iterative_s = timed(images, removed, solver="iterative", tolerance=tolerance,
                                   device=args.device)
    exact, exact_s = timed(images, removed, solver="exact")
    deviation = float(np.abs(iterative - exact).max())
    for name, seconds in (("exact", exact_s), (f"iterative ({args.device})", iterative_s)):
        print(f"{name:>18}: {seconds:7.2f} s, {args.images / seconds:7.3f} images/s "
              f"({points * args.images / seconds:7.2f} imputations/s)")
    print(f"speed-up: {exact_s / iterative_s:.1f}x; max deviation {deviation:.2e} "
          f"(tolerance met: {deviation < MAX_DEVIATION}); load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
