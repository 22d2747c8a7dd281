"""Pixel ranking and ROAR/KAR removal: exact counts, whole pixels, deterministic ties."""

import numpy as np
import pytest
import torch

from conftest import fake_split
from xaipipe.errors import DataError
from xaipipe.evaluate.removal import (fill_value, load_maps, pixel_count, rank_mask,
                                      remove_pixels)
from xaipipe.io import save_npy

FILL = np.array([1, 2, 3], dtype=np.uint8)


def _split_and_maps(n=5, size=8, seed=0):
    split = fake_split(n=n, size=size, seed=seed)
    split.images[:] = np.maximum(split.images, 10)  # no pixel can equal FILL by accident
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, 4, size=(n, size, size)).astype(np.float16)  # many ties
    return split, maps


def _filled(images):
    """N x H x W: True where all three channels equal FILL."""
    return (images == FILL[None, :, None, None]).all(axis=1)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_roar_fills_exactly_round_fraction_whole_pixels(fraction):
    split, maps = _split_and_maps()
    out = remove_pixels(split, maps, "roar", fraction, FILL)
    filled = _filled(out.images)
    assert (filled.sum(axis=(1, 2)) == round(fraction * 64)).all()
    # untouched pixels keep every channel; no pixel is changed in only some channels
    changed = (out.images != split.images).any(axis=1)
    assert (changed == filled).all()
    assert out.meta["removal"] == {"kind": "roar", "fraction": fraction,
                                   "pixels_removed": round(fraction * 64), "fill": [1, 2, 3]}


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.7])
def test_kar_keeps_exactly_round_fraction_top_pixels(fraction):
    split, maps = _split_and_maps(seed=1)
    roar = _filled(remove_pixels(split, maps, "roar", fraction, FILL).images)
    kar = _filled(remove_pixels(split, maps, "kar", fraction, FILL).images)
    assert ((~kar).sum(axis=(1, 2)) == round(fraction * 64)).all()
    assert (roar == ~kar).all()  # KAR keeps exactly what ROAR removes


def test_top_pixels_are_the_highest_scores():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert rank_mask(maps, 2, most_relevant=True).tolist() == [[[False, True], [True, False]]]
    assert rank_mask(maps, 1, most_relevant=False).tolist() == [[[True, False], [False, False]]]


def test_ties_break_by_ascending_pixel_index():
    maps = torch.tensor([[[3.0, 1.0], [3.0, 2.0]]])  # flat scores 3, 1, 3, 2
    assert rank_mask(maps, 1, True).flatten().tolist() == [True, False, False, False]
    assert rank_mask(maps, 2, True).flatten().tolist() == [True, False, True, False]
    # LeRF/KAR remove the complement of the top (H*W - count): among equal lowest scores the
    # highest index goes first
    ties = torch.zeros(1, 2, 2)
    assert rank_mask(ties, 1, True).flatten().tolist() == [True, False, False, False]
    assert rank_mask(ties, 1, False).flatten().tolist() == [False, False, False, True]


def test_vectorised_ranking_matches_per_image_lexsort():
    _, maps = _split_and_maps(n=6, size=7, seed=3)
    count = 20
    mask = rank_mask(torch.as_tensor(maps.astype(np.float32)), count, True).numpy()
    for image_maps, image_mask in zip(maps, mask):
        flat = image_maps.ravel().astype(np.float32)
        order = np.lexsort((np.arange(flat.size), -flat))  # key (-score, pixel index)
        expected = np.zeros(flat.size, bool)
        expected[order[:count]] = True
        assert (image_mask.ravel() == expected).all()


def test_pixel_count_rounds():
    assert pixel_count(0.3, 10, 10) == 30
    assert pixel_count(0.25, 3, 3) == 2  # 2.25 -> 2
    assert pixel_count(0.5, 3, 3) == 4  # 4.5 -> 4 (half to even)


def test_fill_value_is_rounded_channel_mean():
    images = np.zeros((2, 3, 1, 2), dtype=np.uint8)
    images[:, 0] = 10
    images[0, 1] = [[0, 1]]
    images[1, 1] = [[1, 1]]  # mean 0.75 -> 1
    images[:, 2] = [[[255, 254]]]  # mean 254.5 -> 254 (half to even)
    assert fill_value(images).tolist() == [10, 1, 254]


def test_load_maps_errors_name_the_file(tmp_path):
    split = fake_split(n=3, size=8)
    missing = tmp_path / "gradcam_train.npy"
    with pytest.raises(DataError, match="gradcam_train.npy do not exist; run the attribute stage"):
        load_maps(missing, split)
    save_npy(missing, np.zeros((3, 8, 7), np.float16))
    with pytest.raises(DataError, match=r"shape \(3, 8, 7\) but the tensor store has 3 images of 8x8"):
        load_maps(missing, split)
    bad = np.zeros((3, 8, 8), np.float16)
    bad[1, 2, 3] = np.nan
    save_npy(missing, bad)
    with pytest.raises(DataError, match="NaN"):
        load_maps(missing, split)
