"""The tensor store: one split of one variant, materialised once at training resolution.

Layout of a split directory::

    images.npy   uint8  N x 3 x H x W   (RGB)
    masks.npy    uint8  N x H x W       (1 = foreground: seg != 0, void counts as foreground)
    labels.npy   int64  N               (0 .. num_classes-1)
    meta.json    {"ids": [...], "class_names": [...], "variant": ..., "split": ..., ...}

Plain ``.npy`` files so that readers can memory-map them (``np.load(mmap_mode="r")``) and
training never decodes a JPEG per epoch. A split directory is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xaipipe.errors import DataError
from xaipipe.io import atomic_path, read_json

ARRAY_FILES = ("images.npy", "masks.npy", "labels.npy")


@dataclass
class Split:
    """Arrays of one split; ``meta['ids'][i]`` is the VOC image id of row ``i``."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def ids(self) -> list[str]:
        return list(self.meta.get("ids", []))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names", []))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_arrays(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` unless the arrays satisfy the store contract."""
    problems = []
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        problems.append(f"images must be uint8 N x 3 x H x W, got {images.dtype} {images.shape}")
    if masks.dtype != np.uint8 or masks.ndim != 3:
        problems.append(f"masks must be uint8 N x H x W, got {masks.dtype} {masks.shape}")
    elif images.ndim == 4 and masks.shape != (images.shape[0], *images.shape[2:]):
        problems.append(f"masks shape {masks.shape} does not match images {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != images.shape[0]:
        problems.append(f"labels must be integer of length N={images.shape[0]}, got {labels.dtype} {labels.shape}")
    if problems:
        raise DataError(f"{where}: " + "; ".join(problems))


def write_split(directory: str | Path, split: Split) -> None:
    """Write ``split`` to ``directory`` atomically (the directory appears complete or not at all)."""
    check_arrays(split.images, split.masks, split.labels, str(directory))
    if len(split.meta.get("ids", [])) != len(split):
        raise DataError(f"{directory}: meta['ids'] has {len(split.meta.get('ids', []))} entries for {len(split)} rows")
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        np.save(tmp / "images.npy", np.ascontiguousarray(split.images))
        np.save(tmp / "masks.npy", np.ascontiguousarray(split.masks))
        np.save(tmp / "labels.npy", np.ascontiguousarray(split.labels.astype(np.int64)))
        (tmp / "meta.json").write_text(json.dumps(split.meta, indent=1, sort_keys=True) + "\n")


def read_split(directory: str | Path, mmap: bool = True) -> Split:
    """Load a split written by :func:`write_split`; memory-mapped by default."""
    directory = Path(directory)
    missing = [name for name in (*ARRAY_FILES, "meta.json") if not (directory / name).is_file()]
    if missing:
        raise DataError(
            f"tensor store {directory} is incomplete (missing {', '.join(missing)}); "
            "rerun the variant stage for this variant"
        )
    mode = "r" if mmap else None
    try:
        images = np.load(directory / "images.npy", mmap_mode=mode)
        masks = np.load(directory / "masks.npy", mmap_mode=mode)
        labels = np.load(directory / "labels.npy")
        meta = read_json(directory / "meta.json")
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise DataError(f"tensor store {directory} is unreadable ({exc}); rerun the variant stage") from exc
    check_arrays(images, masks, labels, str(directory))
    return Split(images=images, masks=masks, labels=labels, meta=meta)
