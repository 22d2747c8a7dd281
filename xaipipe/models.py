"""The classifier: a torchvision architecture (``model.arch``) with the input normalisation
inside the model.

Every model in xaipipe takes float images in [0, 1] (N x 3 x H x W) and normalises them
itself, so attribution methods, perturbations (black = 0), feature visualisation and ROAR
all work in plain pixel space. The architecture (:mod:`xaipipe.architectures`) is recorded in
every model file and checked when a stage loads it for a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from xaipipe.architectures import Architecture, architecture
from xaipipe.errors import DataError
from xaipipe.io import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_ARCH = "resnet18"
"""The paper's architecture: ``model.arch``'s default and the architecture of model files
written before the key existed (their meta has no ``arch``)."""


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers so they follow the model's device and dtype."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Sequential):
    """``Normalize`` followed by the architecture's torchvision model, ``.backbone``;
    ``.arch`` is its :class:`xaipipe.architectures.Architecture`."""

    def __init__(self, arch: Architecture, num_classes: int):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.add_module("normalize", Normalize())
        self.add_module("backbone", arch.build(num_classes))


def build_model(num_classes: int, arch: Architecture | str = DEFAULT_ARCH) -> Classifier:
    """A freshly initialised classifier for ``num_classes`` classes; ``arch`` is a description
    or the name of a built-in architecture (plug-ins: pass
    :func:`xaipipe.architectures.configured_architecture`)."""
    return Classifier(architecture(arch) if isinstance(arch, str) else arch, num_classes)


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.float().div_(255.0)


def save_model(path: str | Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write weights plus ``meta`` (num_classes, class_names, resolution, variant, ...) and the
    model's architecture name (``arch``) atomically."""
    model = _unwrap(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": {**meta, "arch": model.arch.name}}, tmp)


def load_model(path: str | Path, map_location: str | torch.device = "cpu", *,
               config: Mapping | None = None) -> tuple[Classifier, dict]:
    """Load a model written by :func:`save_model` as the architecture recorded in it; clear
    error if the file is not one. With ``config``, the recorded architecture must be the
    config's ``model.arch`` (a :class:`DataError` naming the file, both names and the fix
    otherwise), and ``plugins.models`` are known."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist; run the train stage for it first")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        meta = dict(blob["meta"])
        state, num_classes = blob["state_dict"], int(meta["num_classes"])
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(f"{path} is not a readable xaipipe model ({type(exc).__name__}: {exc}); "
                        "delete it and rerun the train stage") from exc
    recorded = meta.setdefault("arch", DEFAULT_ARCH)
    if config is not None and recorded != config["model"]["arch"]:
        raise DataError(f"{path} holds a {recorded} model but the config's model.arch is "
                        f"{config['model']['arch']}; rerun the train stage for this config "
                        "(or set model.arch back to the architecture the model was trained as)")
    model = build_model(num_classes, architecture(recorded, config))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{path} does not fit a {recorded} model ({exc}); delete it and rerun "
                        "the train stage") from exc
    return model.eval(), meta


def _unwrap(model: nn.Module) -> nn.Module:
    """The original module behind torch.compile's wrapper."""
    return getattr(model, "_orig_mod", model)
