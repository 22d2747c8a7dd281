"""Index stage: label derivation on hand-built masks, the table/log, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.data import voc
from xaipipe.data.images import BadFileError
from xaipipe.data.index import build_index, class_names_for, mask_stats, read_index, write_index
from xaipipe.errors import DataError


def seg(*blocks, shape=(10, 10)):
    """A segmentation array: each block is (value, row_slice, col_slice)."""
    array = np.zeros(shape, dtype=np.uint8)
    for value, rows, cols in blocks:
        array[rows, cols] = value
    return array


# --- label derivation ------------------------------------------------------------------

def test_label_is_largest_foreground_class_and_void_is_foreground_but_not_a_class():
    # class 3 (label 2): 20 px, class 1 (label 0): 10 px, void: 30 px (more than any class)
    s = seg((3, slice(0, 2), slice(0, 10)), (1, slice(2, 3), slice(0, 10)),
            (255, slice(3, 6), slice(0, 10)))
    stats = mask_stats(s, 20, "m.png")
    assert stats.label == 2
    assert stats.classes_present == [0, 2]
    assert stats.fg_fraction == pytest.approx(60 / 100)


def test_tie_goes_to_lowest_class_index():
    s = seg((7, slice(0, 1), slice(0, 5)), (4, slice(1, 2), slice(0, 5)))
    assert mask_stats(s, 20, "m.png").label == 3


@pytest.mark.parametrize("content, what", [(255, "only void"), (0, "only background")])
def test_mask_without_class_pixels_is_rejected_with_the_file_name(content, what):
    with pytest.raises(BadFileError, match=f"dir/x.png contains {what}") as info:
        mask_stats(np.full((4, 4), content, np.uint8), 20, "dir/x.png")
    assert info.value.reason == "no_foreground_class"


def test_class_index_beyond_num_classes_is_rejected():
    s = seg((5, slice(0, 2), slice(0, 2)), (2, slice(3, 4), slice(0, 2)))
    assert mask_stats(s, 5, "m.png").label == 4
    with pytest.raises(BadFileError, match=r"m.png contains class index\(es\) \[5\] outside 0..4"):
        mask_stats(s, 4, "m.png")


def test_class_names_follow_the_dataset(make_config):
    assert class_names_for(make_config({"dataset": {"name": "voc2012"}})) == list(voc.CLASS_NAMES)
    assert class_names_for(make_config({"dataset": {"name": "synthetic"},
                                        "synthetic": {"num_classes": 3}})) == ["aeroplane", "bicycle", "bird"]


# --- table and log ---------------------------------------------------------------------

def test_build_index_table_and_log(make_voc_root):
    devkit = make_voc_root(
        train_masks=[seg((1, slice(0, 5), slice(0, 10))),                       # 50 % fg, label 0
                     seg((2, slice(0, 1), slice(0, 3)), shape=(8, 12)),        # 3/96 fg, label 1
                     seg((2, slice(0, 3), slice(0, 10)), (1, slice(3, 5), slice(0, 10)))],
        val_masks=[seg((3, slice(0, 10), slice(0, 10)))])
    table, log = build_index(devkit, voc.CLASS_NAMES[:3], min_fg_fraction=0.1)
    assert list(table["image_id"]) == ["train_000", "train_002", "val_000"]
    assert list(table["split"]) == ["train", "train", "val"]
    assert list(table["label"]) == [0, 1, 2]
    assert list(table["label_name"]) == ["aeroplane", "bicycle", "bird"]
    assert table["fg_fraction"].tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert [list(c) for c in table["classes_present"]] == [[0], [0, 1], [2]]
    assert (table[["height", "width"]].to_numpy() == 10).all()
    assert log["dropped_low_fg"] == 1 and log["dropped_low_fg_ids"] == ["train_001"]
    assert log["total"] == 4 and log["kept"] == {"train": 2, "val": 1}
    assert log["class_histogram"] == {"train": {"aeroplane": 1, "bicycle": 1, "bird": 0},
                                      "val": {"aeroplane": 0, "bicycle": 0, "bird": 1}}
    assert log["class_names"] == ["aeroplane", "bicycle", "bird"]


def test_write_and_read_index_round_trip(make_config, make_voc_root):
    devkit = make_voc_root([seg((1, slice(0, 5), slice(0, 5))), seg((20, slice(0, 5), slice(0, 5)),
                                                                    shape=(6, 9))])
    config = make_config({"dataset": {"name": "voc2012", "voc_root": str(devkit)}})
    write_index(config)
    table, log = read_index(config)
    assert table["label"].tolist() == [0, 19]
    assert table[["height", "width"]].values.tolist() == [[10, 10], [6, 9]]
    assert log["kept"] == {"train": 2, "val": 0}


# --- bad inputs ------------------------------------------------------------------------

def corrupt(devkit, kind, image_id="train_001"):
    """Damage one image/mask pair in one way; return the file the error must name."""
    if kind == "corrupt_image":
        path = voc.image_path(devkit, image_id)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "missing_mask":
        path = voc.mask_path(devkit, image_id)
        path.unlink()
    else:
        path = voc.mask_path(devkit, image_id)
        shape, value = ((7, 10), 1) if kind == "size_mismatch" else ((10, 10), 21)
        png = Image.fromarray(np.full(shape, value, np.uint8), mode="P")
        png.putpalette(voc.palette().ravel().tolist())  # Pillow drops unused indices without one
        png.save(path)
    return path


BAD_KINDS = ["corrupt_image", "missing_mask", "size_mismatch", "unknown_class"]


@pytest.fixture
def three_images(make_voc_root):
    return make_voc_root([seg((1, slice(0, 5), slice(0, 5)))] * 3)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_stops_the_stage_naming_the_file(kind, three_images, make_config, capsys):
    bad = corrupt(three_images, kind)
    config = make_config({"dataset": {"name": "voc2012", "voc_root": str(three_images)}})
    config_file = three_images.parent / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert run_workflow_script("index", ["--config", str(config_file)]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and str(bad) in err and "Traceback" not in err
    data_dir = paths.index_table(config).parent
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_skip_mode_counts_every_bad_file_by_reason(make_voc_root):
    devkit = make_voc_root([seg((1, slice(0, 5), slice(0, 5)))] * 6)
    for number, kind in enumerate(BAD_KINDS, start=1):
        corrupt(devkit, kind, f"train_{number:03d}")
    with pytest.raises(DataError):
        build_index(devkit, voc.CLASS_NAMES)
    table, log = build_index(devkit, voc.CLASS_NAMES, on_bad_file="skip")
    assert table["image_id"].tolist() == ["train_000", "train_005"]
    assert log["skipped"] == {kind: 1 for kind in BAD_KINDS}
    assert {item["image_id"]: item["reason"] for item in log["skipped_files"]} == {
        f"train_{n:03d}": kind for n, kind in enumerate(BAD_KINDS, start=1)}


def test_not_a_voc_root_is_a_clear_error(tmp_path, make_config):
    config = make_config({"dataset": {"name": "voc2012", "voc_root": str(tmp_path / "nowhere")}})
    with pytest.raises(DataError, match=r"nowhere/VOC2012/ImageSets/Segmentation/train.txt is missing"):
        write_index(config)


def test_index_table_is_plain_parquet(make_config, make_voc_root):
    devkit = make_voc_root([seg((1, slice(0, 5), slice(0, 5)))])
    config = make_config({"dataset": {"name": "voc2012", "voc_root": str(devkit)}})
    write_index(config)
    table = pd.read_parquet(paths.index_table(config))
    assert list(table.columns) == ["image_id", "split", "label", "label_name", "fg_fraction",
                                   "classes_present", "height", "width"]
