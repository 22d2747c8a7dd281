"""SCG / CCG (confidence-gain paper, Eq. 2, Eq. 3, Algorithm 1): hand-computed cases on a
hand-made classifier, exclusions, agreement masks, batching invariance and the stage script."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.evaluate.confidence_gain import (
    DENOMINATOR, EMPTY_MASK, GROWTH_LIMIT, NEGATIVE_GAIN, OK, base_images, build_masks,
    confidence_gain, dilate, dilate_heatmap, dilation_name, gaussian_kernel_size, mask_name,
    mask_sets, opencv_sigma, select_images, top_fraction_mask)
from xaipipe.evaluate.removal import tie_orders
from xaipipe.models import build_model, save_model


def ties(n, pixels, seed=0):
    return tie_orders([f"img{i}" for i in range(n)], pixels, seed)

SIZE = 15
PIXELS = SIZE * SIZE
K = 50.0


class WeightedSum(nn.Module):
    """Two classes: logit 0 = K * (sum(x[:, 0] * weight) - threshold), logit 1 = 0.
    Class 0 wins when the weighted red mass exceeds the threshold."""

    def __init__(self, weight: torch.Tensor, threshold: float):
        super().__init__()
        self.weight, self.threshold = weight, threshold

    def forward(self, x):
        score = (x[:, 0] * self.weight).flatten(1).sum(1)
        return torch.stack([K * (score - self.threshold), torch.zeros_like(score)], dim=1)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def uniform_model(threshold_pixels: float, corner_weight: float = 1.0) -> WeightedSum:
    weight = torch.full((SIZE, SIZE), 1.0 / PIXELS)
    weight[0, 0] = corner_weight / PIXELS
    return WeightedSum(weight, threshold_pixels / PIXELS)


def single_pixel_mask(y: int, x: int, n: int = 1) -> torch.Tensor:
    mask = torch.zeros(1, n, SIZE, SIZE, dtype=torch.bool)
    mask[0, :, y, x] = True
    return mask


def run(model, masks, labels, max_growth=50, batch_size=8):
    n = masks.shape[1]
    images = torch.ones(n, 3, SIZE, SIZE)
    return confidence_gain(model, images, torch.zeros_like(images), torch.tensor(labels), masks,
                           max_growth=max_growth, batch_size=batch_size)


def test_ccg_grows_centre_pixel_twice_and_matches_hand_computation():
    # white image, black base (Z_k); class 0 needs more than 20 white pixels: the centre
    # pixel dilated twice is a 5x5 square of 25 pixels (1 -> 9 -> 25).
    result = run(uniform_model(20), single_pixel_mask(7, 7), [0])
    p_image, p_base = sigmoid(K * 205 / PIXELS), sigmoid(-K * 20 / PIXELS)
    p_accurate = sigmoid(K * 5 / PIXELS)
    assert result.growth.tolist() == [2]
    assert result.area.item() == pytest.approx(25 / PIXELS)
    assert result.ccg.item() == pytest.approx((p_accurate - p_base) * PIXELS / ((p_image - p_base) * 25), rel=1e-5)
    p_hybrid = sigmoid(K * (1 - 20) / PIXELS)
    assert result.scg.item() == pytest.approx((p_hybrid - p_base) / (p_image - p_base), rel=1e-5)


def test_dilation_at_the_border_grows_a_quarter_square():
    # corner pixel: 1 -> 4 -> 9 -> 16 -> 25 pixels; > 20 needs 4 dilations
    result = run(uniform_model(20), single_pixel_mask(0, 0), [0])
    assert result.growth.tolist() == [4]
    assert dilate(single_pixel_mask(0, 0)[0]).sum().item() == 4


def test_scg_is_one_for_the_whole_image_and_zero_when_hybrid_equals_base():
    model = uniform_model(20)
    full = torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)
    whole = run(model, full, [0])
    assert whole.scg.item() == pytest.approx(1.0)
    assert whole.ccg.item() == pytest.approx(1.0)  # no growth, A_AM = N
    empty = run(model, torch.zeros_like(full), [0])
    assert empty.scg.item() == 0.0
    assert empty.scg_status.tolist() == [OK]
    assert empty.ccg_status.tolist() == [EMPTY_MASK] and math.isnan(empty.ccg.item())


def test_exclusions_follow_the_paper():
    model = uniform_model(20)
    # label 1 on a white image: the black base is more "class 1" than the image -> denominator
    wrong = run(model, single_pixel_mask(7, 7), [1])
    assert wrong.scg_status.tolist() == [DENOMINATOR] and wrong.ccg_status.tolist() == [DENOMINATOR]
    # two dilations are needed, only one allowed -> growth limit; SCG is unaffected
    limited = run(model, single_pixel_mask(7, 7), [0], max_growth=1)
    assert limited.ccg_status.tolist() == [GROWTH_LIMIT] and limited.growth.tolist() == [-1]
    assert limited.scg_status.tolist() == [OK]
    # a negatively weighted corner pixel lowers p below the base (SCG excluded) but grown
    # to 36 pixels (-5 + 35 > 20) the hybrid is classified correctly with a positive gain
    negative = run(uniform_model(20, corner_weight=-5), single_pixel_mask(0, 0), [0])
    assert negative.scg_status.tolist() == [NEGATIVE_GAIN] and math.isnan(negative.scg.item())
    assert negative.ccg_status.tolist() == [OK] and negative.growth.tolist() == [5]
    # base already class 0 (threshold below 0): the corner pixel is "correct" at once but
    # with less confidence than the base -> CCG excluded for negative gain
    both = run(uniform_model(-20, corner_weight=-5), single_pixel_mask(0, 0), [0])
    assert both.ccg_status.tolist() == [NEGATIVE_GAIN]


def test_min_denominator_excludes_images_the_full_image_barely_explains():
    """p(I) - p(I_K) = 0.02 here: the paper's rule (0) keeps the image, where SCG is a ratio of
    noise; confidence_gain.min_denominator 0.05 (the default) excludes it from both metrics."""
    model = uniform_model(242.5)  # logit of the white image -3.89: p(I) = 0.02, p(base) ~ 0
    images = torch.ones(1, 3, SIZE, SIZE)
    p_image = torch.softmax(model(images), 1)[0, 0].item()
    assert p_image == pytest.approx(0.02, abs=1e-3)
    paper = run(model, single_pixel_mask(7, 7), [0])
    assert paper.scg_status.tolist() == [OK]
    floored = confidence_gain(model, images, torch.zeros_like(images), torch.tensor([0]),
                              single_pixel_mask(7, 7), max_growth=50, batch_size=8,
                              min_denominator=0.05)
    assert floored.scg_status.tolist() == [DENOMINATOR] == floored.ccg_status.tolist()
    from conftest import REPO
    from xaipipe.config import load_config
    assert load_config(REPO / "config.yaml")["confidence_gain"]["min_denominator"] == 0.05


def test_full_mask_that_stays_wrong_stops_early_as_growth_limit():
    # threshold above the whole white image: p(I) = sigmoid(-K/225) < 0.5 (misclassified)
    # but above p(I_K), so the denominator is valid and the mask grows to the whole image
    # (7 dilations from the centre of 15 x 15), then stops instead of trying 50 times
    model = uniform_model(PIXELS + 1)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    result = run(model, single_pixel_mask(7, 7), [0])
    assert result.ccg_status.tolist() == [GROWTH_LIMIT] and math.isnan(result.ccg.item())
    assert result.scg_status.tolist() == [OK]
    assert len(calls) == 2 + 8  # p(I), p(I_K), growth steps 0..7


def test_agreement_mask_is_the_intersection():
    maps = {"a": torch.arange(16.0).view(1, 4, 4), "b": torch.arange(16.0).flip(0).view(1, 4, 4)}
    maps["b"][0, 3, 3] = 100.0
    sets = mask_sets(["a", "b"], agreement=True)
    assert sets == [(("a", 0),), (("b", 0),), (("a", 0), ("b", 0))]
    masks = build_masks(maps, sets, rho=0.25, ties=ties(1, 16))
    assert masks.shape == (3, 1, 4, 4)
    assert torch.equal(masks[2], masks[0] & masks[1])
    assert masks[0].sum() == 4 and masks[2].sum() == 1 and masks[2][0, 3, 3]
    assert mask_sets(["a", "b", "c"], agreement=False) == [(("a", 0),), (("b", 0),), (("c", 0),)]


def test_heatmap_dilation_is_a_repeated_3x3_maximum_filter():
    """§5.2: grad's raw heat map dilated 0, 2 and 5 times with a 3x3 kernel."""
    heat = torch.zeros(1, 9, 9)
    heat[0, 4, 4], heat[0, 0, 8] = 2.0, 1.0
    assert torch.equal(dilate_heatmap(heat, 0), heat)
    twice = dilate_heatmap(heat, 2)
    assert torch.equal(twice[0, 2:7, 2:7], torch.full((5, 5), 2.0))  # 5 x 5 plateau of the peak
    assert twice[0, 1, 4] == 0.0 and twice[0, 0, 6] == 1.0 and twice[0, 2, 6] == 2.0
    assert twice[0, 0, 5] == 0.0  # the corner value spreads 2 pixels, inside the image only
    assert torch.equal(dilate_heatmap(heat, 5), dilate_heatmap(dilate_heatmap(heat, 2), 3))


