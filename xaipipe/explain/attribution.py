"""Per-pixel attribution maps for a classifier: Captum methods, c-MWP and a random baseline.

Methods (``explain.methods``) and where they come from:

* ``gradient`` -- Captum ``Saliency`` (Simonyan et al. 2014), the raw input gradient of the
  target logit.
* ``integrated_gradients`` -- Captum ``IntegratedGradients`` (Sundararajan et al. 2017) from a
  black baseline (zeros in pixel space), ``ig_steps`` steps, ``internal_batch_size`` bounding
  memory.
* ``smoothgrad`` / ``smoothgrad_sq`` / ``vargrad`` -- Captum ``NoiseTunnel`` over the gradient
  (Smilkov et al. 2017; Hooker et al. 2019 ROAR section 3: SG, SG-SQ, VarGrad with 15 noisy
  samples). ``noise_tunnel_stdev`` is the Gaussian sigma in [0, 1] pixel units, i.e. a fraction
  of the input range (x_max - x_min = 1), as Smilkov et al. define the noise level.
* ``guided_backprop`` -- Captum ``GuidedBackprop`` (Springenberg et al. 2015) on a copy of the
  model whose ReLUs are not in-place (see :func:`hookable_copy`).
* ``gradcam`` -- Captum ``LayerGradCam`` (Selvaraju et al. 2017) on the architecture's last
  convolutional layer (``Architecture.gradcam_layer``: ResNet ``layer4``; VGG the last conv
  block's rectified output, before the final max-pool), with ReLU, upsampled bilinearly to the
  input with ``LayerAttribution.interpolate``. Selvaraju et al. (section 3): "Grad-CAM uses
  the gradient information flowing into the last convolutional layer of the CNN to assign
  importance values to each neuron for a particular decision of interest".
* ``occlusion`` -- Captum ``Occlusion`` (Zeiler & Fergus 2014): a black square of
  ``occlusion_patch`` px at 224 px (scaled to the resolution), stride half the window; the map
  is the drop of the target logit.
* ``cmwp`` -- contrastive excitation backprop, :mod:`xaipipe.explain.cmwp` (hand-written).
* ``random`` -- uniform noise, seeded per (seed, image row): the ROAR random baseline.
* ``oracle_object`` / ``oracle_background`` -- the ground-truth object mask and its
  complement with seeded tie noise (:mod:`xaipipe.explain.oracle`), the known-good and
  known-bad explanations that validate every metric (they read the batch's masks and ids).

Each method is a function with the registry's signature (:mod:`xaipipe.registry`), so a
plug-in method (``plugins.methods``) runs through exactly the same code.

Every method returns float32 N x H x W, and the stage stores float32: float16 would push
SmoothGrad² and VarGrad values into subnormals (87 % and 98 % of the values of a measured
case) and merge distinct values, which changes their pixel rankings. Methods that attribute each colour channel
(gradient, IG, the noise tunnels, guided backprop) are reduced over channels by
``explain.channel_reduce`` (``abs_sum`` = sum of absolute values, ``max`` = signed maximum,
``abs_max`` = maximum absolute value; ``sum`` -- signed sum -- is used internally by the sanity
checks). Occlusion, Grad-CAM, c-MWP and random are single-channel already and kept signed.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from captum.attr import (GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam,
                         NoiseTunnel, Occlusion, Saliency)
from torch import nn
from tqdm.auto import tqdm

from xaipipe import paths
from xaipipe.data.store import Split, read_split
from xaipipe.device import claim_job_device
from xaipipe.errors import ConfigError, DataError
from xaipipe.explain.cmwp import cmwp_maps
from xaipipe.io import save_npy
from xaipipe.models import images_to_float, load_model
from xaipipe.registry import method_function
from xaipipe.seeds import named_seed

log = logging.getLogger(__name__)

CHANNEL_REDUCTIONS = ("abs_sum", "max", "abs_max", "sum")


def hookable_copy(model: nn.Module) -> nn.Module:
    """A frozen eval-mode deep copy whose ReLU modules are not in-place.

    torchvision's ResNets use ``nn.ReLU(inplace=True)`` and call one module twice per
    BasicBlock and three times per Bottleneck; its VGGs have one in-place ReLU module per
    layer. Captum's module hooks break on in-place ReLUs (captum issue #156: hooked
    activations get overwritten; #973: ``RuntimeError ... BackwardHookFunctionBackward`` for
    Guided Grad-CAM on a torchvision ResNet; PR #837: in-place modules unsupported by full
    backward hooks), so every method except the random baseline runs on this copy. A reused
    module is fine once it is not in-place: Guided Backprop's hooks act per call (tested
    against a hand-written guided ReLU on every architecture). The copy is returned as is when
    it is already hookable, so calling this per batch is cheap.
    """
    if getattr(model, "_xaipipe_hookable", False):
        return model
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    for param in clone.parameters():
        param.requires_grad_(False)
    clone._xaipipe_hookable = True
    return clone


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """N x C x H x W -> N x H x W by ``how`` (see the module docstring)."""
    if how == "abs_sum":
        return attr.abs().sum(dim=1)
    if how == "max":
        return attr.max(dim=1).values
    if how == "abs_max":
        return attr.abs().max(dim=1).values
    if how == "sum":
        return attr.sum(dim=1)
    raise ConfigError(f"explain.channel_reduce must be one of {CHANNEL_REDUCTIONS}, got {how!r}")


def occlusion_window(resolution: int, patch_at_224: int) -> tuple[int, int]:
    """(window, stride) in pixels: ``patch_at_224`` scaled to ``resolution``, stride = half."""
    window = max(1, round(patch_at_224 * resolution / 224))
    return window, max(1, window // 2)


def random_maps(shape: tuple[int, int, int], seed: int, first_index: int) -> torch.Tensor:
    """Uniform [0, 1) maps; row ``i`` depends only on (seed, first_index + i)."""
    n, h, w = shape
    rows = [np.random.default_rng([seed, first_index + i]).random((h, w), dtype=np.float32)
            for i in range(n)]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(shape)


# --- the built-in methods, each with the registry's signature (xaipipe.registry) ----------

def _grad_input(images: torch.Tensor) -> torch.Tensor:
    return images.detach().clone().requires_grad_(True)


def _chunk(settings: Mapping[str, Any], n: int) -> int:
    """Perturbed copies per forward pass inside IG / noise tunnels / occlusion."""
    return max(1, settings["internal_batch_size"] // max(1, n))


def gradient(model, images, targets, *, settings, **_):
    """Captum ``Saliency``: the input gradient of the target logit, channels reduced."""
    attr = Saliency(model).attribute(_grad_input(images), target=targets, abs=False)
    return reduce_channels(attr.detach().float(), settings["channel_reduce"])


def integrated_gradients(model, images, targets, *, settings, **_):
    """Captum ``IntegratedGradients`` from a black baseline, ``ig_steps`` steps."""
    attr = IntegratedGradients(model).attribute(
        _grad_input(images), baselines=torch.zeros_like(images), target=targets,
        n_steps=settings["ig_steps"], internal_batch_size=settings["internal_batch_size"])
    return reduce_channels(attr.detach().float(), settings["channel_reduce"])


def _noise_tunnel(kind: str):
    def explain(model, images, targets, *, settings, seed, first_index, **_):
        with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
            torch.manual_seed(int(np.random.SeedSequence([seed, first_index]).generate_state(1)[0]))
            attr = NoiseTunnel(Saliency(model)).attribute(
                _grad_input(images), nt_type=kind, nt_samples=settings["noise_tunnel_samples"],
                nt_samples_batch_size=_chunk(settings, len(images)),
                stdevs=float(settings["noise_tunnel_stdev"]), target=targets, abs=False)
        return reduce_channels(attr.detach().float(), settings["channel_reduce"])
    explain.__doc__ = (f"Captum ``NoiseTunnel`` ({kind}) over the gradient, noise seeded by "
                       "(seed, first_index).")
    return explain


smoothgrad = _noise_tunnel("smoothgrad")
smoothgrad_sq = _noise_tunnel("smoothgrad_sq")
vargrad = _noise_tunnel("vargrad")


def guided_backprop(model, images, targets, *, settings, **_):
    """Captum ``GuidedBackprop`` (on the non-inplace-ReLU copy), channels reduced."""
    with warnings.catch_warnings():   # Captum announces its temporary ReLU hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = GuidedBackprop(model).attribute(_grad_input(images), target=targets)
    return reduce_channels(attr.detach().float(), settings["channel_reduce"])


def gradcam(model, images, targets, **_):
    """Captum ``LayerGradCam`` on the architecture's ``gradcam_layer`` with ReLU, upsampled
    bilinearly."""
    h, w = images.shape[2:]
    layer = model.backbone.get_submodule(model.arch.gradcam_layer)
    cam = LayerGradCam(model, layer).attribute(_grad_input(images), target=targets,
                                               relu_attributions=True)
    return LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")[:, 0].detach().float()


def occlusion(model, images, targets, *, settings, **_):
    """Captum ``Occlusion``: a black square of ``occlusion_patch`` px at 224 px, scaled."""
    window, stride = occlusion_window(images.shape[2], settings["occlusion_patch"])
    attr = Occlusion(model).attribute(_grad_input(images), target=targets, baselines=0.0,
                                      sliding_window_shapes=(3, window, window),
                                      strides=(3, stride, stride),
                                      perturbations_per_eval=_chunk(settings, len(images)))
    return attr[:, 0].detach().float()


def cmwp(model, images, targets, *, settings, **_):
    """Contrastive excitation backprop (:mod:`xaipipe.explain.cmwp`)."""
    return cmwp_maps(model, images, targets, settings["cmwp_layer"])


def random_baseline(model, images, targets, *, seed, first_index, **_):
    """Uniform noise seeded per (seed, image row): the ROAR random baseline."""
    n, _, h, w = images.shape
    return random_maps((n, h, w), seed, first_index).to(images.device)


def attribute(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
              settings: Mapping[str, Any], *, seed: int = 0, first_index: int = 0,
              masks: torch.Tensor | None = None, ids: Sequence[str] | None = None,
              config: Mapping | None = None) -> torch.Tensor:
    """Attribution maps (float32 N x H x W, on the images' device) of ``targets`` (N class
    indices) for [0, 1] ``images`` (N x 3 x H x W, on the model's device), by the registered
    method ``method`` (:mod:`xaipipe.registry`; ``config`` adds its plug-ins).

    ``settings`` is the ``explain`` config section. ``seed`` drives the noise of the noise
    tunnels and the random baseline; ``first_index`` is the row of ``images[0]`` in its split,
    so random maps do not depend on the batch size; ``masks`` and ``ids`` (the oracle maps
    need them) default to empty masks and row numbers.
    """
    explain = method_function(method, config)
    n, _, h, w = images.shape
    masks = masks if masks is not None else torch.zeros(n, h, w, dtype=torch.uint8)
    ids = list(ids) if ids is not None else [str(first_index + i) for i in range(n)]
    maps = explain(hookable_copy(model) if model is not None else None, images,
                   targets.to(images.device), settings=settings, seed=seed,
                   first_index=first_index, masks=masks.to(images.device), ids=ids)
    if tuple(maps.shape) != (n, h, w):
        raise ConfigError(f"attribution method {method!r} returned maps of shape "
                          f"{tuple(maps.shape)} for {n} images of {h}x{w}; it must return "
                          "N x H x W (see xaipipe.registry)")
    return maps.float()


def choose_targets(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, target: str) -> torch.Tensor:
    """The class each map explains: the ground-truth ``label`` or the model's ``predicted`` class."""
    if target == "label":
        return labels
    if target == "predicted":
        with torch.no_grad():
            return model(images).argmax(dim=1)
    raise ConfigError(f"explain.target must be label or predicted, got {target!r}")


def attribute_split(model: nn.Module | None, split: Split, method: str,
                    settings: Mapping[str, Any], *, device: torch.device, seed: int,
                    desc: str = "", config: Mapping | None = None) -> np.ndarray:
    """Maps for every row of a tensor-store split: float32 N x H x W, row order kept.

    Batches of ``settings['batch_size']`` images (with their masks and ids) are moved to
    ``device`` and attributed there by :func:`attribute` (``config`` adds its plug-ins). The
    oracle maps need no model (``model=None``).
    """
    model = hookable_copy(model.to(device)) if model is not None else None
    n, _, h, w = split.images.shape
    ids = split.ids if len(split.ids) == n else [str(i) for i in range(n)]
    out = np.empty((n, h, w), dtype=np.float32)
    batch = settings["batch_size"]
    for start in tqdm(range(0, n, batch), desc=desc or f"attribute {method}", unit="batch",
                      disable=n <= batch):
        images = images_to_float(torch.from_numpy(np.array(split.images[start:start + batch])).to(device))
        labels = torch.from_numpy(np.array(split.labels[start:start + batch])).to(device)
        masks = torch.from_numpy(np.array(split.masks[start:start + batch])).to(device)
        targets = choose_targets(model, images, labels, settings["target"])
        maps = attribute(model, images, targets, method, settings, seed=seed, first_index=start,
                         masks=masks, ids=ids[start:start + batch], config=config)
        out[start:start + len(images)] = maps.cpu().numpy()
    return out


def check_split_fits_model(split: Split, meta: Mapping[str, Any], where: str) -> None:
    """Raise :class:`DataError` if the split's labels do not fit the model's classes."""
    num_classes = int(meta["num_classes"])
    if len(split) and int(split.labels.max()) >= num_classes:
        raise DataError(f"{where}: labels go up to {int(split.labels.max())} but the model has "
                        f"{num_classes} classes; retrain the model on this store")


def run_attribute_stage(config: Mapping[str, Any], variant: str, method: str, *,
                        replicate: int) -> None:
    """Stage ``attribute``: maps of ``method`` for replicate ``replicate`` of ``variant``'s
    model on every split in ``explain.splits``, each written to ``paths.attribution_map``
    (float32 N x H x W)."""
    settings = config["explain"]
    weights = paths.model_weights(config, variant, replicate=replicate)
    model, meta = load_model(weights, config=config)
    splits = {}
    for name in settings["splits"]:
        directory = paths.variant_split_dir(config, variant, name)
        splits[name] = read_split(directory)
        check_split_fits_model(splits[name], meta, f"{directory} vs {weights}")
    seed = named_seed(config, f"attribute/{variant}/rep{replicate}/{method}")
    with claim_job_device(config) as device:
        for name, split in splits.items():
            maps = attribute_split(model, split, method, settings, device=device, seed=seed,
                                   config=config,
                                   desc=f"{method} {variant}/rep{replicate}/{name}")
            target = paths.attribution_map(config, variant, method, name, replicate=replicate)
            save_npy(target, maps)
            log.info("wrote %s (%d maps)", target, len(maps))
