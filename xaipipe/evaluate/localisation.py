"""Localisation of attribution maps against the ground-truth foreground masks.

Two per-image scores of every explanation method, each reported as mean and std over the val
images, next to the value a map that knows nothing about the object would get:

* **Energy in mask** (the share of attribution mass inside the object, as in the
  "energy-based pointing game" of Score-CAM, Wang et al. 2020):
  ``sum(A+ * mask) / sum(A+)`` where ``A+`` is the map with negative values set to 0
  (``localisation.negative: clip``, only positive evidence counts) or their magnitude
  (``abs``). Maps without any mass (all zero after that step) are excluded and counted.
* **Pointing game** (Zhang et al. 2016, without their 15 px tolerance): 1 if the map's
  maximum lies on the object. Tied maxima (a flat or all-zero map) are broken by the image's
  seeded random pixel order (:func:`xaipipe.evaluate.removal.tie_orders`, the same for every
  method), so a flat map hits the object with the chance probability instead of always
  pointing at the top-left corner; the result is deterministic for a seed.
* **Chance**: a uniform map has energy-in-mask = the image's foreground fraction, and a
  uniformly random point hits the object with that same probability, so the mean
  foreground fraction is the chance level of both scores.

Background reliance of the model: accuracy on the unmodified val images, on foreground-only
images (val x mask, background black) and background-only images (object pixels imputed
from the background, or black, by ``train.bg_only_fill``); the image builders
(:func:`xaipipe.train_stage.background_only`) and the prediction code are the train stage's
own, so these rows match metrics.json.

Masks are 1 = foreground. Hand-written (a few tensor reductions; no library has them).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from xaipipe import paths
from xaipipe.baselines import chance_rate, majority_rate
from xaipipe.config import train_settings
from xaipipe.data.store import read_split
from xaipipe.device import claim_device
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
UNTRAINED = "untrained"
"""The ``variant`` of the untrained-model rows (:func:`run_untrained_localisation`)."""
COLUMNS = ["variant", "subject", "metric", "mean", "std", "n", "excluded"]


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
    """Per-image 1.0 if the map's maximum is on the foreground; among tied maxima the first
    in the order of ``ties`` (N x H*W permutations, :func:`tie_orders`) counts."""
    n = maps.shape[0]
    shuffled = maps.reshape(n, -1).float().gather(1, ties)
    first_max = shuffled.argmax(dim=1)  # documented: the first maximal value
    hit = masks.reshape(n, -1).gather(1, ties.gather(1, first_max[:, None]))[:, 0]
    return (hit > 0).float()


def _row(variant: str, subject: str, metric: str, values: np.ndarray) -> dict:
    kept = values[~np.isnan(values)]
    return {"variant": variant, "subject": subject, "metric": metric,
            "mean": float(kept.mean()) if kept.size else float("nan"),
            "std": float(kept.std(ddof=1)) if kept.size > 1 else float("nan"),
            "n": int(kept.size), "excluded": int(values.size - kept.size)}


def localisation_rows(variant: str, maps: Mapping[str, np.ndarray], masks: np.ndarray,
                      negative: str, ties: torch.Tensor) -> list[dict]:
    """Rows of energy-in-mask and pointing game for every method, plus the chance level;
    ``ties``: the images' :func:`tie_orders` (pointing-game ties)."""
    mask_t = torch.from_numpy(np.array(masks))
    rows = []
    for method, method_maps in maps.items():
        map_t = torch.as_tensor(np.array(method_maps, dtype=np.float32))
        rows.append(_row(variant, method, "energy_in_mask",
                         energy_in_mask(map_t, mask_t, negative).numpy()))
        rows.append(_row(variant, method, "pointing_game",
                         pointing_game(map_t, mask_t, ties).numpy()))
    fg_fraction = mask_t.flatten(1).float().mean(1).numpy()
    rows += [_row(variant, CHANCE, metric, fg_fraction) for metric in ("energy_in_mask", "pointing_game")]
    return rows


def reliance_rows(variant: str, model: torch.nn.Module, split, device: torch.device,
                  batch_size: int, bg_only_fill: str = "impute") -> list[dict]:
    """Accuracy (mean of per-image correctness, with its std) on full, foreground-only and
    background-only val images (:func:`background_only` with ``bg_only_fill``), each beside
    the two accuracies that know nothing: ``chance`` (1 / classes) and ``majority`` (always
    the split's most frequent class; :mod:`xaipipe.baselines`)."""
    rows = []
    n = len(split)
    baselines = {CHANCE: chance_rate(split.num_classes) if split.num_classes else float("nan"),
                 MAJORITY: majority_rate(split.labels)}
    for metric, images in (("accuracy_full", split.images),
                           ("accuracy_fg_only", foreground_only(split)),
                           ("accuracy_bg_only", background_only(split, bg_only_fill))):
        correct = predict(model, images, device, batch_size).argmax(1).numpy() == split.labels
        rows.append(_row(variant, MODEL, metric, correct.astype(np.float64)))
        rows += [{"variant": variant, "subject": subject, "metric": metric, "mean": rate,
                  "std": float("nan"), "n": n, "excluded": 0}
                 for subject, rate in baselines.items()]
    return rows


def method_rows(config: Mapping, variant: str, methods: Sequence[str]) -> list[dict]:
    """:func:`localisation_rows` of ``methods``' val maps of ``variant`` (the ``chance`` rows
    included), ties seeded by ``config['seed']``."""
    split = read_split(paths.variant_split_dir(config, variant, "val"))
    maps = {m: load_maps(paths.attribution_map(config, variant, m, "val"), split)
            for m in methods}
    ties = split_ties(split, config["seed"])
    return localisation_rows(variant, maps, split.masks, config["localisation"]["negative"], ties)


def run_localisation(config: Mapping, variant: str) -> pd.DataFrame:
    """The ``localisation`` stage of ``variant``: write ``paths.localisation_table``."""
    methods = list(config["explain"]["methods"])
    rows = method_rows(config, variant, methods)
    split = read_split(paths.variant_split_dir(config, variant, "val"))
    with claim_device(config["device"]) as device:
        model, _ = load_model(paths.model_weights(config, variant), map_location=device)
        rows += reliance_rows(variant, model, split, device, config["localisation"]["batch_size"],
                              train_settings(config, variant)["bg_only_fill"])
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(paths.localisation_table(config, variant)) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%s: localisation of %d methods on %d val images -> %s", variant, len(methods),
             len(split), paths.localisation_table(config, variant))
    return table


def run_untrained_localisation(config: Mapping) -> pd.DataFrame:
    """The ``localisation_untrained`` stage: energy in mask and pointing game of the maps of
    an *untrained* ResNet18 (initialised with ``named_seed(config, "untrained")``), for every
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
    model = build_model(split.num_classes).eval()
    with claim_device(config["device"]) as device:
        maps = {m: attribute_split(model, split, m, config["explain"], device=device, seed=seed,
                                   config=config,
                                   desc=f"{m} untrained") for m in methods}
    ties = split_ties(split, config["seed"])
    rows = localisation_rows(UNTRAINED, maps, split.masks, config["localisation"]["negative"], ties)
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(paths.untrained_localisation_table(config)) as tmp:
        table.to_csv(tmp, index=False)
    log.info("untrained ResNet18: localisation of %d methods on %d val images -> %s",
             len(methods), len(split), paths.untrained_localisation_table(config))
    return table