def test_mask_sets_follow_the_papers_dilation_settings():
    sets = mask_sets(["gradient", "cmwp"], True, {"gradient": [0, 2, 5]}, {"gradient": 5})
    assert sets == [(("gradient", 0),), (("gradient", 2),), (("gradient", 5),), (("cmwp", 0),),
                    (("gradient", 5), ("cmwp", 0))]
    assert [mask_name(s) for s in sets] == ["gradient"] * 3 + ["cmwp", "gradient+cmwp"]
    assert [dilation_name(s) for s in sets] == ["0", "2", "5", "0", "5+0"]
    from xaipipe.config import load_config
    from conftest import REPO
    paper = load_config(REPO / "config.yaml")["confidence_gain"]
    assert paper["heatmap_dilations"] == {"gradient": [0, 2, 5]}
    assert paper["agreement_dilations"] == {"gradient": 5}


def test_dilated_heatmap_gives_a_more_connected_mask():
    """A high-entropy map (noise): its top 25 % scatters; dilated 2x it forms blobs whose
    pixels have more chosen neighbours (what the paper means by continuity)."""
    heat = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))
    tie = ties(1, 32 * 32)

    def neighbours(mask):
        """Mean number of chosen 8-neighbours of a chosen pixel."""
        m = mask.float()[:, None]
        count = torch.nn.functional.conv2d(m, torch.ones(1, 1, 3, 3), padding=1)[:, 0] - m[:, 0]
        return (count * mask).sum() / mask.sum()

    raw = top_fraction_mask(heat, 0.25, tie)
    dilated = top_fraction_mask(dilate_heatmap(heat, 2), 0.25, tie)
    assert raw.sum() == dilated.sum() == 256
    assert neighbours(dilated) > 2 * neighbours(raw)


