"""Read and check VOC image/segmentation files (Pillow; torchvision's own JPEG decoder is
deprecated since torchvision 0.29).

The index stage and the variant stage share these readers, so both apply exactly the same
checks to the same files. Resizing lives in :mod:`xaipipe.data.resize` (it needs torch,
which the index stage then does not import).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xaipipe.data import voc
from xaipipe.errors import DataError

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


def check_same_size(image_hw: tuple[int, int], mask_hw: tuple[int, ...], mask_file: Path) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise BadFileError("size_mismatch", f"segmentation file {mask_file} is {mask_hw[0]}x{mask_hw[1]} "
                           f"but its image is {image_hw[0]}x{image_hw[1]} (height x width)")
