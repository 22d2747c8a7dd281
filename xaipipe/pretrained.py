"""Where a pretrained start's weights must be, checked before any job runs.

``train.pretrained`` (and any ``train_overrides.<variant>.pretrained``) is ``none``,
``imagenet`` (torchvision's ``IMAGENET1K_V1`` weights of ``model.arch``, e.g.
``resnet18-f37072fd.pth``, read from the local torch hub cache: this pipeline never
downloads at run time) or the path of a weights file. A missing file is a
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

from xaipipe.architectures import IMAGENET_WEIGHTS, Architecture, configured_architecture
from xaipipe.errors import ConfigError


def hub_dir() -> Path:
    """``torch.hub.get_dir()``, computed without importing torch."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(os.path.expanduser(torch_home)) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(cache)) / "torch" / "hub"


def imagenet_weights_file(arch: Architecture) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` it would download."""
    if arch.imagenet_url is None:
        raise ConfigError(f"train.pretrained: imagenet has no weights for model.arch {arch.name}; "
                          "set train.pretrained to the path of a weights file, or to none")
    return hub_dir() / "checkpoints" / os.path.basename(arch.imagenet_url)


def weights_file(pretrained: str, arch: Architecture) -> Path | None:
    """The file ``pretrained`` needs for ``arch`` (``None`` for ``none``); a
    :class:`ConfigError` naming the file and the offline fix when it is not there."""
    if pretrained == "none":
        return None
    if pretrained == "imagenet":
        path = imagenet_weights_file(arch)
        if not path.is_file():
            url = arch.imagenet_url
            raise ConfigError(
                f"train.pretrained: imagenet needs torchvision's {arch.title} {IMAGENET_WEIGHTS} "
                f"weights at {path} (this pipeline never downloads at run time). Copy "
                f"{os.path.basename(url)} from {url.rsplit('/', 1)[0]}/ there "
                "(or set TORCH_HOME to a directory whose hub/checkpoints/ holds it), or set "
                "train.pretrained to the path of a local weights file, or to none")
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise ConfigError(f"train.pretrained: weights file {path} does not exist; give an "
                          f"existing {arch.title} state dict, 'imagenet' or 'none'")
    return path


def check_pretrained(config: Mapping) -> None:
    """:func:`weights_file` of ``train.pretrained`` and every variant override of it, for the
    configured ``model.arch``."""
    arch = configured_architecture(config)
    weights_file(config["train"]["pretrained"], arch)
    for variant, overrides in config["train_overrides"].items():
        if "pretrained" in overrides:
            try:
                weights_file(overrides["pretrained"], arch)
            except ConfigError as exc:
                raise ConfigError(f"train_overrides.{variant}: {exc}") from exc
