"""Resize VOC image/mask pairs, aligned, to the training resolution.

``torchvision.transforms.v2.functional`` on tensors: the RGB image with antialiased bilinear
interpolation, the foreground mask with ``NEAREST_EXACT`` (pixel-centre nearest neighbour,
the same rule Pillow uses) so that image and mask stay aligned and the mask stays binary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from xaipipe.data import voc
from xaipipe.data.images import check_same_size, foreground_mask, read_jpeg, read_segmentation

RESIZE_MODES = ("squash", "center_crop")


def resize_pair(image: np.ndarray, mask: np.ndarray, resolution: int,
                mode: str = "squash") -> tuple[np.ndarray, np.ndarray]:
    """Resize an ``H x W x 3`` image and its ``H x W`` mask to ``resolution`` square.

    ``squash`` resizes both sides to ``resolution`` (aspect ratio not kept, nothing lost);
    ``center_crop`` resizes the short side to ``resolution`` and crops the centre square.
    Returns ``3 x R x R`` and ``R x R`` uint8 arrays.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    msk = torch.from_numpy(np.ascontiguousarray(mask))[None]
    size = [resolution, resolution] if mode == "squash" else resolution
    img = TF.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    msk = TF.resize(msk, size, interpolation=InterpolationMode.NEAREST_EXACT)
    if mode == "center_crop":
        img = TF.center_crop(img, [resolution, resolution])
        msk = TF.center_crop(msk, [resolution, resolution])
    return img.numpy(), msk[0].numpy()


def load_resized(devkit: str | Path, ids: Sequence[str], resolution: int, mode: str = "squash",
                 desc: str = "decode+resize") -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize every id once: ``N x 3 x R x R`` images and ``N x R x R`` masks.

    A file that no longer matches the index (missing, corrupt, other size) raises
    :class:`DataError` naming it; rerun the index stage after changing the dataset.
    """
    images = np.empty((len(ids), 3, resolution, resolution), dtype=np.uint8)
    masks = np.empty((len(ids), resolution, resolution), dtype=np.uint8)
    for row, image_id in enumerate(tqdm(ids, desc=desc, unit="img", leave=False)):
        image = read_jpeg(voc.image_path(devkit, image_id))
        segmentation = read_segmentation(voc.mask_path(devkit, image_id))
        check_same_size(image.shape[:2], segmentation.shape, voc.mask_path(devkit, image_id))
        images[row], masks[row] = resize_pair(image, foreground_mask(segmentation), resolution, mode)
    return images, masks
