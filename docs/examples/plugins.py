"""The worked example of docs/extending.md: one plug-in training variant and one plug-in
attribution method, registered from config only (tests/test_plugins.py runs them through
the whole DAG).

    plugins:
      variants: {blur: "docs.examples.plugins:blur_background"}
      methods: {grad_x_input: "docs.examples.plugins:gradient_times_input"}
"""

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF


def blur_background(images, masks, ids, *, seed, settings):
    """A training variant: the background Gaussian-blurred (sigma 3 px), the object kept.

    images: uint8 N x 3 x H x W, masks: uint8 N x H x W (1 = object); returns uint8 like
    images. Deterministic, so ``seed`` and ``ids`` are not needed here."""
    blurred = TF.gaussian_blur(torch.from_numpy(np.ascontiguousarray(images)).float(),
                               kernel_size=[9, 9], sigma=[3.0, 3.0])
    blurred = blurred.round().clamp(0, 255).to(torch.uint8).numpy()
    return np.where(masks[:, None].astype(bool), images, blurred)


def gradient_times_input(model, images, targets, *, settings, **_):
    """An attribution method: |gradient x input| summed over the colour channels.

    images: float N x 3 x H x W in [0, 1]; returns float N x H x W on the same device."""
    images = images.detach().clone().requires_grad_(True)
    model(images).gather(1, targets[:, None]).sum().backward()
    return (images.grad * images).abs().sum(dim=1).detach()
