"""One registry per axis: training variants, attribution methods and model architectures,
built in or plugged in by import path (``docs/extending.md``).

Every name the pipeline knows comes from here: the config check (:func:`check_names`), the
Snakefile's wildcard constraints, the stage scripts' ``--variant`` / ``--method`` checks,
the figures and the report. A registry maps a name to ``"package.module:function"``; the
function is imported only when a stage calls it, so validating a config stays light.

Plug-ins are config::

    plugins:
      path: ["."]                       # directories put first on sys.path (default: the cwd)
      variants: {blur: "my_pkg.bg:blur_background"}
      methods: {grad_x_input: "my_pkg.attr:gradient_times_input"}
      models: {my_net: "my_pkg.nets:my_net"}

with the signatures below. A plug-in name must not shadow a built-in one.

**Variant** (``xaipipe.data.variants``)::

    def treat(images, masks, ids, *, seed, settings) -> images or (images, treated)
        # images: uint8 N x 3 x H x W (RGB), masks: uint8 N x H x W (1 = object, outlines
        # included), ids: the N image ids (seed per-image randomness with them), seed: the
        # config seed, settings: the config's ``variant`` section. Returns uint8 N x 3 x H x W,
        # optionally with a boolean per row: which images it treated (default: those changed).
        # Called on the train split and on val (-> val_matched); the unmodified val split is
        # always kept beside it.

**Attribution method** (``xaipipe.explain.attribution``)::

    def explain(model, images, targets, *, settings, seed, first_index, masks, ids) -> maps
        # model: the classifier (eval mode, normalisation inside, non-inplace ReLUs, frozen),
        # images: float N x 3 x H x W in [0, 1] on the model's device, targets: N class
        # indices, settings: the ``explain`` section, seed: this (variant, method)'s seed,
        # first_index: the row of images[0] in its split (so maps do not depend on batching),
        # masks: N x H x W object masks, ids: the N image ids. Returns float N x H x W
        # (one value per pixel; higher = more relevant), on the images' device.

**Model architecture** (``model.arch``; :mod:`xaipipe.architectures`)::

    def describe() -> xaipipe.architectures.Architecture
        # name (= the registered name), how to build the backbone for num_classes, and the
        # module paths of its classification head, Grad-CAM layer, c-MWP layers and sanity
        # cascade; see the built-ins there.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from xaipipe.errors import ConfigError

BUILTIN_VARIANTS = {
    "standard": "xaipipe.data.variants:standard_variant",
    "black": "xaipipe.data.variants:black_variant",
    "noise": "xaipipe.data.variants:noise_variant",
    "mixed": "xaipipe.data.variants:mixed_variant",
}
"""The paper's four training variants (Nielsen et al. §IV)."""

BUILTIN_METHODS = {
    "gradient": "xaipipe.explain.attribution:gradient",
    "integrated_gradients": "xaipipe.explain.attribution:integrated_gradients",
    "smoothgrad": "xaipipe.explain.attribution:smoothgrad",
    "smoothgrad_sq": "xaipipe.explain.attribution:smoothgrad_sq",
    "vargrad": "xaipipe.explain.attribution:vargrad",
    "guided_backprop": "xaipipe.explain.attribution:guided_backprop",
    "gradcam": "xaipipe.explain.attribution:gradcam",
    "occlusion": "xaipipe.explain.attribution:occlusion",
    "cmwp": "xaipipe.explain.attribution:cmwp",
    "random": "xaipipe.explain.attribution:random_baseline",
    "oracle_object": "xaipipe.explain.oracle:object_map",
    "oracle_background": "xaipipe.explain.oracle:background_map",
}
"""Captum's methods, c-MWP, the random baseline and the two oracle maps."""

BUILTIN_MODELS = {
    "resnet18": "xaipipe.architectures:resnet18",
    "resnet50": "xaipipe.architectures:resnet50",
    "vgg16_bn": "xaipipe.architectures:vgg16_bn",
    "vgg19_bn": "xaipipe.architectures:vgg19_bn",
}
"""torchvision architectures for ``model.arch``: the paper's ResNet18 (the default), ResNet50,
and VGG16/VGG19 with BatchNorm."""

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
AXES = {"variants": BUILTIN_VARIANTS, "methods": BUILTIN_METHODS, "models": BUILTIN_MODELS}


def plugins(config: Mapping | None, axis: str) -> dict[str, str]:
    """name -> import path of the plug-ins of ``axis`` (``variants``, ``methods``, ``models``)."""
    return dict(_plugin_section(config, axis))


def _plugin_section(config: Mapping | None, axis: str) -> Mapping:
    return ((config or {}).get("plugins") or {}).get(axis) or {}


