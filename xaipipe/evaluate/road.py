"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML), evaluated without retraining.

For every fraction and in both orders -- MoRF (most relevant first removed) and LeRF (least
relevant first removed) -- the ranked pixels of each validation image are removed and imputed
by ROAD's *noisy linear imputation* (their §4.2, reference code ``NoisyLinearImputer``):
every removed pixel equals the weighted mean of its 8 neighbours inside the image, weights
1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours, renormalised over the
neighbours that exist at the border. Removed neighbours are unknowns too, so all removed
pixels of an image are solved together as one sparse linear system (``scipy.sparse``; one
factorisation for the three channels), then Gaussian noise of std ``roar.road_noise_std``
(pixel units in [0, 1]) is added to the imputed values. The trained variant model is then
evaluated on the imputed images of ``roar.eval_split`` (default ``val_matched``: the val
images drawn like the model's training images, so only the removal differs from what the
model was trained on; ROAD's point is to remove without a distribution shift).

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
from xaipipe.evaluate.removal import load_maps, pixel_count, rank_mask, split_ties
from xaipipe.models import load_model
from xaipipe.train import predict

NEIGHBOUR_WEIGHTS = (
    ((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12),
)
"""(dy, dx) offset and weight of each neighbour (Rong et al. 2022, §4.2)."""

ORDERS = ("morf", "lerf")


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


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise_std: float,
                            rng: np.random.Generator) -> np.ndarray:
    """ROAD's imputer: :func:`linear_imputation` plus N(0, noise_std^2) on the removed pixels
    (no clipping, as in the reference code)."""
    imputed = linear_imputation(image, removed)
    mask = np.broadcast_to(removed, imputed.shape)
    imputed[mask] += rng.normal(0.0, noise_std, size=int(mask.sum()))
    return imputed


def road_curves(model: torch.nn.Module, split: Split, maps: np.ndarray,
                fractions: list[float], noise_std: float, seed: int,
                device: torch.device, batch_size: int = 64, desc: str = "road") -> list[dict]:
    """Accuracy of ``model`` on ``split`` after ROAD removal + imputation, one row per
    (order, fraction): ``{"order", "fraction", "pixels_removed", "accuracy"}``.

    Noise comes from a generator seeded by ``(seed, order index, fraction index)``, so every
    method sees the same noise stream; ranking ties are broken by :func:`tie_orders` with
    ``seed``, as in ROAR.
    """
    model = model.to(device)
    scores = torch.as_tensor(np.array(maps, dtype=np.float32))
    labels = np.asarray(split.labels)
    n, _, height, width = split.images.shape
    ties = split_ties(split, seed)
    rows = []
    grid = [(o, f) for o in range(len(ORDERS)) for f in range(len(fractions))]
    for order_index, fraction_index in tqdm(grid, desc=desc, unit="curve point"):
        fraction = fractions[fraction_index]
        count = pixel_count(fraction, height, width)
        removed = rank_mask(scores, count, most_relevant=ORDERS[order_index] == "morf",
                            ties=ties).numpy()
        rng = np.random.default_rng([seed, order_index, fraction_index])
        correct = 0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = np.stack([
                noisy_linear_imputation(np.asarray(split.images[i], dtype=np.float64) / 255.0,
                                        removed[i], noise_std, rng)
                for i in range(start, stop)]).astype(np.float32)
            preds = predict(model, batch, device, batch_size).argmax(1).numpy()
            correct += int((preds == labels[start:stop]).sum())
        rows.append({"order": ORDERS[order_index], "fraction": fraction, "pixels_removed": count,
                     "accuracy": correct / n})
    return rows


def run_road(config: Mapping, variant: str, method: str, device: torch.device) -> dict:
    """The ``road`` stage's numbers for one (variant, method) on ``roar.eval_split``."""
    started = time.perf_counter()
    roar_config = config["roar"]
    eval_split = roar_config["eval_split"]
    directory = paths.variant_split_dir(config, variant, eval_split)
    split = read_split(directory)
    if len(split) == 0:
        raise DataError(f"{directory} has no images; ROAD needs a non-empty {eval_split} split")
    maps = load_maps(paths.attribution_map(config, variant, method, eval_split), split)
    model, _ = load_model(paths.model_weights(config, variant), map_location=device)
    rows = road_curves(model, split, maps, list(roar_config["fractions"]),
                       roar_config["road_noise_std"], config["seed"], device,
                       batch_size=train_settings(config, variant)["batch_size"],
                       desc=f"road {variant}/{method}")
    return {"variant": variant, "method": method, "split": eval_split, "n_images": len(split),
            "noise_std": roar_config["road_noise_std"], "curves": rows,
            "seconds": time.perf_counter() - started}
