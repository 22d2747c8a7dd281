"""Sanity checks for saliency maps (Adebayo et al. 2018; survey section 4.6).

* **Cascading model-parameter randomisation**: starting from the trained model, re-initialise
  the blocks from the top down, cumulatively, and after each step compare every image's map
  with the trained model's map, block by block (survey Fig. 4.1: "Progression from left to
  right indicate complete randomization of network weights up to that block inclusive"). The
  steps are the architecture's ``cascade`` (:mod:`xaipipe.architectures`): for a ResNet
  ``fc``, ``layer4``, ``layer3``, ``layer2``, ``layer1``, ``conv1`` (+ its BatchNorm); for a
  VGG ``fc8``, ``fc7``, ``fc6``, then the convolutional blocks ``conv5`` .. ``conv1`` (each
  with its BatchNorms). Re-initialisation copies the block from a freshly built model of the
  same architecture (torchvision's own initialisation, BatchNorm statistics reset too), seeded.
* **Data randomisation**: a model trained with the same settings on the variant's training
  images with randomly permuted labels (:func:`xaipipe.train.train_classifier`); its maps are
  compared with the trained model's. The survey (§4.6): "The data randomization test randomly
  shuffles the labels of the data and the model is trained on this"; Adebayo et al. train it
  until it fits the shuffled labels, since only a model that has memorised them tells
  whether a method depends on the image-label relation. Its own epoch count is
  ``sanity.data_randomisation_epochs``; its accuracy on the shuffled training labels is
  recorded (``shuffled_train_accuracy``), and below ``sanity.min_fit_accuracy`` the rows are
  marked ``meaningful = False`` (the model did not fit, so the check says nothing).

Similarity is Spearman's rank correlation (``scipy.stats.spearmanr``) of the flattened
per-pixel maps, per image, of the *signed* map (per-channel attributions summed over channels)
and of its absolute value, as in Adebayo et al. (their "with/without absolute value").
A method passes when the correlations fall far below 1. A constant map (e.g. Grad-CAM all zero)
has no ranking: its correlation is NaN and left out of the mean (``n_valid`` counts the rest).
Both tests explain the same class per image: ``explain.target`` chosen with the trained model.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from xaipipe import paths
from xaipipe.architectures import Architecture, configured_architecture
from xaipipe.config import train_settings
from xaipipe.data.store import Split, read_split
from xaipipe.device import claim_job_device
from xaipipe.explain.attribution import attribute_split, check_split_fits_model, choose_targets
from xaipipe.explain.figures import cascade_plot, saliency_grid
from xaipipe.io import atomic_path
from xaipipe.models import DEFAULT_ARCH, build_model, images_to_float, load_model
from xaipipe.seeds import named_seed
from xaipipe.train import accuracy, train_classifier

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("method", "test", "layer", "spearman_abs_mean", "spearman_abs_std",
                 "spearman_signed_mean", "spearman_signed_std", "n_valid",
                 "shuffled_train_accuracy", "meaningful")


def cascading_models(model: nn.Module, seed: int) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(block, model)`` with ``block`` and every block above it re-initialised, for
    every block of the architecture's ``cascade`` (top to bottom).

    The same copy is modified step by step, so use each model before advancing. ``model`` is
    an :class:`xaipipe.models.Classifier`; it is not changed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_model(model.num_classes, model.arch).backbone
    current = copy.deepcopy(model).eval()
    for block, modules in model.arch.cascade.items():
        for name in modules:
            source = fresh.get_submodule(name).state_dict()
            current.backbone.get_submodule(name).load_state_dict(source)
        yield block, current


def rank_correlations(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Spearman correlation of |maps| and of signed maps (both N x H x W)."""
    def per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.full(len(a), np.nan)
        for i in range(len(a)):
            x, y = a[i].ravel(), b[i].ravel()
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                out[i] = spearmanr(x, y).statistic
        return out

    return per_image(np.abs(reference), np.abs(other)), per_image(reference, other)


def _row(method: str, test: str, layer: str, abs_rho: np.ndarray, signed_rho: np.ndarray,
         **extra) -> dict:
    def stat(values: np.ndarray, fn) -> float:
        return float(fn(values)) if np.isfinite(values).any() else float("nan")

    return {"method": method, "test": test, "layer": layer,
            "spearman_abs_mean": stat(abs_rho, np.nanmean), "spearman_abs_std": stat(abs_rho, np.nanstd),
            "spearman_signed_mean": stat(signed_rho, np.nanmean),
            "spearman_signed_std": stat(signed_rho, np.nanstd),
            "n_valid": int(np.isfinite(abs_rho).sum()), "meaningful": True, **extra}


class SignedMaps:
    """Signed float32 maps of fixed images (a store subset: its masks and ids come along, so
    the oracle maps work too) and targets, for any model (same seed each time)."""

    def __init__(self, images: Split, targets: np.ndarray, settings: Mapping[str, Any],
                 device: torch.device, seed: int, config: Mapping | None = None):
        self.split = Split(images=images.images, masks=images.masks, labels=targets,
                           meta={"ids": images.ids})
        self.settings = {**settings, "channel_reduce": "sum", "target": "label"}
        self.device, self.seed, self.config = device, seed, config

    def __call__(self, model: nn.Module, method: str) -> np.ndarray:
        return attribute_split(model, self.split, method, self.settings, device=self.device,
                               seed=self.seed, config=self.config)