def variants(config: Mapping | None = None) -> dict[str, str]:
    """name -> import path of every training variant: built-ins, then ``plugins.variants``."""
    return {**BUILTIN_VARIANTS, **plugins(config, "variants")}


def methods(config: Mapping | None = None) -> dict[str, str]:
    """name -> import path of every attribution method: built-ins, then ``plugins.methods``."""
    return {**BUILTIN_METHODS, **plugins(config, "methods")}


def models(config: Mapping | None = None) -> dict[str, str]:
    """name -> import path of every model architecture: built-ins, then ``plugins.models``."""
    return {**BUILTIN_MODELS, **plugins(config, "models")}


def add_plugin_path(config: Mapping | None) -> None:
    for directory in ((config or {}).get("plugins") or {}).get("path", ["."]):
        resolved = str(Path(directory).resolve())
        if resolved not in sys.path:
            sys.path.insert(0, resolved)


def resolve(target: str, config: Mapping | None = None, what: str = "plug-in") -> Callable[..., Any]:
    """Import ``"package.module:function"`` (``plugins.path`` first on ``sys.path``); a
    :class:`ConfigError` naming ``what`` and the fix when it cannot be imported."""
    if not TARGET.match(target):
        raise ConfigError(f"{what}: {target!r} is not 'package.module:function'")
    module_name, attribute = target.split(":")
    add_plugin_path(config)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {module_name!r} ({exc}); install it or add its "
                          "directory to plugins.path") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"{what}: {module_name!r} has no function {attribute!r}")
    return function


def _function(axis: str, what: str, name: str, config: Mapping | None) -> Callable[..., Any]:
    """Import ``name``'s function, reading only ``plugins.<axis>.<name>`` of the config (a
    stage depends on its own plug-in's import path, not on every other plug-in's)."""
    target = _plugin_section(config, axis).get(name) or AXES[axis].get(name)
    if target is None:
        known = {**AXES[axis], **plugins(config, axis)}
        raise ConfigError(f"unknown {what} {name!r}; registered: {', '.join(known)} "
                          f"(add your own under plugins.{axis})")
    return resolve(target, config, f"plugins.{axis}.{name}")


def variant_function(name: str, config: Mapping | None = None) -> Callable[..., Any]:
    """The treatment function of variant ``name``."""
    return _function("variants", "variant", name, config)


def method_function(name: str, config: Mapping | None = None) -> Callable[..., Any]:
    """The attribution function of method ``name``."""
    return _function("methods", "attribution method", name, config)


def model_function(name: str, config: Mapping | None = None) -> Callable[..., Any]:
    """The function returning the :class:`xaipipe.architectures.Architecture` of ``name``."""
    return _function("models", "model architecture", name, config)


def _used(config: Mapping) -> dict[str, list[tuple[str, str]]]:
    """(key path, name) of every variant, method and model the config refers to."""
    variant_refs = [(f"variants.{i}", v) for i, v in enumerate(config["variants"])]
    variant_refs += [(f"metric_validation.variants.{i}", v)
                     for i, v in enumerate(config["metric_validation"]["variants"])]
    variant_refs += [(f"train_overrides.{v}", v) for v in config["train_overrides"]]
    method_refs = [(f"{section}.methods.{i}", m) for section in ("explain", "roar", "sanity")
                   for i, m in enumerate(config[section]["methods"])]
    method_refs += [(f"confidence_gain.{key}.{m}", m)
                    for key in ("heatmap_dilations", "agreement_dilations")
                    for m in config["confidence_gain"][key]]
    return {"variants": variant_refs, "methods": method_refs,
            "models": [("model.arch", config["model"]["arch"])]}


def check_names(config: Mapping) -> list[str]:
    """Problems (``"  key.path: message"``, the schema errors' format) with the config's
    variant, method and model names and plug-ins: unknown names, plug-ins that shadow a
    built-in or do not import. Empty when all is well."""
    problems = []
    for axis, builtins in AXES.items():
        for name, target in plugins(config, axis).items():
            where = f"plugins.{axis}.{name}"
            if name in builtins:
                problems.append(f"  {where}: {name!r} is a built-in {axis[:-1]}; choose another name")
            elif not NAME.match(name):
                problems.append(f"  {where}: names are lower-case identifiers ({NAME.pattern})")
            else:
                try:
                    resolve(target, config, where)
                except ConfigError as exc:
                    problems.append(f"  {where}: {exc}")
    known = {"variants": variants(config), "methods": methods(config), "models": models(config)}
    for axis, refs in _used(config).items():
        for where, name in refs:
            if name not in known[axis]:
                problems.append(f"  {where}: {name!r} is not a registered {axis[:-1]} "
                                f"({', '.join(known[axis])}; plug-ins go under plugins.{axis})")
    return problems
