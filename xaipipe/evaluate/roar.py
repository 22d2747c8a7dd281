"""One ROAR or KAR remove-and-retrain run (Hooker et al. 2019; survey §4.4, steps 1-4).

``run_roar`` ranks every train and test image's pixels by its attribution map, replaces the
top ``fraction`` (ROAR) or the bottom ``fraction`` (KAR; ``roar.kar_fraction``) by the variant's
training-set channel mean (:mod:`xaipipe.evaluate.removal`; "Both the training and the
testing data undergo this process", step 2), retrains a fresh model (``model.arch``) with
the variant's training settings on the modified training split (step 3) and measures
accuracy on the modified test split.

The test split is ``roar.eval_split``: by default ``val_matched``, the val images with the
variant's own background treatment, because "the training data and the test data must be
drawn from the same distribution" (step 3). ``val`` (the unmodified val images, the paper's
Table I column) is available, but for ``black``, ``noise`` and ``mixed`` it mixes pixel
removal with a background shift.

The ``random`` attribution method is the baseline every other method is compared with in
:mod:`xaipipe.evaluate.roar_summary` (step 4). Seed ``s`` trains with ``config["seed"] + s``;
ties in the ranking are broken by the per-image order of ``config["seed"]``, the same for
every method and seed.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np
import torch

from xaipipe import paths
from xaipipe.architectures import configured_architecture
from xaipipe.baselines import chance_rate, majority_rate
from xaipipe.config import train_settings
from xaipipe.data.store import read_split
from xaipipe.evaluate.removal import fill_value, load_maps, remove_pixels
from xaipipe.io import bits
from xaipipe.train import predict, train_classifier

log = logging.getLogger(__name__)

KINDS = ("roar", "kar")


def run_roar(config: Mapping, kind: str, variant: str, method: str, fraction: float,
             seed: int, device: torch.device) -> dict:
    """Remove, retrain, evaluate; returns the JSON-ready result of the ``roar`` stage."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    seconds = {}
    clock = time.perf_counter()
    eval_split = config["roar"]["eval_split"]
    train = read_split(paths.variant_split_dir(config, variant, "train"))
    val = read_split(paths.variant_split_dir(config, variant, eval_split))
    # seed s removes by the maps of replicate s (the ROAR grid does not grow with replicates)
    train_maps = load_maps(paths.attribution_map(config, variant, method, "train", replicate=seed),
                           train)
    val_maps = load_maps(paths.attribution_map(config, variant, method, eval_split,
                                               replicate=seed), val)
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fill = fill_value(train.images)
    kar_fraction = config["roar"]["kar_fraction"]
    train_removed = remove_pixels(train, train_maps, kind, fraction, fill, config["seed"], device,
                                  kar_fraction)
    val_removed = remove_pixels(val, val_maps, kind, fraction, fill, config["seed"], device,
                                kar_fraction)
    seconds["removal"] = time.perf_counter() - clock

    clock = time.perf_counter()
    settings = train_settings(config, variant, epochs=config["roar"]["epochs"])
    name = f"{kind}_{variant}_{method}_fraction{fraction:g}_seed{seed}"
    result = train_classifier(
        train_removed, settings, num_classes=train.num_classes, seed=config["seed"] + seed,
        device=device, checkpoint_dir=paths.checkpoint_dir(config, name), desc=name,
        arch=configured_architecture(config))
    seconds["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    hits = (predict(result.model, val_removed.images, device).argmax(1).numpy()
            == np.asarray(val_removed.labels))
    val_accuracy = float(hits.mean())
    seconds["evaluate"] = time.perf_counter() - clock
    # the last epoch's running accuracy on the augmented batches: a free convergence check
    # (an eval-mode pass over the modified train split would cost more than the val pass)
    train_accuracy = result.final["train_acc"]
    log.info("%s: val accuracy %.4f (last-epoch running train accuracy %.4f)",
             name, val_accuracy, train_accuracy)
    return {
        "kind": kind, "variant": variant, "method": method, "fraction": fraction, "seed": seed,
        "maps_replicate": seed, "train_seed": config["seed"] + seed,
        "eval_split": eval_split,
        "accuracy": val_accuracy, "correct": bits(hits),
        "train_running_accuracy": float(train_accuracy),
        "chance_accuracy": chance_rate(train.num_classes),
        "majority_accuracy": majority_rate(val.labels),
        "epochs": settings["epochs"], "n_train": len(train), "n_val": len(val),
        "pixels_removed": train_removed.meta["removal"]["pixels_removed"],
        "fill": train_removed.meta["removal"]["fill"],
        "seconds": sum(seconds.values()), "seconds_by_phase": seconds,
        "settings": settings, "device": str(device),
    }
