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
channels at the saliency layer (``explain.cmwp_layer``; the SCG/CCG paper uses GoogLeNet's
``pool2``, stride 8, whose ResNet18 counterpart is ``layer2``) and bilinearly upsampled.

Simplifications for torchvision's ResNet (documented in docs/explanations.md):

* **BatchNorm** is folded into the convolution before it (eval statistics,
  :func:`torch.nn.utils.fusion.fuse_conv_bn_weights`), so ``W+`` is taken of the effective
  conv+BN weights -- the affine layer the network actually computes.
* **Skip connections**: a block output ``relu(conv2(h) + shortcut(x))`` is treated as one
  excitatory layer with two inputs, the conv branch ``h`` through ``W2+`` and the block input
  ``x`` through the identity (weight 1) or the folded downsample conv's ``W+``; both share one
  normaliser ``Z``. The probability reaching ``h`` then continues through ``conv1`` to ``x``
  and is added to the probability ``x`` got through the shortcut. Zhang et al. define EB for
  plain feed-forward nets only; this is the natural extension, not a rule from the paper.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.resnet import BasicBlock

LAYERS = ("layer1", "layer2", "layer3", "layer4")
"""ResNet stages whose output can be the c-MWP saliency layer."""

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


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """``W+`` of conv followed by eval-mode BN, as a bias-free positive conv function."""
    weight, _ = fuse_conv_bn_weights(conv.weight, None, bn.running_mean, bn.running_var,
                                     bn.eps, bn.weight, bn.bias)
    positive = weight.detach().clamp(min=0)
    return lambda a: F.conv2d(a, positive, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _block_mwp(block: BasicBlock, x: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """MWP of a BasicBlock's input ``x`` given the MWP of its output (see module docstring)."""
    conv1 = _folded_conv(block.conv1, block.bn1)
    conv2 = _folded_conv(block.conv2, block.bn2)
    shortcut = (_folded_conv(block.downsample[0], block.downsample[1])
                if block.downsample is not None else (lambda a: a))
    h = F.relu(block.bn1(block.conv1(x)))
    p_h, p_x_short = excite([h, x], lambda h_, x_: conv2(h_) + shortcut(x_), p_out)
    (p_x_conv,) = excite([x], conv1, p_h)
    return p_x_short + p_x_conv


@torch.no_grad()
def resnet_mwp(backbone: nn.Module, images_normalised: torch.Tensor, targets: torch.Tensor,
               layer: str, *, contrastive: bool) -> torch.Tensor:
    """MWP (or signed contrastive MWP) at the output of ``backbone.<layer>`` (N x C x h x w)
    for a torchvision ResNet with BasicBlocks, given already-normalised images."""
    if layer not in LAYERS:
        raise ValueError(f"c-MWP layer must be one of {LAYERS}, got {layer!r}")
    b = backbone
    x = b.maxpool(b.relu(b.bn1(b.conv1(images_normalised))))
    stages = [getattr(b, name) for name in LAYERS]
    start = LAYERS.index(layer) + 1
    for stage in stages[:start]:
        x = stage(x)
    block_inputs = []
    for stage in stages[start:]:
        for block in stage:
            block_inputs.append((block, x))
            x = block(x)
    pooled = torch.flatten(b.avgpool(x), 1)
    p = classifier_mwp(pooled, b.fc.weight, targets, contrastive=contrastive)
    (p,) = excite([x], lambda a: torch.flatten(b.avgpool(a), 1), p)
    for block, block_input in reversed(block_inputs):
        p = _block_mwp(block, block_input, p)
    return p


def cmwp_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
    """c-MWP heat maps (float32 N x H x W) for an :class:`xaipipe.models.Classifier` and
    [0, 1] images: positive part of the contrastive MWP at ``layer``, summed over channels,
    bilinearly upsampled to the image size."""
    p = resnet_mwp(model.backbone, model.normalize(images), targets, layer, contrastive=True)
    heat = p.sum(dim=1, keepdim=True).clamp(min=0)
    heat = F.interpolate(heat, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return heat[:, 0].float()
