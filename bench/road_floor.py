"""How fast could the iterative ROAD solver be on this CPU? A lower bound from its own pass count.

The goal "batched ROAD imputation at >= 20x the exact solve's images/s at 224 px on one CPU
thread" gives every imputation a time budget: ``1 / (20 x exact imputations/s)``. The
multigrid-preconditioned CG of ``xaipipe/evaluate/road_solver.py`` builds a multigrid
hierarchy per (image, mask) and then, per iteration, passes over the fine grid at least
``1 + 4 x 4/3`` times (CG's operator application; the V-cycle's two operator applications, its
restriction and its prolongation, on every level, the coarse levels together a third of the
fine grid). This script measures, on the same masks as ``bench/bench_road.py``:

- the exact solve's imputations/s (SciPy LU, ``roar.road_solver: exact``), hence the budget;
- the iterative solver's iterations per (order, fraction) point and its imputations/s;
- the time of building the hierarchy, as the solver does it;
- the time of one fine-grid pass, twice: the solver's own operator application (eager torch,
  in place) and the fastest form measured, a stencil fused into one loop by ``torch.compile``;

and prints the iterations' lower bound ``iterations x passes x pass time / systems`` for both,
and the floor: that bound at the fused pass time plus the build as measured. A floor at or
above the budget means this solver cannot reach 20x on this machine unless its build gets
cheaper too: vector updates, dot products and the 9-coefficient coarse stencils (slower per
pixel than the fine one) all come on top. Compiling takes 2-20 s the first time::

    .venv/bin/python bench/road_floor.py
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
sys.path.insert(0, str(REPO / "bench"))

from bench_road import road_case  # noqa: E402
from xaipipe.config import load_config  # noqa: E402
from xaipipe.evaluate import road_solver  # noqa: E402
from xaipipe.evaluate.road import linear_imputation  # noqa: E402

GOAL = 20
COARSE_SHARE = 4 / 3
"""Fine grid plus every coarser one (each a quarter of the one above)."""
PASSES_PER_ITERATION = 1 + 4 * COARSE_SHARE


def seconds_per_call(function, repeats: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def fused_operator(padded: torch.Tensor, centre: torch.Tensor, active: torch.Tensor,
                   out: torch.Tensor) -> torch.Tensor:
    """``12 (D - W) x`` of ``road_solver.fine_apply`` on a zero-bordered ``B x C x H+2 x W+2``
    tensor, written into the interior of ``out`` (the fastest of the forms tried)."""
    rows = padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]
    blurred = rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]
    out[..., 1:-1, 1:-1] = (centre * padded[..., 1:-1, 1:-1] - blurred) * active
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config.yaml")],
                        help="config files (roar.fractions, roar.road_tolerance, seed)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--images", type=int, default=8,
                        help="images per solve (the solver's CPU batch is 8 systems)")
    parser.add_argument("--exact-images", type=int, default=2,
                        help="images timed with the exact solve (each at every point)")
    parser.add_argument("--maps", choices=("random", "smooth"), default="random")
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = load_config(args.config)
    tolerance = config["roar"]["road_tolerance"]
    n, size = args.images, args.size
    images, removed = road_case(args.maps, n, size, list(config["roar"]["fractions"]),
                                config["seed"])
    points = removed.shape[0]
    print(f"{args.maps} maps, {size} px, {points} points, 1 torch thread; load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    started = time.perf_counter()
    for point in range(points):
        for i in range(args.exact_images):
            linear_imputation(images[i], removed[point, i])
    exact_rate = points * args.exact_images / (time.perf_counter() - started)

    pixels = torch.as_tensor(images, dtype=road_solver.DTYPE)
    iterations = []
    started = time.perf_counter()
    for point in range(points):
        iterations.append(road_solver.solve(pixels, torch.as_tensor(removed[point]),
                                            tolerance)[1])
    iterative_rate = points * n / (time.perf_counter() - started)

    masks = torch.as_tensor(removed[-1])[:, None]
    build = seconds_per_call(lambda: road_solver.build_levels(masks, 3), repeats=5)
    level = road_solver.build_levels(masks, 3)[0]
    vector = level.grid.pad(pixels) * level.active
    product = level.grid.zeros()
    eager_pass = seconds_per_call(lambda: level.apply(vector, product), repeats=20)
    padded = vector.view(level.grid.shape)
    inner = (..., slice(1, -1), slice(1, -1))
    centre = level.centre.view(level.grid.shape)[inner].contiguous()
    active = level.active.view(level.grid.shape)[inner].contiguous()
    out = torch.zeros_like(padded)
    compiled = torch.compile(fused_operator, dynamic=False, fullgraph=True)
    started = time.perf_counter()
    compiled(padded, centre, active, out)
    compile_s = time.perf_counter() - started
    assert torch.allclose(out.view(-1), product, atol=1e-4), "fused pass differs from the solver's"
    fused_pass = seconds_per_call(lambda: compiled(padded, centre, active, out), repeats=20)

    mean_iterations = float(np.mean(iterations))
    passes = mean_iterations * PASSES_PER_ITERATION
    budget_ms = 1e3 / (GOAL * exact_rate)
    build_ms = build * 1e3 / n
    print(f"exact: {exact_rate:.2f} imputations/s -> {GOAL}x budget {budget_ms:.2f} ms per "
          f"imputation")
    print(f"iterative: {iterative_rate:.2f} imputations/s ({iterative_rate / exact_rate:.1f}x), "
          f"{min(iterations)}-{max(iterations)} iterations per point (mean {mean_iterations:.1f})")
    print(f"hierarchy build (the solver's, at the largest fraction): {build_ms:.2f} ms per "
          f"imputation = {build_ms / budget_ms:.0%} of the budget")
    print(f"iterations: at least {mean_iterations:.1f} x {PASSES_PER_ITERATION:.2f} = "
          f"{passes:.1f} fine-grid passes per imputation")
    for name, seconds in (("eager (the solver's)", eager_pass),
                          (f"fused (torch.compile, {compile_s:.0f} s to compile)", fused_pass)):
        iterations_ms = passes * seconds * 1e3 / n
        print(f"  {name}: {seconds * 1e3:.2f} ms a pass over {n} systems -> "
              f"{iterations_ms:.2f} ms per imputation = {iterations_ms / budget_ms:.0%} of the budget")
    floor_ms = passes * fused_pass * 1e3 / n + build_ms
    print(f"floor (fused passes + the build as measured): {floor_ms:.2f} ms per imputation = "
          f"{floor_ms / budget_ms:.0%} of the budget, at most {1e3 / floor_ms / exact_rate:.1f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
