"""Read VOC image/segmentation pairs and resize them, aligned, to the training resolution.

Decoding uses Pillow (torchvision's own JPEG decoder is deprecated since torchvision 0.29);
resizing uses ``torchvision.transforms.v2.functional`` on tensors: the RGB image with
antialiased bilinear interpolation, the foreground mask with ``NEAREST_EXACT`` (pixel-centre
nearest neighbour, the same rule Pillow uses) so that image and mask stay aligned and the
mask stays binary. The index stage and the variant stage share these readers, so both apply
exactly the same checks to the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from xaipipe.data import voc
from xaipipe.errors import DataError

RESIZE_MODES = ("squash", "center_crop")


class BadFileError(DataError):
    """A single image/mask pair is unusable; ``reason`` is the key counted in the index log
    when ``dataset.on_bad_file: skip``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def verify_jpeg(path: Path) -> tuple[int, int]:
    """Fully decode the JPEG at ``path`` (at 1/8 scale via Pillow's ``draft``, which still
    reads every entropy-coded block, so truncation is detected) and return its (height, width)."""
    if not path.is_file():
        raise BadFileError("missing_image", f"image file {path} is missing")
    try:
        with Image.open(path) as img:
            width, height = img.size
            img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            img.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise BadFileError("corrupt_image", f"image file {path} cannot be decoded ({exc}); "
                           "replace it or set dataset.on_bad_file: skip") from exc
    return height, width


def read_jpeg(path: Path) -> np.ndarray:
    """Decode the JPEG at ``path`` to an ``H x W x 3`` uint8 RGB array."""
    if not path.is_file():
        raise BadFileError("missing_image", f"image file {path} is missing; rerun the index stage")
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise BadFileError("corrupt_image", f"image file {path} cannot be decoded ({exc})") from exc


def read_segmentation(path: Path) -> np.ndarray:
    """Read a ``SegmentationClass`` PNG as its ``H x W`` uint8 array of class indices
    (palette indices, not colours: 0 background, 1..20 classes, 255 void)."""
    if not path.is_file():
        raise BadFileError("missing_mask", f"segmentation file {path} is missing; "
                           "every id in ImageSets/Segmentation needs one")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise BadFileError("corrupt_mask", f"segmentation file {path} has mode {img.mode}; "
                                   "expected a palette (P) PNG of class indices as in VOC")
            return np.array(img)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise BadFileError("corrupt_mask", f"segmentation file {path} cannot be decoded ({exc})") from exc


def foreground_mask(segmentation: np.ndarray) -> np.ndarray:
    """``seg != 0`` as uint8: void (255) counts as foreground so object outlines survive
    background removal (DESIGN.md, data contracts)."""
    return (segmentation != voc.BACKGROUND).astype(np.uint8)


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


def check_same_size(image_hw: tuple[int, int], mask_hw: tuple[int, ...], mask_file: Path) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise BadFileError("size_mismatch", f"segmentation file {mask_file} is {mask_hw[0]}x{mask_hw[1]} "
                           f"but its image is {image_hw[0]}x{image_hw[1]} (height x width)")
