"""The ``index`` stage: one row per segmentation image of a VOC-format dataset.

The same code reads the real PASCAL VOC 2012 and the synthetic dataset (which is written in
the identical on-disk layout). For every id in ``ImageSets/Segmentation/{train,val}.txt`` the
``SegmentationClass`` PNG gives the label: the foreground class with the most pixels
(background 0 and void 255 are not classes; a tie goes to the lowest class index, so the
choice is deterministic). Output columns (DESIGN.md, data contracts)::

    image_id, split, label (0..num_classes-1), label_name, fg_fraction,
    classes_present (labels with at least one pixel), height, width

``fg_fraction`` is the share of ``seg != 0`` pixels (void counts as foreground). Images below
``dataset.min_fg_fraction`` are dropped and counted. A file that cannot give a trustworthy
label (corrupt JPEG, missing or size-mismatched PNG, unknown class index, no foreground class)
raises :class:`DataError` naming it, or with ``dataset.on_bad_file: skip`` is skipped and
counted by reason in the log: never a silent wrong label.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from xaipipe import paths
from xaipipe.data import voc
from xaipipe.data.images import BadFileError, check_same_size, read_segmentation, verify_jpeg
from xaipipe.errors import DataError
from xaipipe.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

INDEX_SPLITS = ("train", "val")
COLUMNS = ("image_id", "split", "label", "label_name", "fg_fraction", "classes_present",
           "height", "width")


@dataclass(frozen=True)
class MaskStats:
    """What the index records about one segmentation mask."""

    label: int
    fg_fraction: float
    classes_present: list[int]


def class_names_for(config: Mapping) -> list[str]:
    """The class names of the configured dataset: the 20 VOC classes, or the first
    ``synthetic.num_classes`` of them for the synthetic dataset."""
    if config["dataset"]["name"] == "synthetic":
        return list(voc.CLASS_NAMES[: config["synthetic"]["num_classes"]])
    return list(voc.CLASS_NAMES)


def mask_stats(segmentation: np.ndarray, num_classes: int, where: str | Path) -> MaskStats:
    """Label, foreground fraction and present classes of one ``SegmentationClass`` array.

    Label = ``argmax`` of the per-class pixel counts over segmentation indices
    ``1..num_classes`` minus one; ``np.argmax`` returns the first maximum, so ties go to the
    lowest class index. Raises :class:`BadFileError` for indices outside
    ``{0, 1..num_classes, 255}`` and for masks without any foreground class pixel.
    """
    counts = np.bincount(segmentation.ravel(), minlength=256)
    allowed = np.zeros(256, dtype=bool)
    allowed[: num_classes + 1] = True
    allowed[voc.VOID] = True
    unknown = np.flatnonzero((counts > 0) & ~allowed)
    if unknown.size:
        raise BadFileError("unknown_class", f"segmentation file {where} contains class index(es) "
                           f"{unknown.tolist()} outside 0..{num_classes} and 255 (void); "
                           "check dataset.name / synthetic.num_classes or fix the file")
    class_counts = counts[1: num_classes + 1]
    if class_counts.sum() == 0:
        what = "only void (255)" if counts[voc.VOID] else "only background (0)"
        raise BadFileError("no_foreground_class", f"segmentation file {where} contains {what} "
                           "pixels, so it has no class label; remove its id from the split list "
                           "or set dataset.on_bad_file: skip")
    fg_fraction = 1.0 - counts[voc.BACKGROUND] / segmentation.size
    return MaskStats(label=int(np.argmax(class_counts)), fg_fraction=float(fg_fraction),
                     classes_present=np.flatnonzero(class_counts).tolist())


def read_split_ids(devkit: str | Path, split: str) -> list[str]:
    path = voc.split_list_path(devkit, split)
    if not path.is_file():
        raise DataError(f"split list {path} is missing: {devkit} is not a VOC-format VOCdevkit "
                        "(point dataset.voc_root at the directory containing VOC2012/, or run "
                        "the download_voc / make_synthetic stage)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def index_row(devkit: str | Path, image_id: str, split: str, class_names: Sequence[str]) -> dict:
    """Check one image/mask pair and return its index row (raises :class:`BadFileError`)."""
    height, width = verify_jpeg(voc.image_path(devkit, image_id))
    mask_file = voc.mask_path(devkit, image_id)
    segmentation = read_segmentation(mask_file)
    check_same_size((height, width), segmentation.shape, mask_file)
    stats = mask_stats(segmentation, len(class_names), mask_file)
    return {"image_id": image_id, "split": split, "label": stats.label,
            "label_name": class_names[stats.label], "fg_fraction": stats.fg_fraction,
            "classes_present": stats.classes_present, "height": height, "width": width}


def build_index(devkit: str | Path, class_names: Sequence[str], min_fg_fraction: float = 0.0,
                on_bad_file: str = "error") -> tuple[pd.DataFrame, dict]:
    """Index every id of the train and val split lists under ``devkit``.

    Returns the table (train rows first, each split in list order) and the log dictionary
    (counts, skipped files by reason, class histogram per split).
    """
    start = time.perf_counter()
    ids = {split: read_split_ids(devkit, split) for split in INDEX_SPLITS}
    both = set(ids["train"]) & set(ids["val"])
    if both:
        raise DataError(f"{voc.split_list_path(devkit, 'val')}: {len(both)} id(s) are also in "
                        f"train.txt (e.g. {sorted(both)[0]}); the splits must be disjoint")
    rows, skipped, dropped = [], [], []
    jobs = [(split, image_id) for split in INDEX_SPLITS for image_id in ids[split]]
    for split, image_id in tqdm(jobs, desc="index", unit="img", leave=False):
        try:
            row = index_row(devkit, image_id, split, class_names)
        except BadFileError as exc:
            if on_bad_file != "skip":
                raise
            skipped.append({"image_id": image_id, "split": split, "reason": exc.reason,
                            "message": str(exc)})
            continue
        (rows if row["fg_fraction"] >= min_fg_fraction else dropped).append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS)).astype(
        {"label": "int64", "height": "int64", "width": "int64", "fg_fraction": "float64"})
    if table.empty:
        raise DataError(f"no usable images under {devkit} (listed: {len(jobs)}, skipped: "
                        f"{len(skipped)}, below dataset.min_fg_fraction={min_fg_fraction}: "
                        f"{len(dropped)})")
    index_log = {
        "dataset_root": str(devkit),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "min_fg_fraction": min_fg_fraction,
        "on_bad_file": on_bad_file,
        "listed": {split: len(ids[split]) for split in INDEX_SPLITS},
        "total": len(jobs),
        "kept": {split: int((table["split"] == split).sum()) for split in INDEX_SPLITS},
        "dropped_low_fg": len(dropped),
        "dropped_low_fg_ids": [row["image_id"] for row in dropped],
        "skipped": dict(Counter(item["reason"] for item in skipped)),
        "skipped_files": skipped,
        "class_histogram": class_histogram(table, class_names),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return table, index_log


def class_histogram(table: pd.DataFrame, class_names: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{split: {class name: images}}`` over every class name (zeros included)."""
    return {split: {name: int(((table["split"] == split) & (table["label"] == label)).sum())
                    for label, name in enumerate(class_names)}
            for split in INDEX_SPLITS}


def write_index(config: Mapping) -> dict:
    """Run the index stage: write ``paths.index_table`` (parquet) then ``paths.index_log``."""
    dataset = config["dataset"]
    table, index_log = build_index(paths.dataset_root(config), class_names_for(config),
                                   dataset["min_fg_fraction"], dataset["on_bad_file"])
    with atomic_path(paths.index_table(config)) as tmp:
        table.to_parquet(tmp, index=False)
    write_json(paths.index_log(config), index_log)
    log.info("indexed %s: kept %s, dropped (low fg) %d, skipped %s", index_log["dataset_root"],
             index_log["kept"], index_log["dropped_low_fg"], index_log["skipped"] or "none")
    return index_log


def read_index(config: Mapping) -> tuple[pd.DataFrame, dict]:
    """The index table and log written by :func:`write_index` (DataError if absent)."""
    table_path, log_path = paths.index_table(config), paths.index_log(config)
    for path in (table_path, log_path):
        if not path.is_file():
            raise DataError(f"{path} is missing; run the index stage first "
                            "(python workflow_scripts/index.py --config ...)")
    return pd.read_parquet(table_path), read_json(log_path)
