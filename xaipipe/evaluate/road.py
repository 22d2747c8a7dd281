"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML), evaluated without retraining.

For every fraction and in both orders -- MoRF (most relevant first removed) and LeRF (least
relevant first removed) -- the ranked pixels of each validation image are removed and imputed
by ROAD's *noisy linear imputation* (their §4.2, reference code ``NoisyLinearImputer``):
every removed pixel equals the weighted mean of its 8 neighbours inside the image, weights
1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours, renormalised over the
neighbours that exist at the border. Removed neighbours are unknowns too, so all removed
pixels of an image are solved together as one sparse linear system, then Gaussian noise of
std ``roar.road_noise_std`` (pixel units in [0, 1]) is added to the imputed values. The
trained variant model is then evaluated on the imputed images of ``roar.eval_split`` (default
``val_matched``: the val images drawn like the model's training images, so only the removal
differs from what the model was trained on; ROAD's point is to remove without a
distribution shift).

Two solvers (``roar.road_solver``): ``exact`` is the paper's -- a sparse direct solve per
image (:func:`linear_imputation`, ``scipy.sparse`` LU, one factorisation for the three
channels); ``iterative`` (default) solves the same systems for every image and every
(order, fraction) of a batch at once on the job's device, by multigrid-preconditioned
conjugate gradients to ``roar.road_tolerance`` (:mod:`xaipipe.evaluate.road_solver`): a
numerically equivalent speed choice, within 1e-4 of the exact values (tests/test_road.py).

