"""ResNet18 (torchvision) with the input normalisation inside the model.

Every model in xaipipe takes float images in [0, 1] (N x 3 x H x W) and normalises them
itself, so attribution methods, perturbations (black = 0), feature visualisation and ROAR
all work in plain pixel space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models import resnet18

from xaipipe.errors import DataError
from xaipipe.io import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers so they follow the model's device and dtype."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Sequential):
    """``Normalize`` followed by torchvision's ``resnet18``; ``.backbone`` is the ResNet."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.add_module("normalize", Normalize())
        self.add_module("backbone", resnet18(num_classes=num_classes))


def build_model(num_classes: int) -> Classifier:
    """A freshly initialised ResNet18 classifier for ``num_classes`` classes."""
    return Classifier(num_classes)


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.float().div_(255.0)


def save_model(path: str | Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write weights plus ``meta`` (num_classes, class_names, resolution, variant, ...) atomically."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": dict(meta)}, tmp)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """Load a model written by :func:`save_model`; clear error if the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist; run the train stage for it first")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        meta = dict(blob["meta"])
        model = build_model(int(meta["num_classes"]))
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(
            f"{path} is not a readable xaipipe model ({type(exc).__name__}: {exc}); "
            "delete it and rerun the train stage"
        ) from exc
    return model.eval(), meta


def _unwrap(model: nn.Module) -> nn.Module:
    """The original module behind torch.compile's wrapper."""
    return getattr(model, "_orig_mod", model)
