"""The model architectures the pipeline trains and explains (``model.arch``).

An architecture is described once, by an :class:`Architecture`: how to build it, and the
modules that the architecture-dependent steps use -- Grad-CAM's layer, the layers c-MWP can
take its map at, the blocks the sanity check's cascading randomisation re-initialises, the
classification head a pretrained start replaces, and torchvision's ImageNet weights file.
:mod:`xaipipe.registry` maps each ``model.arch`` name to the function that returns its
description (built-ins below; your own under ``plugins.models``).

Module paths are relative to the torchvision model (``Classifier.backbone``). This module
does not import torch, so validating a config (which checks the ImageNet weights file of
the configured architecture) stays fast; the builder imports torchvision when called.

Built-ins (torchvision, random initialisation unless ``train.pretrained`` says otherwise):

* ``resnet18`` -- the paper's model (Nielsen et al., section IV: "we train four ResNet18
  models on different modified versions of the data"); ``resnet50`` (Bottleneck blocks).
* ``vgg16_bn`` / ``vgg19_bn`` -- VGG with BatchNorm (Simonyan & Zisserman configurations D
  and E). Kang et al. (undesirable pixels) report VGG-19 beside ResNet-18 ("We use VGG-19
  [15] and ResNet-18 [6] pretrained on the ImageNet [13]"). The BatchNorm variants train
  from a random initialisation with the ResNets' settings (Simonyan & Zisserman had to
  initialise their deeper plain VGGs from a trained shallower one, "since bad
  initialisation can stall learning"), and their BatchNorm folds into c-MWP's convolutions
  as in the ResNets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from xaipipe.errors import ConfigError
from xaipipe.registry import model_function

CMWP_LAYERS = ("layer1", "layer2", "layer3", "layer4")
"""The values of ``explain.cmwp_layer``: the backbone's output at stride 4, 8, 16 and 32
(ResNet: ``layer1`` .. ``layer4``; VGG: the outputs of ``pool2`` .. ``pool5``). Every
architecture maps each of them to a module (a test checks the schema enum equals this)."""

IMAGENET_WEIGHTS = "IMAGENET1K_V1"
"""The torchvision weights entry ``train.pretrained: imagenet`` loads for every built-in
architecture (tests check each file name against torchvision's Weights enum)."""


@dataclass(frozen=True)
class Architecture:
    """Everything architecture-dependent, by module path inside the backbone."""

    name: str
    """The ``model.arch`` name."""
    title: str
    """Human-readable name for plots and the report, e.g. ``ResNet50``."""
    origin: str
    """Where the builder comes from, e.g. ``torchvision.models.resnet50``."""
    build: Callable[[int], Any]
    """``build(num_classes)`` -> a freshly initialised backbone (an ``nn.Module`` taking
    normalised N x 3 x H x W images, returning N x num_classes logits)."""
    head: str
    """The final ``nn.Linear`` (replaced, fresh, by a pretrained start)."""
    gradcam_layer: str
    """The module whose output Grad-CAM weights: the last convolutional layer's rectified
    output (Selvaraju et al. 2017)."""
    cmwp_layers: Mapping[str, str]
    """:data:`CMWP_LAYERS` value -> the module whose output holds the c-MWP map."""
    cascade: Mapping[str, tuple[str, ...]]
    """Cascading randomisation steps from the top down: step name -> the modules it
    re-initialises (every parameter of the backbone is in exactly one step)."""
    imagenet_url: str | None = None
    """torchvision's :data:`IMAGENET_WEIGHTS` URL; its file name is what ``train.pretrained:
    imagenet`` looks for in the torch hub cache. ``None``: no ImageNet weights known."""

    def cmwp_layer(self, layer: str) -> str:
        """The module path of ``explain.cmwp_layer`` ``layer``; a :class:`ConfigError` naming
        the valid values otherwise."""
        if layer not in self.cmwp_layers:
            raise ConfigError(f"explain.cmwp_layer: {layer!r} is not one of "
                              f"{', '.join(self.cmwp_layers)} (model.arch {self.name})")
        return self.cmwp_layers[layer]


def torchvision_backbone(builder: str, num_classes: int) -> Any:
    """``torchvision.models.<builder>(weights=None, num_classes=num_classes)``."""
    from torchvision import models

    return models.get_model(builder, weights=None, num_classes=num_classes)


def _resnet(name: str, title: str, url: str) -> Architecture:
    """A torchvision ResNet: stem ``conv1``/``bn1``/``maxpool``, stages ``layer1`` ..
    ``layer4`` (stride 4 .. 32), ``avgpool``, ``fc``."""
    stages = ("layer4", "layer3", "layer2", "layer1")
    return Architecture(
        name=name, title=title, origin=f"torchvision.models.{name}",
        build=functools.partial(torchvision_backbone, name), head="fc", gradcam_layer="layer4",
        cmwp_layers={layer: layer for layer in CMWP_LAYERS},
        cascade={"fc": ("fc",), **{stage: (stage,) for stage in stages}, "conv1": ("conv1", "bn1")},
        imagenet_url=url)


def _vgg(name: str, title: str, convs_per_block: tuple[int, ...], url: str) -> Architecture:
    """A torchvision VGG with BatchNorm: ``features`` = per block ``convs_per_block[b]`` times
    (Conv2d, BatchNorm2d, ReLU) then a MaxPool2d (``pool1`` .. ``pool5``); ``avgpool``;
    ``classifier`` = fc6 (0), ReLU, Dropout, fc7 (3), ReLU, Dropout, fc8 (6)."""
    index, blocks, pools = 0, [], []
    for count in convs_per_block:
        block = []
        for _ in range(count):
            block += [f"features.{index}", f"features.{index + 1}"]   # conv, its BatchNorm
            index += 3
        blocks.append(tuple(block))
        pools.append(f"features.{index}")
        index += 1
    last_relu = f"features.{int(pools[-1].split('.')[1]) - 1}"
    fully_connected = {"fc8": ("classifier.6",), "fc7": ("classifier.3",), "fc6": ("classifier.0",)}
    convolutional = {f"conv{b}": blocks[b - 1] for b in range(len(blocks), 0, -1)}
    return Architecture(
        name=name, title=title, origin=f"torchvision.models.{name}",
        build=functools.partial(torchvision_backbone, name), head="classifier.6",
        gradcam_layer=last_relu, cmwp_layers=dict(zip(CMWP_LAYERS, pools[1:])),
        cascade={**fully_connected, **convolutional}, imagenet_url=url)


def resnet18() -> Architecture:
    """torchvision's ResNet18 (BasicBlocks), the paper's model."""
    return _resnet("resnet18", "ResNet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth")


def resnet50() -> Architecture:
    """torchvision's ResNet50 (Bottleneck blocks)."""
    return _resnet("resnet50", "ResNet50", "https://download.pytorch.org/models/resnet50-0676ba61.pth")


def vgg16_bn() -> Architecture:
    """torchvision's VGG16 with BatchNorm (configuration D: 2, 2, 3, 3, 3 convolutions)."""
    return _vgg("vgg16_bn", "VGG16-BN", (2, 2, 3, 3, 3),
                "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth")


def vgg19_bn() -> Architecture:
    """torchvision's VGG19 with BatchNorm (configuration E: 2, 2, 4, 4, 4 convolutions)."""
    return _vgg("vgg19_bn", "VGG19-BN", (2, 2, 4, 4, 4),
                "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth")


def architecture(name: str, config: Mapping | None = None) -> Architecture:
    """The description of the registered architecture ``name`` (``config`` adds its
    ``plugins.models``); a :class:`ConfigError` when it is unknown or its function does not
    return an :class:`Architecture`."""
    description = model_function(name, config)()
    if not isinstance(description, Architecture):
        raise ConfigError(f"plugins.models.{name}: returned {type(description).__name__}, "
                          "not an xaipipe.architectures.Architecture")
    if description.name != name:
        raise ConfigError(f"plugins.models.{name}: its Architecture is named "
                          f"{description.name!r}; give it name={name!r}")
    return description


def configured_architecture(config: Mapping) -> Architecture:
    """The description of ``config['model']['arch']``."""
    return architecture(config["model"]["arch"], config)
