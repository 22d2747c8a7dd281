"""Pixel ranking and ROAR/KAR removal: exact counts, whole pixels, seeded random ties."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from conftest import fake_split
from xaipipe.errors import DataError
from xaipipe.evaluate.removal import (fill_value, load_maps, pixel_count, rank_mask,
                                      rank_order, remove_pixels, tie_orders)
from xaipipe.io import save_npy

FILL = np.array([1, 2, 3], dtype=np.uint8)
SEED = 7


def _identity_ties(n, pixels):
    return torch.arange(pixels).repeat(n, 1)


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
    out = remove_pixels(split, maps, "roar", fraction, FILL, SEED)
    filled = _filled(out.images)
    assert (filled.sum(axis=(1, 2)) == round(fraction * 64)).all()
    # untouched pixels keep every channel; no pixel is changed in only some channels
    changed = (out.images != split.images).any(axis=1)
    assert (changed == filled).all()
    assert out.meta["removal"] == {"kind": "roar", "fraction": fraction,
                                   "pixels_removed": round(fraction * 64), "fill": [1, 2, 3],
                                   "tie_seed": SEED}


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.7])
def test_kar_kept_keeps_exactly_round_fraction_top_pixels(fraction):
    split, maps = _split_and_maps(seed=1)
    roar = _filled(remove_pixels(split, maps, "roar", fraction, FILL, SEED).images)
    kar = _filled(remove_pixels(split, maps, "kar", fraction, FILL, SEED,
                                kar_fraction="kept").images)
    assert ((~kar).sum(axis=(1, 2)) == round(fraction * 64)).all()
    assert (roar == ~kar).all()  # KAR keeps exactly what ROAR removes


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.7])
def test_kar_removed_replaces_the_least_important_fraction(fraction):
    """Survey §4.4: KAR identifies the least important pixels instead of the most important
    ones, at the same percentages: KAR at f replaces round(f*H*W) pixels, those ROAR at
    1 - f keeps."""
    split, maps = _split_and_maps(seed=1)
    kar = _filled(remove_pixels(split, maps, "kar", fraction, FILL, SEED).images)
    assert (kar.sum(axis=(1, 2)) == round(fraction * 64)).all()
    roar = _filled(remove_pixels(split, maps, "roar", 1 - fraction, FILL, SEED).images)
    assert (kar == ~roar).all()
    low = maps.astype(np.float32).reshape(len(maps), -1)
    assert all(m[k.ravel()].max() <= m[~k.ravel()].min() for m, k in zip(low, kar))


def test_top_pixels_are_the_highest_scores():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    ties = tie_orders(["a"], 4, SEED)
    assert rank_mask(maps, 2, True, ties).tolist() == [[[False, True], [True, False]]]
    assert rank_mask(maps, 1, False, ties).tolist() == [[[True, False], [False, False]]]


def test_ties_follow_the_given_permutation_by_hand():
    maps = torch.tensor([[[3.0, 1.0], [3.0, 2.0]]])  # flat scores 3, 1, 3, 2
    ties = torch.tensor([[2, 3, 0, 1]])  # pixel 2 before 0 among the tied 3s
    assert rank_order(maps, ties).tolist() == [[2, 0, 3, 1]]
    assert rank_mask(maps, 1, True, ties).flatten().tolist() == [False, False, True, False]
    # LeRF/KAR remove the complement of the top (H*W - count): among equal lowest scores the
    # one later in the permutation goes first
    flat = torch.zeros(1, 2, 2)
    assert rank_mask(flat, 1, True, ties).flatten().tolist() == [False, False, True, False]
    assert rank_mask(flat, 1, False, ties).flatten().tolist() == [False, True, False, False]


def test_tied_pixels_are_spread_uniformly_not_in_raster_order():
    """A flat map (IG on a black background, ReLU-cut Grad-CAM): the tied pixels chosen are
    spread over all rows, where a raster-order tie-break takes whole top rows."""
    size, n, count = 32, 40, 256
    maps = torch.zeros(n, size, size)
    maps[:, 20:24, 20:24] = 1.0  # 16 top pixels, the other 240 chosen come from the tie
    ids = [f"img{i}" for i in range(n)]
    chosen = rank_mask(maps, count, True, tie_orders(ids, size * size, SEED))
    tied = chosen & (maps == 0)
    rows = tied.sum(dim=(0, 2)).numpy()
    expected = np.where((np.arange(size) >= 20) & (np.arange(size) < 24), 28, 32)
    expected = expected / expected.sum() * rows.sum()
    assert chisquare(rows, expected).pvalue > 1e-3, rows
    raster = rank_mask(maps, count, True, _identity_ties(n, size * size)) & (maps == 0)
    assert raster.sum(dim=(0, 2))[8:].sum() == 0  # what the old tie-break did: rows 0-7 only
    assert chisquare(raster.sum(dim=(0, 2)).numpy() + 1e-9, expected).pvalue < 1e-10


def test_tie_orders_are_seeded_per_image_id_and_shared_by_methods():
    a = tie_orders(["x", "y", "z"], 50, SEED)
    assert torch.equal(a, tie_orders(["x", "y", "z"], 50, SEED))
    assert torch.equal(a[1:], tie_orders(["y", "z"], 50, SEED))  # row order does not matter
    assert not torch.equal(a, tie_orders(["x", "y", "z"], 50, SEED + 1))
    assert all(sorted(row.tolist()) == list(range(50)) for row in a)  # permutations
    # two methods with the same flat region choose the same tied pixels
    split, _ = _split_and_maps(n=4, size=8)
    flat = np.zeros((4, 8, 8), np.float32)
    out_a = remove_pixels(split, flat, "roar", 0.5, FILL, SEED)
    out_b = remove_pixels(split, flat.copy(), "roar", 0.5, FILL, SEED)
    assert np.array_equal(out_a.images, out_b.images)
    other = remove_pixels(split, flat, "roar", 0.5, FILL, SEED + 1)
    assert not np.array_equal(out_a.images, other.images)


def test_vectorised_ranking_matches_per_image_lexsort():
    _, maps = _split_and_maps(n=6, size=7, seed=3)
    count = 20
    ties = tie_orders([f"i{k}" for k in range(6)], 49, SEED)
    mask = rank_mask(torch.as_tensor(maps.astype(np.float32)), count, True, ties).numpy()
    for image_maps, image_mask, perm in zip(maps, mask, ties.numpy()):
        flat = image_maps.ravel().astype(np.float32)
        position = np.empty(flat.size, int)
        position[perm] = np.arange(flat.size)  # where each pixel sits in the permutation
        order = np.lexsort((position, -flat))  # key (-score, position)
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
