"""Batched training augmentation on the device: random resized crop + horizontal flip.

torchvision's ``RandomResizedCrop`` draws one crop per call, so applied to a batch tensor it
crops every image the same way; per-image crops would need a Python loop over the batch. This
module is hand-written for that reason: it draws an independent crop box (and flip) for every
image and applies them all at once as one batched affine resampling
(``torch.nn.functional.affine_grid`` + ``grid_sample``), on whatever device the batch is on.
The flip is folded into the affine matrix, so it costs nothing extra.

Sampling follows torchvision's ``RandomResizedCrop``: area fraction ``s ~ U(scale)``,
log aspect ratio ``~ U(log 3/4, log 4/3)``, box position uniform inside the image, output at
the input size with bilinear interpolation. One difference: where torchvision retries
(up to 10 times) a box that does not fit and then falls back to a centre crop, this clamps the
box's width and height to the image (the aspect ratio then drifts towards 1 for that sample).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

RATIO = (3.0 / 4.0, 4.0 / 3.0)
"""Aspect-ratio range of torchvision's RandomResizedCrop default."""


def crop_flip_params(n: int, scale: Sequence[float], hflip: bool,
                     generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` affine matrices (n x 2 x 3) mapping output to input coordinates in
    ``affine_grid``'s normalised [-1, 1] space: a crop box of relative width ``w`` and height
    ``h`` centred at ``(cx, cy)``, mirrored horizontally with probability 1/2 if ``hflip``.

    All random numbers come from ``generator`` (a CPU generator), so the draws are identical on
    every device and are captured by the generator's state for resuming.
    """
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_ratio = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, 1]
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - w) * (2.0 * u[:, 2] - 1.0)
    cy = (1.0 - h) * (2.0 * u[:, 3] - 1.0)
    sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if hflip else torch.ones(n, dtype=torch.float64)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return theta.float()


def apply_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float images (N x C x H x W) through per-image affine matrices ``theta``
    (N x 2 x 3) with bilinear interpolation; output has the input's size."""
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_flip(images: torch.Tensor, scale: Sequence[float], hflip: bool,
                             generator: torch.Generator) -> torch.Tensor:
    """Independent random resized crop (+ optional horizontal flip) of every image of a float
    batch, in one batched operation on the batch's device."""
    theta = crop_flip_params(images.shape[0], scale, hflip, generator)
    return apply_affine(images, theta)
