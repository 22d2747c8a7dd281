"""Contrastive excitation backprop (c-MWP), Zhang et al. 2016, "Top-down neural attention by
excitation backprop" (used as the best importance function by the SCG/CCG paper, section 3).

Captum has no excitation backprop, so it is hand-written here.

Excitation backprop (EB, Zhang et al. Eq. 3-6) propagates a *marginal winning probability*
(MWP) top-down: for an excitatory layer with non-negative inputs ``a_j`` (post-ReLU
activations), positive weights ``W+`` and outputs ``i``,

    P(a_j) = sum_i  a_j * W+_ij / Z_i * P(i),      Z_i = sum_j' a_j' * W+_ij'        (Eq. 5-6)

i.e. each output hands its probability to its inputs in proportion to their excitatory
contribution; biases and negative weights are ignored. :func:`excite` computes one such step
for any positive linear map with autograd: ``P(a) = a * d/da sum(z(a) * stop_grad(P / z))``.
ReLU is a pass-through (a dead unit has ``a = 0`` and so receives nothing), max pooling hands
everything to the winner and average pooling is itself a positive linear map.

The *contrastive* MWP (Zhang et al. section 3.2) subtracts the MWP of the "dual" output unit
-- the target's classifier row with negated weights -- from the target's MWP. EB is linear in
the top-level probabilities once the activations are fixed, so subtracting at the classifier
input and propagating the difference down (what Zhang et al. do) equals subtracting the two
maps at the saliency layer. The map is the positive part of the difference, summed over
channels at the saliency layer (``explain.cmwp_layer``, the backbone's output at stride 4, 8,
16 or 32; the SCG/CCG paper uses GoogLeNet's ``pool2``, stride 8, whose ResNet counterpart is
``layer2`` and VGG's ``pool3``) and bilinearly upsampled.

The backbone is walked as a chain: its modules in definition order, ``nn.Sequential``
containers opened up (torchvision's ResNets and VGGs define their modules in forward order;
the walk checks that it reproduces the backbone's logits). Each link has its rule:

* ``Conv2d`` (with the ``BatchNorm2d`` after it) and ``Linear``: the excitatory layer above,
  ``W+`` of the layer (a ``Linear`` after a 4-D tensor flattens it first, as the torchvision
  models do before their classifier);
* ``ReLU`` and ``Dropout`` (eval mode: the identity): pass-through;
* max / average / adaptive average pooling: :func:`excite` on the pooling itself;
* ResNet blocks (``BasicBlock``, ``Bottleneck``): see below.

The last link is the classification head, where the (contrastive) top-down signal starts.

Simplifications (documented in docs/explanations.md):

* **BatchNorm** is folded into the convolution before it (eval statistics,
  :func:`torch.nn.utils.fusion.fuse_conv_bn_weights`), so ``W+`` is taken of the effective
  conv+BN weights -- the affine layer the network actually computes.
* **Skip connections**: a block output ``relu(convK(h) + shortcut(x))`` (K = 2 in a
  BasicBlock, 3 in a Bottleneck) is treated as one excitatory layer with two inputs, the conv
  branch ``h`` through ``WK+`` and the block input ``x`` through the identity (weight 1) or
  the folded downsample conv's ``W+``; both share one normaliser ``Z``. The probability
  reaching ``h`` then continues down the branch (``conv(K-1)`` .. ``conv1``, each an
  excitatory layer on the ReLU output below it) to ``x`` and is added to the probability
  ``x`` got through the shortcut. Zhang et al. define EB for plain feed-forward nets only;
  this is the natural extension, not a rule from the paper.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.resnet import BasicBlock, Bottleneck

from xaipipe.errors import ConfigError

_TINY = 1e-12


def excite(inputs: Sequence[torch.Tensor], z_fn: Callable[..., torch.Tensor],
           p_out: torch.Tensor) -> list[torch.Tensor]:
    """One excitation-backprop step (Zhang et al. Eq. 5-6): hand ``p_out`` down to ``inputs``.

    ``z_fn(*inputs)`` must be the layer's positive part: non-negative weights, no bias (e.g.
    ``lambda a: F.linear(a, weight.clamp(min=0))``). Returns one probability tensor per input,
    shaped like it. Outputs with ``Z = 0`` pass nothing on.
    """
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    with torch.enable_grad():
        z = z_fn(*leaves)
        scale = torch.where(z > _TINY, p_out / z.clamp(min=_TINY), torch.zeros_like(z))
        grads = torch.autograd.grad((z * scale.detach()).sum(), leaves)
    return [x.detach() * g for x, g in zip(leaves, grads)]


def classifier_mwp(features: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   *, contrastive: bool) -> torch.Tensor:
    """MWP of the classifier inputs ``features`` (N x D, non-negative) given the target unit
    (P = 1 at the top). With ``contrastive``, the dual unit's MWP (weights ``-w_target``) is
    subtracted (Zhang et al. section 3.2); the result is signed."""
    rows = weight[targets]                                  # N x D, the target units' weights
    ones = torch.ones(len(features), 1, device=features.device, dtype=features.dtype)

    def unit_mwp(w: torch.Tensor) -> torch.Tensor:
        positive = w.clamp(min=0)
        return excite([features], lambda a: (a * positive).sum(dim=1, keepdim=True), ones)[0]

    p = unit_mwp(rows)
    return p - unit_mwp(-rows) if contrastive else p


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``W+`` of conv followed by eval-mode BN (if any), as a bias-free positive conv function."""
    weight = conv.weight
    if bn is not None:
        weight, _ = fuse_conv_bn_weights(conv.weight, None, bn.running_mean, bn.running_var,
                                         bn.eps, bn.weight, bn.bias)
    positive = weight.detach().clamp(min=0)
    return lambda a: F.conv2d(a, positive, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _branch(block: BasicBlock | Bottleneck) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """The (conv, bn) pairs of a block's conv branch: conv1/bn1, conv2/bn2 (, conv3/bn3)."""
    pairs, k = [], 1
    while hasattr(block, f"conv{k}"):
        pairs.append((getattr(block, f"conv{k}"), getattr(block, f"bn{k}")))
        k += 1
    return pairs


def _block_mwp(block: BasicBlock | Bottleneck, x: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """MWP of a ResNet block's input ``x`` given the MWP of its output (see module docstring)."""
    pairs = _branch(block)
    hidden = [x]                                   # the ReLU outputs inside the branch
    for conv, bn in pairs[:-1]:
        hidden.append(F.relu(bn(conv(hidden[-1]))))
    last = _folded_conv(*pairs[-1])
    shortcut = (_folded_conv(block.downsample[0], block.downsample[1])
                if block.downsample is not None else (lambda a: a))
    p_h, p_x_short = excite([hidden[-1], x], lambda h_, x_: last(h_) + shortcut(x_), p_out)
    for (conv, bn), below in zip(reversed(pairs[:-1]), reversed(hidden[:-1])):
        (p_h,) = excite([below], _folded_conv(conv, bn), p_h)
    return p_x_short + p_h


_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Identity)
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _chain(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of the backbone's modules in definition order, Sequentials opened."""
    links = []
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            links += _chain(child, f"{prefix}{name}.")
        else:
            links.append((f"{prefix}{name}", child))
    return links


def _links(backbone: nn.Module) -> list[tuple[str, tuple[nn.Module, ...]]]:
    """The chain with every BatchNorm2d joined to the Conv2d before it; a
    :class:`ConfigError` for a module c-MWP has no rule for."""
    links: list[tuple[str, tuple[nn.Module, ...]]] = []
    for path, module in _chain(backbone):
        if isinstance(module, nn.BatchNorm2d) and links and isinstance(links[-1][1][-1], nn.Conv2d):
            links[-1] = (path, (*links[-1][1], module))
        elif isinstance(module, (nn.Conv2d, nn.Linear, BasicBlock, Bottleneck, *_PASS_THROUGH, *_POOLING)):
            links.append((path, (module,)))
        else:
            raise ConfigError(f"c-MWP has no excitation rule for {path} ({type(module).__name__}); "
                              "it supports Conv2d, BatchNorm2d, Linear, ReLU, Dropout, pooling and "
                              "torchvision's ResNet blocks")
    return links


def _forward(modules: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor:
    if isinstance(modules[0], nn.Linear) and x.dim() > 2:
        x = torch.flatten(x, 1)
    for module in modules:
        x = module(x)
    return x


def _link_mwp(modules: tuple[nn.Module, ...], x: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """MWP of a link's input ``x`` given the MWP of its output."""
    first = modules[0]
    if isinstance(first, _PASS_THROUGH):
        return p_out
    if isinstance(first, (BasicBlock, Bottleneck)):
        return _block_mwp(first, x, p_out)
    if isinstance(first, nn.Linear):
        positive = first.weight.detach().clamp(min=0)
        (p,) = excite([torch.flatten(x, 1)], lambda a: F.linear(a, positive), p_out)
        return p.view_as(x)
    if isinstance(first, nn.Conv2d):
        (p,) = excite([x], _folded_conv(first, modules[1] if len(modules) > 1 else None), p_out)
        return p
    (p,) = excite([x], first, p_out)            # pooling: itself a positive map (max: winner)
    return p


def _saliency_end(links: Sequence[tuple[str, tuple]], path: str) -> int:
    """Index of the first link above the module ``path`` (its output is the saliency layer)."""
    inside = [i for i, (p, _) in enumerate(links) if p == path or p.startswith(f"{path}.")]
    if not inside:
        raise ConfigError(f"c-MWP layer {path!r} is not a module of the backbone")
    return inside[-1] + 1


@torch.no_grad()
def backbone_mwp(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str,
                 *, contrastive: bool) -> torch.Tensor:
    """MWP (or signed contrastive MWP) at ``explain.cmwp_layer`` ``layer`` (N x C x h x w) of
    an :class:`xaipipe.models.Classifier` for [0, 1] ``images``."""
    arch, backbone = model.arch, model.backbone
    links = _links(backbone)
    if links[-1][0] != arch.head or not isinstance(links[-1][1][0], nn.Linear):
        raise ConfigError(f"c-MWP needs the backbone's last module to be its head {arch.head!r} "
                          f"(nn.Linear); model.arch {arch.name} ends with {links[-1][0]!r}")
    end = _saliency_end(links, arch.cmwp_layer(layer))
    x = model.normalize(images)
    for _, modules in links[:end]:
        x = _forward(modules, x)
    inputs = []
    for _, modules in links[end:]:
        inputs.append(x)
        x = _forward(modules, x)
    expected = backbone(model.normalize(images))
    if not torch.allclose(x, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()) + 1e-6):
        raise ConfigError(f"c-MWP walks the modules of model.arch {arch.name} in definition order, "
                          "but that does not reproduce its forward pass; c-MWP supports "
                          "chain-like backbones (torchvision's ResNets and VGGs)")
    head = links[-1][1][0]
    p = classifier_mwp(torch.flatten(inputs[-1], 1), head.weight, targets, contrastive=contrastive)
    p = p.view_as(inputs[-1])
    for (_, modules), below in zip(reversed(links[end:-1]), reversed(inputs[:-1])):
        p = _link_mwp(modules, below, p)
    return p


def cmwp_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
    """c-MWP heat maps (float32 N x H x W) for an :class:`xaipipe.models.Classifier` and
    [0, 1] images: positive part of the contrastive MWP at ``layer`` (``explain.cmwp_layer``),
    summed over channels, bilinearly upsampled to the image size."""
    p = backbone_mwp(model, images, targets, layer, contrastive=True)
    heat = p.sum(dim=1, keepdim=True).clamp(min=0)
    heat = F.interpolate(heat, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return heat[:, 0].float()
