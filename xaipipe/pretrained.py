"""Where a pretrained start's weights must be, checked before any job runs.

``train.pretrained`` (and any ``train_overrides.<variant>.pretrained``) is ``none``,
``imagenet`` (torchvision's ResNet18 ``IMAGENET1K_V1``, read from the local torch hub cache:
this pipeline never downloads at run time) or the path of a weights file. A missing file is a
:class:`ConfigError` at config validation -- in the Snakefile and in every stage script --
so a run without the weights stops before the data stages, naming the file and the fix,
instead of failing in the train stage after them.

The torch hub directory is computed as ``torch.hub.get_dir`` does (``$TORCH_HOME``, else
``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``, then ``hub``) without importing torch,
so validating a config stays fast; a test checks both agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from xaipipe.errors import ConfigError

IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
"""torchvision's ``ResNet18_Weights.IMAGENET1K_V1.url`` (a test checks it)."""


def hub_dir() -> Path:
    """``torch.hub.get_dir()``, computed without importing torch."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(os.path.expanduser(torch_home)) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(cache)) / "torch" / "hub"


def imagenet_weights_file() -> Path:
    """Where torchvision keeps the ImageNet ResNet18 weights it would download."""
    return hub_dir() / "checkpoints" / os.path.basename(IMAGENET_URL)


def weights_file(pretrained: str) -> Path | None:
    """The file ``pretrained`` needs (``None`` for ``none``); a :class:`ConfigError` naming the
    file and the offline fix when it is not there."""
    if pretrained == "none":
        return None
    if pretrained == "imagenet":
        path = imagenet_weights_file()
        if not path.is_file():
            raise ConfigError(
                f"train.pretrained: imagenet needs torchvision's ResNet18 weights at {path} "
                "(this pipeline never downloads at run time). Copy "
                f"{os.path.basename(IMAGENET_URL)} from {IMAGENET_URL.rsplit('/', 1)[0]}/ there "
                "(or set TORCH_HOME to a directory whose hub/checkpoints/ holds it), or set "
                "train.pretrained to the path of a local weights file, or to none")
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise ConfigError(f"train.pretrained: weights file {path} does not exist; give an "
                          "existing ResNet18 state dict, 'imagenet' or 'none'")
    return path


def check_pretrained(config: Mapping) -> None:
    """:func:`weights_file` of ``train.pretrained`` and every variant override of it."""
    weights_file(config["train"]["pretrained"])
    for variant, overrides in config["train_overrides"].items():
        if "pretrained" in overrides:
            try:
                weights_file(overrides["pretrained"])
            except ConfigError as exc:
                raise ConfigError(f"train_overrides.{variant}: {exc}") from exc
