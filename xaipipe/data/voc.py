"""PASCAL VOC 2012 constants and on-disk layout, shared by the real and synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
"""The 20 VOC classes; label ``i`` (0..19) is segmentation index ``i + 1``."""

BACKGROUND = 0
VOID = 255

def palette() -> np.ndarray:
    """The VOC colour map (256 x 3 uint8): the bit-interleaving scheme of the devkit."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def voc2012_dir(devkit: str | Path) -> Path:
    return Path(devkit) / "VOC2012"


def image_path(devkit: str | Path, image_id: str) -> Path:
    return voc2012_dir(devkit) / "JPEGImages" / f"{image_id}.jpg"


def mask_path(devkit: str | Path, image_id: str) -> Path:
    return voc2012_dir(devkit) / "SegmentationClass" / f"{image_id}.png"


def split_list_path(devkit: str | Path, split: str) -> Path:
    return voc2012_dir(devkit) / "ImageSets" / "Segmentation" / f"{split}.txt"