The system is hand-built here (no maintained library ships ROAD's imputer); ranking reuses
:mod:`xaipipe.evaluate.removal`, so ROAR and ROAD remove exactly the same pixels.
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from tqdm import tqdm

from xaipipe import paths
from xaipipe.config import train_settings
from xaipipe.data.store import Split, read_split
from xaipipe.errors import ConfigError, DataError
from xaipipe.evaluate import road_solver
from xaipipe.evaluate.removal import load_maps, pixel_count, rank_mask, split_ids, tie_orders
from xaipipe.io import bits
from xaipipe.models import load_model
from xaipipe.train import predict

NEIGHBOUR_WEIGHTS = (
    ((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12),
)
"""(dy, dx) offset and weight of each neighbour (Rong et al. 2022, §4.2)."""

ORDERS = ("morf", "lerf")

ROAD_SOLVERS = ("iterative", "exact")
"""``roar.road_solver`` values: the batched iterative solve (default) or the paper's exact one."""

DEFAULT_TOLERANCE = 1e-6
"""``roar.road_tolerance``: largest distance of an imputed value from the weighted mean of its
neighbours, in the units of the image values ([0, 1] for ROAD)."""

SYSTEMS_PER_SOLVE = {"cpu": 8}
"""Systems (image x mask) solved together by the iterative solver, per device type; others
(GPUs) take ``SYSTEMS_PER_SOLVE_ACCELERATOR``. Small on CPU, where a batch that fits the cache
is faster than a wide one; about 10 MB of device memory per system at 224 px."""

SYSTEMS_PER_SOLVE_ACCELERATOR = 256


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Noise-free ROAD imputation of one ``C x H x W`` float image.

    Solves, for every removed pixel ``i`` with in-image neighbours ``N(i)``::

        (sum_{j in N(i)} w_j) x_i - sum_{j in N(i), removed} w_j x_j = sum_{j in N(i), kept} w_j v_j

    i.e. ``x_i`` is the weighted mean of its neighbours. Returns a copy with the removed
    pixels replaced by the solution.
    """
    channels, height, width = image.shape
    flat_removed = np.asarray(removed, dtype=bool).reshape(-1)
    unknown = np.flatnonzero(flat_removed)
    result = image.reshape(channels, -1).astype(np.float64, copy=True)
    if unknown.size == 0:
        return result.reshape(image.shape)
    if unknown.size == flat_removed.size:
        raise ConfigError(f"ROAD cannot impute a {height}x{width} image with every pixel removed; "
                          "lower the largest roar.fractions or raise resolution")
    variable = np.full(flat_removed.size, -1, dtype=np.int64)
    variable[unknown] = np.arange(unknown.size)
    ys, xs = np.divmod(unknown, width)
    diagonal = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, channels))
    rows, cols, vals = [], [], []
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        diagonal[inside] += weight
        eq = np.flatnonzero(inside)
        neighbour = ny[inside] * width + nx[inside]
        is_unknown = flat_removed[neighbour]
        rows.append(eq[is_unknown])
        cols.append(variable[neighbour[is_unknown]])
        vals.append(np.full(int(is_unknown.sum()), -weight))
        rhs[eq[~is_unknown]] += weight * result[:, neighbour[~is_unknown]].T
    rows.append(np.arange(unknown.size))
    cols.append(np.arange(unknown.size))
    vals.append(diagonal)
    system = scipy.sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(unknown.size, unknown.size))
    solution = scipy.sparse.linalg.splu(system).solve(rhs)
    result[:, unknown] = solution.T
    return result.reshape(image.shape)


def batch_linear_imputation(images: np.ndarray, removed: np.ndarray, *,
                            solver: str = "iterative", tolerance: float = DEFAULT_TOLERANCE,
                            device: torch.device | str = "cpu") -> np.ndarray:
    """Noise-free ROAD imputation of ``N x C x H x W`` float ``images`` under boolean masks
    ``removed`` of shape ``N x H x W``, or ``P x N x H x W`` (P masks of every image, e.g.
    every (order, fraction) point); float32, shape ``removed.shape[:-2] + (C, H, W)``.

    ``solver="exact"`` runs :func:`linear_imputation` mask by mask; ``"iterative"`` solves
    :data:`SYSTEMS_PER_SOLVE` (image, mask) systems at a time on ``device`` until every imputed
    value is within ``tolerance`` (in the images' units) of the weighted mean of its
    neighbours (:func:`xaipipe.evaluate.road_solver.solve`; raises
    :class:`~xaipipe.evaluate.road_solver.SolverError` if it does not get there).
    """
    if solver not in ROAD_SOLVERS:
        raise ConfigError(f"roar.road_solver is {solver!r}; use one of {', '.join(ROAD_SOLVERS)}")
    n, channels, height, width = np.shape(images)
    removed = np.asarray(removed, dtype=bool)
    masks = removed.reshape(-1, height, width)
    if removed.ndim < 3 or removed.shape[-3:] != (n, height, width):
        raise ValueError(f"masks of shape {removed.shape} do not fit {n} images of "
                         f"{height}x{width}")
    if masks.reshape(len(masks), -1).all(axis=1).any():
        raise ConfigError(f"ROAD cannot impute a {height}x{width} image with every pixel removed; "
                          "lower the largest roar.fractions or raise resolution")
    out = np.empty((len(masks), channels, height, width), dtype=np.float32)
    if solver == "exact":
        for s, mask in enumerate(masks):
            out[s] = linear_imputation(np.asarray(images[s % n]), mask)
        return out.reshape(*removed.shape[:-2], channels, height, width)
    device = torch.device(device)
    pixels = torch.as_tensor(np.asarray(images), dtype=road_solver.DTYPE, device=device)
    step = SYSTEMS_PER_SOLVE.get(device.type, SYSTEMS_PER_SOLVE_ACCELERATOR)
    for start in range(0, len(masks), step):
        systems = torch.arange(start, min(start + step, len(masks)), device=device)
        solved, _ = road_solver.solve(pixels[systems % n],
                                      torch.as_tensor(masks[start:start + step], device=device),
                                      tolerance)
        out[start:start + step] = solved.cpu().numpy()
    return out.reshape(*removed.shape[:-2], channels, height, width)


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise_std: float,
                            rng: np.random.Generator) -> np.ndarray:
    """ROAD's imputer: :func:`linear_imputation` plus N(0, noise_std^2) on the removed pixels
    (no clipping, as in the reference code)."""
    imputed = linear_imputation(image, removed)
    return add_noise(imputed[None], np.asarray(removed)[None], noise_std, rng)[0]


def add_noise(imputed: np.ndarray, removed: np.ndarray, noise_std: float,
              rng: np.random.Generator) -> np.ndarray:
    """Add N(0, noise_std^2) to the ``removed`` pixels of ``N x C x H x W`` ``imputed`` in
    place, drawn in the order of :func:`noisy_linear_imputation` image by image (image, then
    channel, then pixel), so a batch draws exactly what the per-image loop drew."""
    mask = np.broadcast_to(np.asarray(removed, dtype=bool)[:, None], imputed.shape)
    imputed[mask] += rng.normal(0.0, noise_std, size=int(mask.sum()))
    return imputed


def road_curves(model: torch.nn.Module, split: Split, maps: np.ndarray,
                fractions: list[float], noise_std: float, seed: int,
                device: torch.device, batch_size: int = 64, desc: str = "road",
                solver: str = "iterative", tolerance: float = DEFAULT_TOLERANCE) -> list[dict]:
    """Accuracy of ``model`` on ``split`` after ROAD removal + imputation, one row per
    (order, fraction): ``{"order", "fraction", "pixels_removed", "accuracy", "correct"}``,
    ``correct`` being the per-image hits in store row order (:func:`xaipipe.io.bits`), which
    the variant comparisons pair over images.

    Works through ``batch_size`` images at a time, imputing all (order, fraction) points of
    the batch in one :func:`batch_linear_imputation` call. Noise comes from a generator
    seeded by ``(seed, order index, fraction index)`` and drawn image after image, so every
    method sees the same noise stream, whatever the batch size; ranking ties are broken by
    :func:`~xaipipe.evaluate.removal.tie_orders` with ``seed``, as in ROAR (computed per
    batch, so memory stays bounded).
    """
    model = model.to(device)
    labels = np.asarray(split.labels)
    ids = split_ids(split)
    n, _, height, width = split.images.shape
    points = [(o, f) for o in range(len(ORDERS)) for f in range(len(fractions))]
    counts = [pixel_count(fractions[f], height, width) for _, f in points]
    rngs = [np.random.default_rng([seed, o, f]) for o, f in points]
    correct = [np.zeros(n, dtype=bool) for _ in points]
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch"):
        stop = min(start + batch_size, n)
        scores = torch.as_tensor(np.array(maps[start:stop], dtype=np.float32), device=device)
        ties = tie_orders(ids[start:stop], height * width, seed, device)
        removed = np.stack([
            rank_mask(scores, count, most_relevant=ORDERS[o] == "morf", ties=ties).cpu().numpy()
            for (o, _), count in zip(points, counts)])
        images = np.asarray(split.images[start:stop], dtype=np.float64) / 255.0
        imputed = batch_linear_imputation(images, removed, solver=solver, tolerance=tolerance,
                                          device=device)
        for k, rng in enumerate(rngs):
            batch = add_noise(imputed[k], removed[k], noise_std, rng)
            preds = predict(model, batch, device, batch_size).argmax(1).numpy()
            correct[k][start:stop] = preds == labels[start:stop]
    return [{"order": ORDERS[o], "fraction": fractions[f], "pixels_removed": count,
             "accuracy": float(hits.mean()), "correct": bits(hits)}
            for (o, f), count, hits in zip(points, counts, correct)]


def run_road(config: Mapping, variant: str, method: str, device: torch.device, *,
             replicate: int) -> dict:
    """The ``road`` stage's numbers for one (variant, method, replicate) on
    ``roar.eval_split``: that replicate's model and maps."""
    started = time.perf_counter()
    roar_config = config["roar"]
    eval_split = roar_config["eval_split"]
    directory = paths.variant_split_dir(config, variant, eval_split)
    split = read_split(directory)
    if len(split) == 0:
        raise DataError(f"{directory} has no images; ROAD needs a non-empty {eval_split} split")
    maps = load_maps(paths.attribution_map(config, variant, method, eval_split,
                                           replicate=replicate), split)
    model, _ = load_model(paths.model_weights(config, variant, replicate=replicate),
                          map_location=device, config=config)
    rows = road_curves(model, split, maps, list(roar_config["fractions"]),
                       roar_config["road_noise_std"], config["seed"], device,
                       batch_size=train_settings(config, variant)["batch_size"],
                       desc=f"road {variant}/rep{replicate}/{method}",
                       solver=roar_config["road_solver"],
                       tolerance=roar_config["road_tolerance"])
    return {"variant": variant, "method": method, "replicate": replicate, "split": eval_split,
            "n_images": len(split),
            "noise_std": roar_config["road_noise_std"], "solver": roar_config["road_solver"],
            "tolerance": roar_config["road_tolerance"], "curves": rows,
            "seconds": time.perf_counter() - started}
