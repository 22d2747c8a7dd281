"""The ``train`` stage: one classifier (``model.arch``, the paper's ResNet18 by default) per
variant, with the paper's Table I numbers and a background-reliance check.

Reads the variant's tensor store (``train``, ``val``, ``val_matched``), trains with
:func:`xaipipe.train.train_classifier` and writes, each atomically:

- ``model.pt``: weights + meta (num_classes, class_names, resolution, variant, seed, arch);
- ``metrics.json``: Table I of Nielsen et al. (train accuracy, val accuracy on unmodified
  val images, loss) plus val_matched accuracy, the chance level (1 / classes), the
  majority-class rate of the val labels (:mod:`xaipipe.baselines`) and **background reliance**:
  accuracy on foreground-only val images (val x mask, background black) and on
  background-only val images (the object pixels filled from the surrounding background by
  ROAD's linear imputation, ``train.bg_only_fill: impute``, or set to black, ``black``).
  A model that leans on context stays well above chance on background-only images; one
  that cannot (``black``) falls to chance;
- ``history.csv``: one row per epoch;
- ``learning_curve.png``: loss and accuracies against epoch, chance and majority rate dashed;
- ``val_predictions.npy``: int64, the predicted class of every unmodified val image (row
  order of the store), for the report's saliency grid and per-image comparisons.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from xaipipe import paths
from xaipipe.architectures import configured_architecture
from xaipipe.baselines import chance_rate, majority_rate
from xaipipe.config import train_settings
from xaipipe.data.store import Split, read_split
from xaipipe.device import claim_job_device
from xaipipe.errors import ConfigError, DataError
from xaipipe.evaluate.road import batch_linear_imputation
from xaipipe.io import atomic_path, save_npy, write_json
from xaipipe.models import save_model
from xaipipe.seeds import model_seed
from xaipipe.train import TrainResult, accuracy, predict, train_classifier

log = logging.getLogger(__name__)


def foreground_only(split: Split) -> np.ndarray:
    """Val images with the background set to black (image x mask, paper section IV)."""
    return split.images * split.masks[:, None].astype(np.uint8)


BG_ONLY_FILLS = ("impute", "black")
"""How :func:`background_only` removes the object: ``impute`` (default) fills the object
pixels from the surrounding background, ``black`` sets them to 0 (val x (1 - mask))."""


BG_ONLY_CHUNK = 64
"""Images imputed per :func:`background_only` call of the batched solver (bounds memory)."""


def background_only(split: Split, fill: str = "impute") -> np.ndarray:
    """Val images with the object (mask = 1, outlines included) removed, uint8 N x 3 x H x W.

    ``fill="black"``: image x (1 - mask), a black hole with the object's silhouette.
    ``fill="impute"``: every object pixel becomes the weighted mean of its 8 neighbours,
    solved jointly over the whole object (the noise-free ROAD imputer, batched:
    :func:`xaipipe.evaluate.road.batch_linear_imputation` with its default iterative solver,
    within 1e-4 of the exact solve in [0, 1] units before rounding), so the hole is a smooth
    blend of the surrounding background: neither the silhouette nor an unusual black region
    is left. Background pixels are unchanged. An image whose mask covers every pixel has no
    background to impute from and stays black; one with an empty mask is returned as is.
    """
    if fill not in BG_ONLY_FILLS:
        raise ConfigError(f"train.bg_only_fill is {fill!r}; use one of {', '.join(BG_ONLY_FILLS)}")
    masks = np.asarray(split.masks).astype(bool)
    images = np.asarray(split.images) * (~masks[:, None]).astype(np.uint8)
    if fill == "black":
        return images
    flat = masks.reshape(len(masks), -1)
    todo = np.flatnonzero(flat.any(axis=1) & ~flat.all(axis=1))
    for start in tqdm(range(0, len(todo), BG_ONLY_CHUNK), desc="bg-only imputation",
                      unit="chunk", leave=False):
        rows = todo[start:start + BG_ONLY_CHUNK]
        filled = batch_linear_imputation(np.asarray(split.images[rows], dtype=np.float32) / 255,
                                         masks[rows])
        images[rows] = np.clip(np.round(filled * 255), 0, 255).astype(np.uint8)
    return images


def load_variant_splits(config: Mapping[str, Any], variant: str) -> dict[str, Split]:
    """The three splits of a variant's store, checked against each other and the config."""
    splits = {name: read_split(paths.variant_split_dir(config, variant, name))
              for name in paths.SPLITS}
    names = splits["train"].class_names
    resolution = config["resolution"]
    for name, split in splits.items():
        where = paths.variant_split_dir(config, variant, name)
        if split.class_names != names:
            raise DataError(f"{where}/meta.json: class_names differ from the train split's; "
                            "rerun the variant stage")
        if split.images.shape[2:] != (resolution, resolution):
            raise DataError(f"{where}/images.npy has {split.images.shape[2]}x{split.images.shape[3]} "
                            f"images but config resolution is {resolution}; rerun the variant stage "
                            "or fix resolution")
    if not names:
        raise DataError(f"{paths.variant_split_dir(config, variant, 'train')}/meta.json has no "
                        "class_names; rerun the variant stage")
    return splits


