"""Variant stage: each treatment's pixels (paper §IV), seeding, resize alignment, the store."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.data import voc
from xaipipe.data.index import write_index
from xaipipe.data.resize import resize_pair
from xaipipe.data.store import read_split
from xaipipe.data.variants import (apply_variant, background_noise, mixed_selection,
                                   materialise_variants, noise_background, remove_background)
from xaipipe.io import read_json

IDS = ["a", "b", "c"]


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(3, 3, 8, 8), dtype=np.uint8)  # no zero pixel anywhere
    masks = np.zeros((3, 8, 8), dtype=np.uint8)
    masks[:, 2:6, 3:7] = 1
    return images, masks


def variant_config(**settings):
    return {"seed": 0, "variant": {"noise_mean": 0.5, "noise_std": 0.25, "mixed_fraction": 0.5, **settings}}


# --- treatments -------------------------------------------------------------------------

def test_remove_background_hand_computed():
    images = np.array([[[[10, 20], [30, 40]]] * 3], dtype=np.uint8)
    masks = np.array([[[1, 0], [0, 1]]], dtype=np.uint8)
    out = remove_background(images, masks)
    assert out.tolist() == [[[[10, 0], [0, 40]]] * 3]


def test_black_background_is_zero_and_foreground_unchanged(arrays):
    images, masks = arrays
    out, treated = apply_variant("black", images, masks, IDS, variant_config())
    fg = masks[:, None].repeat(3, axis=1).astype(bool)
    assert (out[~fg] == 0).all() and (out[fg] == images[fg]).all() and treated.all()


def test_noise_only_replaces_background(arrays):
    images, masks = arrays
    out, _ = apply_variant("noise", images, masks, IDS, variant_config())
    fg = masks[:, None].repeat(3, axis=1).astype(bool)
    assert (out[fg] == images[fg]).all()
    expected = np.stack([background_noise(i, images.shape[1:], 0, 0.5, 0.25) for i in IDS])
    assert (out[~fg] == expected[~fg]).all()
    assert (out[~fg] != images[~fg]).mean() > 0.9


def test_noise_is_fixed_per_image_whatever_the_batch(arrays):
    images, masks = arrays
    together = noise_background(images, masks, IDS, 3, 0.5, 0.25)
    alone = noise_background(images[2:], masks[2:], IDS[2:], 3, 0.5, 0.25)
    reordered = noise_background(images[::-1], masks[::-1], IDS[::-1], 3, 0.5, 0.25)
    assert (together[2] == alone[0]).all() and (together == reordered[::-1]).all()
    assert not (together == noise_background(images, masks, IDS, 4, 0.5, 0.25)).all()
    assert not (background_noise("a", (3, 8, 8), 0, 0.5, 0.25) == background_noise("b", (3, 8, 8), 0, 0.5, 0.25)).all()


def test_noise_distribution_and_clipping():
    noise = background_noise("x", (3, 128, 128), 0, 0.5, 0.25).astype(float) / 255
    assert noise.mean() == pytest.approx(0.5, abs=0.01)
    assert noise.std() == pytest.approx(0.24, abs=0.01)  # slightly below 0.25: tails clipped
    assert noise.min() == 0.0 and noise.max() == 1.0
    assert (background_noise("x", (3, 4, 4), 0, 0.2, 0.0) == 51).all()  # round(0.2 * 255)


@pytest.mark.parametrize("n, fraction, expected", [(10, 0.5, 5), (7, 0.5, 4), (3, 0.3, 1), (1, 0.5, 1)])
def test_mixed_selects_exactly_round_fraction(n, fraction, expected):
    assert mixed_selection([f"id{i}" for i in range(n)], 0, fraction).sum() == expected


def test_mixed_selection_is_seeded_and_order_independent():
    ids = [f"id{i}" for i in range(40)]
    chosen = mixed_selection(ids, 0, 0.5)
    assert (mixed_selection(ids[::-1], 0, 0.5)[::-1] == chosen).all()
    assert not (mixed_selection(ids, 1, 0.5) == chosen).all()


def test_mixed_rows_are_black_or_unchanged(arrays):
    images, masks = arrays
    out, treated = apply_variant("mixed", images, masks, IDS, variant_config())
    black = remove_background(images, masks)
    assert treated.sum() == 2  # round(0.5 * 3), half rounded up
    assert (out[treated] == black[treated]).all() and (out[~treated] == images[~treated]).all()


def test_standard_is_unchanged(arrays):
    images, masks = arrays
    out, treated = apply_variant("standard", images, masks, IDS, variant_config())
    assert (out == images).all() and not treated.any()


# --- resizing ---------------------------------------------------------------------------

def object_image(height, width, rows, cols):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[...] = (0, 0, 255)
    mask = np.zeros((height, width), dtype=np.uint8)
    image[rows, cols] = (255, 0, 0)
    mask[rows, cols] = 1
    return image, mask


def assert_colours_follow_mask(image, mask):
    """Red object on blue ground: antialiasing blends only across the edge, so every mask
    pixel is mostly red, every background pixel mostly blue, and pixels two away from the
    edge (or from the image border, where a crop may cut an edge) are pure."""
    red, blue = image[0].astype(int), image[2].astype(int)
    assert (red[mask == 1] > blue[mask == 1]).all() and (blue[mask == 0] > red[mask == 0]).all()
    def away_from_edge(value):  # pixels whose 5 x 5 window (image border = edge) is all value
        padded = np.pad(mask == value, 2, constant_values=False)
        return np.lib.stride_tricks.sliding_window_view(padded, (5, 5)).all(axis=(2, 3))

    inner_fg, inner_bg = away_from_edge(1), away_from_edge(0)
    assert inner_fg.any() and inner_bg.any()
    assert (red[inner_fg] == 255).all() and (blue[inner_bg] == 255).all()


def test_squash_keeps_mask_aligned_with_the_object():
    # 128 x 64 -> 32: factor 4 vertically, 2 horizontally; object on block boundaries
    image, mask = object_image(128, 64, slice(32, 96), slice(16, 48))
    small_image, small_mask = resize_pair(image, mask, 32, "squash")
    expected = np.zeros((32, 32), dtype=np.uint8)
    expected[8:24, 8:24] = 1
    assert (small_mask == expected).all()
    assert_colours_follow_mask(small_image, small_mask)


def test_center_crop_keeps_mask_aligned_and_crops_the_long_side():
    # 64 x 128 -> short side 32 (32 x 64 after resize), centre crop drops 16 columns per side
    image, mask = object_image(64, 128, slice(16, 48), slice(32, 96))
    small_image, small_mask = resize_pair(image, mask, 32, "center_crop")
    expected = np.zeros((32, 32), dtype=np.uint8)
    expected[8:24, :] = 1
    assert small_image.shape == (3, 32, 32)
    assert (small_mask == expected).all()
    assert_colours_follow_mask(small_image, small_mask)


def test_mask_stays_binary_and_black_is_exactly_zero_after_resize():
    rng = np.random.default_rng(1)
    image = rng.integers(1, 256, size=(37, 53, 3), dtype=np.uint8)
    mask = (rng.random((37, 53)) > 0.5).astype(np.uint8)
    small_image, small_mask = resize_pair(image, mask, 16)
    assert set(np.unique(small_mask)) <= {0, 1}
    black = remove_background(small_image[None], small_mask[None])[0]
    assert (black[:, small_mask == 0] == 0).all() and (black[:, small_mask == 1] > 0).all()


# --- the stage --------------------------------------------------------------------------

@pytest.fixture
def indexed(make_config, make_voc_root):
    """An indexed tiny VOC root: 4 train + 2 val images of different sizes, 32 px store."""
    def square(shape, value):
        seg = np.zeros(shape, dtype=np.uint8)
        seg[shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2] = value
        seg[shape[0] // 4, :] = 255  # a void line counts as foreground
        return seg
    devkit = make_voc_root([square((40, 60), 1), square((50, 50), 2), square((64, 48), 1), square((30, 30), 3)],
                           [square((48, 64), 2), square((40, 40), 3)])
    config = make_config({"dataset": {"name": "voc2012", "voc_root": str(devkit)}, "resolution": 32})
    write_index(config)
    return config


def test_materialise_all_variants(indexed):
    summaries = materialise_variants(indexed, ["standard", "black", "noise", "mixed"])
    standard = {s: read_split(paths.variant_split_dir(indexed, "standard", s)) for s in ("train", "val")}
    assert standard["train"].ids == ["train_000", "train_001", "train_002", "train_003"]
    assert standard["train"].labels.tolist() == [0, 1, 0, 2]
    assert standard["train"].class_names == list(voc.CLASS_NAMES)
    assert standard["train"].images.shape == (4, 3, 32, 32)
    for variant in ("standard", "black", "noise", "mixed"):
        val = read_split(paths.variant_split_dir(indexed, variant, "val"))
        assert (val.images == standard["val"].images).all()  # val is always unmodified
        train = read_split(paths.variant_split_dir(indexed, variant, "train"))
        assert (train.masks == standard["train"].masks).all()
        assert read_json(paths.variant_summary(indexed, variant)) == summaries[variant]
    black = read_split(paths.variant_split_dir(indexed, "black", "val_matched"))
    assert (black.images[np.broadcast_to(black.masks[:, None] == 0, black.images.shape)] == 0).all()
    mixed = read_split(paths.variant_split_dir(indexed, "mixed", "train"))
    assert sum(mixed.meta["background_replaced"]) == 2
    assert summaries["mixed"]["splits"] == {"train": {"images": 4, "background_replaced": 2},
                                            "val": {"images": 2, "background_replaced": 0},
                                            "val_matched": {"images": 2, "background_replaced": 1}}
    assert summaries["black"]["class_histogram"]["train"]["aeroplane"] == 2


def test_variant_script_writes_one_variant(indexed, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(indexed))
    assert run_workflow_script("variant", ["--config", str(config_file), "--variant", "noise"]) == 0
    assert paths.variant_summary(indexed, "noise").is_file()
    assert not paths.variant_dir(indexed, "black").exists()


def test_missing_index_fails_cleanly(make_config, tmp_path, capsys):
    config = make_config()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert run_workflow_script("variant", ["--config", str(config_file), "--variant", "black"]) == 1
    assert "index.parquet is missing; run the index stage first" in capsys.readouterr().err
    assert not paths.variant_dir(config, "black").exists()


def test_image_gone_after_indexing_fails_naming_it_and_leaves_nothing(indexed, tmp_path, capsys):
    gone = voc.image_path(paths.dataset_root(indexed), "val_001")
    gone.unlink()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(indexed))
    assert run_workflow_script("variant", ["--config", str(config_file), "--variant", "black"]) == 1
    assert str(gone) in capsys.readouterr().err
    variants = paths.variant_dir(indexed, "black").parent
    assert not variants.exists() or not any(variants.iterdir())


def test_failure_while_writing_leaves_no_partial_variant(indexed, monkeypatch):
    from xaipipe.data import variants as module

    real_write = module.write_split

    def failing_write(directory, split):
        if directory.name == "val_matched":
            raise OSError("disk full")
        real_write(directory, split)

    monkeypatch.setattr(module, "write_split", failing_write)
    with pytest.raises(OSError):
        materialise_variants(indexed, ["black"])
    variants = paths.variant_dir(indexed, "black").parent
    assert not any(variants.iterdir())