def test_top_fraction_mask_counts_round_rho_times_pixels():
    maps = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0))
    mask = top_fraction_mask(maps, 0.05, ties(3, 100))
    assert mask.flatten(1).sum(1).tolist() == [5, 5, 5]
    assert (maps[mask].min() >= maps[~mask].view(3, -1).max(1).values.min())


def test_base_images_and_kernel_scaling():
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(base_images(images, "zero", 3, 1.0), torch.zeros_like(images))
    blurred = base_images(images, "gaussian", 5, 1.1)
    assert blurred.std() < images.std()
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(base_images(flat, "gaussian", 5, 1.1), flat)
    assert gaussian_kernel_size(17, 224) == 17
    assert gaussian_kernel_size(17, 64) == 5
    assert gaussian_kernel_size(17, 16) == 3
    assert opencv_sigma(17) == pytest.approx(2.9)


def test_batched_result_equals_one_image_at_a_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    images = torch.rand(6, 3, 12, 12)
    base = base_images(images, "gaussian", 3, 0.8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    masks = build_masks({"a": torch.rand(6, 12, 12), "b": torch.rand(6, 12, 12)},
                        mask_sets(["a", "b"], True), rho=0.1, ties=ties(6, 144))
    batched = confidence_gain(model, images, base, labels, masks, max_growth=6, batch_size=64)
    for i in range(6):
        one = confidence_gain(model, images[i:i + 1], base[i:i + 1], labels[i:i + 1],
                              masks[:, i:i + 1], max_growth=6, batch_size=1)
        for name, value in vars(one).items():
            expected = getattr(batched, name).view(3, 6)[:, i]
            assert torch.allclose(value, expected, equal_nan=True, atol=1e-6), name


def test_select_images_is_seeded_sorted_and_complete_when_small():
    assert select_images(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    picked = select_images(100, 10, 0)
    assert len(set(picked)) == 10 and list(picked) == sorted(picked)
    assert np.array_equal(picked, select_images(100, 10, 0))
    assert not np.array_equal(picked, select_images(100, 10, 1))


def stage_config(make_config, tmp_path, methods=("gradient", "random")) -> tuple[dict, str]:
    config = make_config({"explain": {"methods": list(methods)}, "resolution": 32,
                          "confidence_gain": {"num_images": 6, "max_growth": 3,
                                              "rhos": [0.25], "batch_size": 32}})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config, str(config_file)


def test_stage_writes_tidy_table(make_config, fake_variant_store, tmp_path):
    config, config_file = stage_config(make_config, tmp_path)
    val = fake_variant_store(config, "black", {"val": 8})["val"]
    torch.manual_seed(0)
    save_model(paths.model_weights(config, "black", replicate=0), build_model(4),
               {"num_classes": 4})
    rng = np.random.default_rng(0)
    for method in ("gradient", "random"):
        path = paths.attribution_map(config, "black", method, "val", replicate=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.random((len(val), 32, 32)).astype(np.float16))
    argv = ["--config", config_file, "--variant", "black", "--replicate", "0"]
    assert run_workflow_script("confidence_gain", argv) == 0
    table = pd.read_csv(paths.confidence_gain_table(config, "black", replicate=0),
                        dtype={"dilation": str})
    # gradient at the paper's three heat-map dilations, the pair at gradient's agreement one
    rows = sorted(zip(table["mask"], table["dilation"]))
    assert rows == sorted([("gradient", "0"), ("gradient", "2"), ("gradient", "5"),
                           ("random", "0"), ("gradient+random", "5+0")] * 2)
    assert set(table.kernel) == {"gaussian", "zero"} and set(table.rho) == {0.25}
    assert (table.n_images == 6).all()
    excluded = table[[c for c in table if c.startswith("scg_excluded")]].sum(axis=1)
    assert (table.n_scg + excluded == table.n_images).all()
    excluded = table[[c for c in table if c.startswith("ccg_excluded")]].sum(axis=1)
    assert (table.n_ccg + excluded == table.n_images).all()
    images = pd.read_parquet(paths.confidence_gain_images(config, "black", replicate=0))
    subset = [val.ids[i] for i in select_images(8, 6, config["seed"])]
    assert_images_agree_with_table(images, table, subset)


def assert_images_agree_with_table(images, table, ids):
    """The per-image SCG/CCG values (one row per image of the seeded subset, NaN = excluded)
    of every single-method mask average to the summary table's means and counts."""
    assert list(images.columns) == ["image_id", "subject", "metric", "value"]
    single = table[table["kind"] == "single"]
    subjects = {m if d == "0" else f"{m}@d{d}" for m, d in zip(single["mask"], single["dilation"])}
    assert set(images["subject"]) == subjects  # the agreement masks have no per-image rows
    for row in single.itertuples():
        subject = row.mask if row.dilation == "0" else f"{row.mask}@d{row.dilation}"
        for metric in ("scg", "ccg"):
            values = images[(images["subject"] == subject)
                            & (images["metric"] == f"{metric}_{row.kernel}_rho{row.rho:g}")]
            assert sorted(values["image_id"]) == sorted(ids)
            assert values["value"].count() == getattr(row, f"n_{metric}")
            np.testing.assert_allclose(values["value"].mean(), getattr(row, f"{metric}_mean"),
                                       rtol=1e-6)  # float32 values, float64 mean


def test_stage_missing_maps_exits_1_naming_file_and_stage(make_config, fake_variant_store,
                                                          tmp_path, capsys):
    config, config_file = stage_config(make_config, tmp_path)
    fake_variant_store(config, "black", {"val": 4})
    save_model(paths.model_weights(config, "black", replicate=0), build_model(4),
               {"num_classes": 4})
    argv = ["--config", config_file, "--variant", "black", "--replicate", "0"]
    assert run_workflow_script("confidence_gain", argv) == 1
    err = capsys.readouterr().err
    assert str(paths.attribution_map(config, "black", "gradient", "val", replicate=0)) in err
    assert "attribute stage" in err and "Traceback" not in err
    assert not paths.metrics_dir(config, "black", replicate=0).exists()  # not even a temp file