def table_metrics(result: TrainResult, splits: Mapping[str, Split], device: torch.device,
                  bg_only_fill: str = "impute") -> dict:
    """Table I columns, val_matched accuracy and background reliance of a trained model
    (background-only images built with :func:`background_only` and ``bg_only_fill``)."""
    model, val = result.model, splits["val"]
    num_classes = splits["train"].num_classes
    return {
        "train_accuracy": accuracy(model, splits["train"].images, splits["train"].labels, device),
        "train_running_accuracy": result.final.get("train_acc"),
        "val_accuracy": result.final["val_acc"],
        "val_matched_accuracy": result.final["val_matched_acc"],
        "loss": result.final.get("loss"),
        "fg_only_val_accuracy": accuracy(model, foreground_only(val), val.labels, device),
        "bg_only_val_accuracy": accuracy(model, background_only(val, bg_only_fill), val.labels, device),
        "bg_only_fill": bg_only_fill,
        "chance_accuracy": chance_rate(num_classes),
        "majority_accuracy": majority_rate(val.labels),
        "epochs": len(result.history),
        "seconds": result.final["total_seconds"],
        "images_per_s": (float(np.mean([r["images_per_s"] for r in result.history]))
                         if result.history else None),
        "num_train_images": len(splits["train"]),
        "num_val_images": len(val),
    }


def plot_learning_curve(history: list[dict], chance: float, majority: float, path,
                        title: str) -> None:
    """Loss and accuracies (train running, every eval split) against epoch, as a PNG, with
    the uniform chance level and the val split's majority-class rate as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if not frame.empty:
        ax_loss.plot(frame["epoch"], frame["loss"], marker=".")
        for column in [c for c in frame.columns if c.endswith("_acc")]:
            ax_acc.plot(frame["epoch"], frame[column], marker=".", label=column.removesuffix("_acc"))
    ax_acc.axhline(chance, color="grey", linestyle="--", label="chance (1 / classes)")
    ax_acc.axhline(majority, color="black", linestyle=":", label="majority class (val)")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def train_model(config: Mapping[str, Any], name: str, *, store_variant: str, seed: int,
                replicate: int) -> dict:
    """Train a model on ``store_variant``'s tensor store with that variant's ``train`` settings
    and write ``model.pt``, ``metrics.json``, ``history.csv``, ``learning_curve.png`` and
    ``val_predictions.npy`` under ``paths.model_dir(config, name, replicate=replicate)``; resume
    checkpoints go to ``paths.checkpoint_dir(config, "<name>/rep<replicate>")``. Returns
    metrics.json's dict. (``name`` = the variant for the train stage; other models, e.g.
    ``paths.REFERENCE_MODEL``, reuse it with their own name and seed.)"""
    splits = load_variant_splits(config, store_variant)
    settings = train_settings(config, store_variant)
    arch = configured_architecture(config)
    train = splits["train"]
    with claim_job_device(config) as device:
        result = train_classifier(
            train, settings, num_classes=train.num_classes, seed=seed, device=device,
            evals={"val": splits["val"], "val_matched": splits["val_matched"]},
            checkpoint_dir=paths.checkpoint_dir(config, f"{name}/rep{replicate}"),
            desc=f"{name} rep{replicate}", arch=arch)
        metrics = table_metrics(result, splits, device, settings["bg_only_fill"])
        predictions = predict(result.model, splits["val"].images, device).argmax(1).numpy()
    metrics.update(variant=name, replicate=replicate, store_variant=store_variant, seed=seed,
                   num_classes=train.num_classes, resolution=config["resolution"], device=str(device))
    where = {"replicate": replicate}
    save_model(paths.model_weights(config, name, **where), result.model, {
        "num_classes": train.num_classes, "class_names": train.class_names,
        "resolution": config["resolution"], "variant": name, "replicate": replicate,
        "seed": seed})
    write_json(paths.model_metrics(config, name, **where), metrics)
    save_npy(paths.model_predictions(config, name, **where), predictions.astype(np.int64))
    with atomic_path(paths.model_history(config, name, **where)) as tmp:
        pd.DataFrame(result.history).to_csv(tmp, index=False)
    plot_learning_curve(result.history, metrics["chance_accuracy"], metrics["majority_accuracy"],
                        paths.model_curve(config, name, **where),
                        f"{name} (replicate {replicate}): {arch.title}, "
                        f"{len(result.history)} epochs")
    log.info("%s: train acc %.3f, val acc %.3f, val_matched %.3f, fg-only %.3f, bg-only %.3f "
             "(chance %.3f)", name, metrics["train_accuracy"], metrics["val_accuracy"],
             metrics["val_matched_accuracy"], metrics["fg_only_val_accuracy"],
             metrics["bg_only_val_accuracy"], metrics["chance_accuracy"])
    return metrics


def run_train_stage(config: Mapping[str, Any], variant: str, replicate: int) -> dict:
    """The train stage of one replicate of ``variant``: :func:`train_model` on the variant's
    own store with the replicate's seed (:func:`xaipipe.seeds.model_seed`)."""
    return train_model(config, variant, store_variant=variant,
                       seed=model_seed(config, variant, replicate), replicate=replicate)
