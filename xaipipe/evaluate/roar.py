"""One ROAR or KAR remove-and-retrain run (Hooker et al. 2019; survey §4.4, steps 1-4).

``run_roar`` ranks every train and val image's pixels by its attribution map, replaces the top
``fraction`` (ROAR) or everything but the top ``fraction`` (KAR) by the variant's training-set
channel mean (:mod:`xaipipe.evaluate.removal`), retrains a fresh ResNet18 with the variant's
training settings on the modified training split and measures accuracy on the modified
validation split. The ``random`` attribution method is the baseline every other method is
compared with in :mod:`xaipipe.evaluate.roar_summary`. Seed ``s`` trains with
``config["seed"] + s``.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import torch

from xaipipe import paths
from xaipipe.config import train_settings
from xaipipe.data.store import read_split
from xaipipe.evaluate.removal import fill_value, load_maps, remove_pixels
from xaipipe.train import accuracy, train_classifier

log = logging.getLogger(__name__)

KINDS = ("roar", "kar")


def run_roar(config: Mapping, kind: str, variant: str, method: str, fraction: float,
             seed: int, device: torch.device) -> dict:
    """Remove, retrain, evaluate; returns the JSON-ready result of the ``roar`` stage."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    seconds = {}
    clock = time.perf_counter()
    train = read_split(paths.variant_split_dir(config, variant, "train"))
    val = read_split(paths.variant_split_dir(config, variant, "val"))
    train_maps = load_maps(paths.attribution_map(config, variant, method, "train"), train)
    val_maps = load_maps(paths.attribution_map(config, variant, method, "val"), val)
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fill = fill_value(train.images)
    train_removed = remove_pixels(train, train_maps, kind, fraction, fill, device)
    val_removed = remove_pixels(val, val_maps, kind, fraction, fill, device)
    seconds["removal"] = time.perf_counter() - clock

    clock = time.perf_counter()
    settings = train_settings(config, variant, epochs=config["roar"]["epochs"])
    name = f"{kind}_{variant}_{method}_fraction{fraction:g}_seed{seed}"
    result = train_classifier(
        train_removed, settings, num_classes=train.num_classes, seed=config["seed"] + seed,
        device=device, checkpoint_dir=paths.checkpoint_dir(config, name), desc=name)
    seconds["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    val_accuracy = accuracy(result.model, val_removed.images, val_removed.labels, device)
    seconds["evaluate"] = time.perf_counter() - clock
    # the last epoch's running accuracy on the augmented batches: a free convergence check
    # (an eval-mode pass over the modified train split would cost more than the val pass)
    train_accuracy = result.final["train_acc"]
    log.info("%s: val accuracy %.4f (last-epoch running train accuracy %.4f)",
             name, val_accuracy, train_accuracy)
    return {
        "kind": kind, "variant": variant, "method": method, "fraction": fraction, "seed": seed,
        "train_seed": config["seed"] + seed,
        "accuracy": float(val_accuracy), "train_running_accuracy": float(train_accuracy),
        "epochs": settings["epochs"], "n_train": len(train), "n_val": len(val),
        "pixels_removed": train_removed.meta["removal"]["pixels_removed"],
        "fill": train_removed.meta["removal"]["fill"],
        "seconds": sum(seconds.values()), "seconds_by_phase": seconds,
        "settings": settings, "device": str(device),
    }
