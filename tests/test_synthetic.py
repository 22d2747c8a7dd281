"""The synthetic VOC-format generator: on-disk format, labels, void borders, determinism,
the background confound, and bad input. Tiny sizes (32 px, a few dozen images)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xaipipe import paths
from xaipipe.data import synthetic, voc
from xaipipe.data.synthetic import (SyntheticSpec, colour_probe_accuracy, main_class,
                                    make_synthetic, render_split, void_borders)
from xaipipe.errors import ConfigError
from xaipipe.io import read_json

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_classes": 4, "train_images": 10, "val_images": 6, "image_size": 32,
        "min_objects": 1, "max_objects": 3, "bg_correlation": 0.8}


def tiny_config(make_config, seed=0, **synthetic_overrides):
    return make_config({"seed": seed, "dataset": {"name": "synthetic"},
                        "synthetic": {**TINY, **synthetic_overrides}})


@pytest.fixture
def generated(make_config):
    config = tiny_config(make_config)
    manifest = make_synthetic(config)
    return config, manifest, paths.dataset_root(config)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_png(root: Path, image_id: str) -> Image.Image:
    return Image.open(voc.mask_path(root, image_id))


def test_void_borders_hand_computed():
    labels = np.zeros((5, 6), dtype=np.uint8)
    labels[1:4, 1:3] = 7
    labels[1:4, 3:4] = 9
    V = voc.VOID
    expected = np.array([
        [V, V, V, V, V, 0],
        [V, V, V, V, V, 0],
        [V, V, V, V, V, 0],
        [V, V, V, V, V, 0],
        [V, V, V, V, V, 0],
    ], dtype=np.uint8)
    assert np.array_equal(void_borders(labels), expected)
    big = np.zeros((7, 7), dtype=np.uint8)
    big[1:6, 1:6] = 3
    out = void_borders(big)
    assert out[3, 3] == 3 and out[2, 2] == 3            # interior keeps its class
    assert out[1, 3] == V and out[0, 3] == V            # 1 px each side of the outline
    assert out[0, 0] == V and np.all(out[[0, -1], :] == V)


def test_main_class_ignores_void_and_breaks_ties_low():
    seg = np.array([[2, 2, 2, 3, 3], [255, 255, 255, 255, 3], [0, 0, 0, 0, 0]], dtype=np.uint8)
    assert main_class(seg, 4) == 1                      # class 2 (index 1) has 3 px, class 3 has 3 px
    seg[2, 0] = 3
    assert main_class(seg, 4) == 2


def test_voc_layout_palette_and_lists(generated):
    config, manifest, root = generated
    sets = voc.voc2012_dir(root) / "ImageSets" / "Segmentation"
    train = (sets / "train.txt").read_text().split()
    val = (sets / "val.txt").read_text().split()
    assert len(train) == 10 and len(val) == 6 and not set(train) & set(val)
    assert (sets / "trainval.txt").read_text().split() == train + val
    jpgs = {p.stem for p in (voc.voc2012_dir(root) / "JPEGImages").glob("*.jpg")}
    pngs = {p.stem for p in (voc.voc2012_dir(root) / "SegmentationClass").glob("*.png")}
    assert jpgs == pngs == set(train) | set(val)
    for image_id in train[:3]:
        png = read_png(root, image_id)
        assert png.mode == "P" and png.size == (32, 32)
        assert np.array_equal(np.array(png.getpalette(), np.uint8).reshape(-1, 3),
                              voc.palette()[:len(png.getpalette()) // 3])
        jpg = Image.open(voc.image_path(root, image_id))
        assert jpg.mode == "RGB" and jpg.size == (32, 32)
    assert manifest["class_names"] == list(voc.CLASS_NAMES[:4])
    assert read_json(paths.dataset_manifest(config)) == manifest


def test_labels_objects_and_void_agree_with_pngs(generated):
    config, manifest, root = generated
    for record in manifest["images"]:
        seg = np.array(read_png(root, record["id"]))
        assert record["label"] == main_class(seg, 4)
        assert 1 <= len(record["objects"]) <= 3
        present = set(np.unique(seg)) - {voc.BACKGROUND, voc.VOID}
        assert present <= {c + 1 for c in record["objects"]} and present
        assert record["label"] + 1 in present
        assert np.any(seg == voc.VOID), "every image has void outlines"
        # void separates objects from background: no object pixel 4-touches a background pixel
        obj, bg = (seg != 0) & (seg != voc.VOID), seg == 0
        assert not np.any(obj[:, 1:] & bg[:, :-1]) and not np.any(obj[:, :-1] & bg[:, 1:])
        assert not np.any(obj[1:] & bg[:-1]) and not np.any(obj[:-1] & bg[1:])


def test_same_seed_same_bytes_different_seed_differs(make_config, tmp_path, generated):
    _, _, root = generated
    again = tiny_config(make_config)
    again["results_dir"] = str(tmp_path / "again")
    make_synthetic(again)
    assert file_hashes(paths.dataset_root(again)) == file_hashes(root)
    other = tiny_config(make_config, seed=1)
    other["results_dir"] = str(tmp_path / "other")
    make_synthetic(other)
    a, b = file_hashes(paths.dataset_root(other)), file_hashes(root)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.endswith(".jpg")) >= 15


@pytest.mark.parametrize("p, expected", [(1.0, 1.0), (0.0, 0.0)])
def test_bg_correlation_extremes(p, expected):
    spec = SyntheticSpec(**{**TINY, "bg_correlation": p})
    samples = render_split(spec, 0, "train", 30)
    assert np.mean([s.background == s.label for s in samples]) == expected


def test_background_confound_and_object_signal():
    """The confound check of docs/data-sources.md at test size: background-only colour
    histograms predict the label when p is high and are at chance when p = 1/num_classes;
    object-only pixels always predict it."""
    n = 4
    confounded = SyntheticSpec(**{**TINY, "bg_correlation": 0.9})
    independent = SyntheticSpec(**{**TINY, "bg_correlation": 1 / n})
    splits = {name: (render_split(spec, 0, "train", 100), render_split(spec, 0, "val", 100))
              for name, spec in [("confounded", confounded), ("independent", independent)]}
    bg_high = colour_probe_accuracy(*splits["confounded"], "background", n)
    bg_chance = colour_probe_accuracy(*splits["independent"], "background", n)
    obj = colour_probe_accuracy(*splits["independent"], "object", n)
    assert bg_high > 0.75
    assert bg_chance < 0.25 + 0.15
    assert obj > 0.85


def test_failure_mid_generation_leaves_nothing(make_config, monkeypatch):
    config = tiny_config(make_config)
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(synthetic, "save_sample", failing_save)
    with pytest.raises(OSError):
        make_synthetic(config)
    data_dir = paths.dataset_root(config).parent
    assert not paths.dataset_root(config).exists()
    assert not paths.dataset_manifest(config).exists()
    assert list(data_dir.iterdir()) == []


def test_wrong_dataset_name_is_refused(make_config):
    config = make_config({"dataset": {"name": "voc2012"}})
    with pytest.raises(ConfigError, match="dataset.name: synthetic"):
        make_synthetic(config)


def test_script_bad_config_exits_1_without_output(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"results_dir: {tmp_path / 'results'}\ndataset: {{name: voc2012}}\n")
    result = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "make_synthetic.py"),
                             "--config", str(REPO / "config.yaml"), str(cfg)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "make_synthetic" in result.stderr and "dataset.name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()