def cascading_randomisation(model: nn.Module, maps: SignedMaps, methods: Sequence[str],
                            seed: int) -> list[dict]:
    """Table rows of the cascading test; the first row per method is the trained model (1.0)."""
    reference = {m: maps(model, m) for m in methods}
    rows = [_row(m, "cascading", "original", *rank_correlations(reference[m], reference[m]))
            for m in methods]
    for block, randomised in cascading_models(model, seed):
        log.info("cascading randomisation: re-initialised down to %s", block)
        rows += [_row(m, "cascading", block, *rank_correlations(reference[m], maps(randomised, m)))
                 for m in methods]
    return rows


def shuffled_label_model(train: Split, settings: Mapping[str, Any], *, num_classes: int,
                         seed: int, device: torch.device,
                         arch: Architecture | str = DEFAULT_ARCH) -> tuple[nn.Module, float]:
    """A model of architecture ``arch`` trained on ``train`` with its labels randomly permuted
    (Adebayo et al. 3.2), and its accuracy on those shuffled labels (un-augmented train
    images): how well it fits."""
    permuted = np.random.default_rng(seed).permutation(np.asarray(train.labels))
    shuffled = Split(images=train.images, masks=train.masks, labels=permuted, meta=train.meta)
    model = train_classifier(shuffled, settings, num_classes=num_classes, seed=seed,
                             device=device, desc="random labels", arch=arch).model
    return model, accuracy(model, train.images, permuted, device)


def run_sanity_stage(config: Mapping[str, Any], variant: str, *, replicate: int) -> None:
    """Stage ``sanity`` of one model (replicate ``replicate`` of ``variant``; its own seed for
    the images, the re-initialisations and the shuffled-label model):
    ``paths.sanity_dir`` gets ``sanity.csv`` (method x test x layer ->
    Spearman mean/std), ``cascade_<method>.png`` per method and ``saliency.png`` (the first
    ``explain.saliency_figure_images`` val images under every ``explain.methods`` method)."""
    settings, options = config["explain"], config["sanity"]
    weights = paths.model_weights(config, variant, replicate=replicate)
    model, meta = load_model(weights, config=config)
    val_dir = paths.variant_split_dir(config, variant, "val")
    val = read_split(val_dir)
    check_split_fits_model(val, meta, f"{val_dir} vs {weights}")
    train = None
    if options["data_randomisation"]:
        train = read_split(paths.variant_split_dir(config, variant, "train"))
    seed = named_seed(config, f"sanity/{variant}/rep{replicate}")
    chosen = np.sort(np.random.default_rng(seed).permutation(len(val))[:options["num_images"]])
    subset = Split(images=np.asarray(val.images[chosen]), masks=np.asarray(val.masks[chosen]),
                   labels=np.asarray(val.labels[chosen]), meta={"ids": [val.ids[i] for i in chosen]})
    with claim_job_device(config) as device:
        model = model.to(device)
        with torch.no_grad():
            batch = images_to_float(torch.from_numpy(subset.images).to(device))
            targets = choose_targets(model, batch, torch.from_numpy(subset.labels).to(device),
                                     settings["target"]).cpu().numpy()
        maps = SignedMaps(subset, targets, settings, device, seed, config)
        rows = cascading_randomisation(model, maps, options["methods"], seed)
        if train is not None:
            settings_rl = train_settings(config, variant, epochs=options["data_randomisation_epochs"])
            shuffled, fit = shuffled_label_model(train, settings_rl, device=device, seed=seed,
                                                 num_classes=int(meta["num_classes"]),
                                                 arch=configured_architecture(config))
            meaningful = fit >= options["min_fit_accuracy"]
            if not meaningful:
                log.warning("data randomisation of %s is not meaningful: the shuffled-label model "
                            "fits %.3f of its labels after %d epochs (< sanity.min_fit_accuracy "
                            "%.2f); raise sanity.data_randomisation_epochs", variant, fit,
                            settings_rl["epochs"], options["min_fit_accuracy"])
            rows += [_row(m, "data", "random_labels",
                          *rank_correlations(maps(model, m), maps(shuffled, m)),
                          shuffled_train_accuracy=fit, meaningful=meaningful)
                     for m in options["methods"]]
        count = settings["saliency_figure_images"]
        shown = Split(images=np.asarray(val.images[:count]), masks=np.asarray(val.masks[:count]),
                      labels=np.asarray(val.labels[:count]), meta={"ids": val.ids[:count]})
        figure_maps = {m: attribute_split(model, shown, m, settings, device=device, seed=seed,
                                          config=config)
                       for m in settings["methods"]}
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values("method", kind="stable")
    names = val.class_names
    titles = [names[int(c)] if int(c) < len(names) else str(int(c)) for c in shown.labels]
    out = paths.sanity_dir(config, variant, replicate=replicate)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        table.to_csv(tmp / "sanity.csv", index=False, float_format="%.6g")
        for method in options["methods"]:
            cascade_plot(table, method, tmp / f"cascade_{method}.png")
        saliency_grid(shown.images, figure_maps, tmp / "saliency.png", row_titles=titles)
    log.info("wrote %s", out)
