"""Localisation against ground truth: energy in mask, the strict and the TorchRay pointing
game, chance level and centre baseline, background reliance, and the stage script."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.config import load_schema
from xaipipe.errors import ConfigError
from xaipipe.evaluate.localisation import (
    CENTER, CHANCE, MAJORITY, MODEL, POINTING_VARIANTS, Pointing, center_maps, class_means,
    energy_in_mask, hit_region, localisation_rows, pointing_game, pointing_settings,
    pointing_tolerance, reliance_correct, reliance_rows, run_untrained_localisation)
from xaipipe.evaluate.removal import tie_orders
from xaipipe.explain.oracle import oracle_maps
from xaipipe.models import build_model, save_model

BOTH = Pointing(variants=POINTING_VARIANTS, tolerance=2)


def ties(n=1, pixels=36, seed=0):
    return tie_orders([f"img{i}" for i in range(n)], pixels, seed)


def square_mask(size=6, lo=1, hi=4) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    mask[0, lo:hi, lo:hi] = 1
    return mask


def test_energy_is_one_for_a_map_supported_inside_the_mask():
    mask = square_mask()
    maps = torch.rand(1, 6, 6) * mask
    assert energy_in_mask(maps, mask).item() == pytest.approx(1.0)


def test_energy_hand_computed_and_negative_handling():
    mask = square_mask()
    maps = torch.zeros(1, 6, 6)
    maps[0, 2, 2] = 3.0    # inside
    maps[0, 0, 0] = 1.0    # outside
    maps[0, 5, 5] = -4.0   # outside, negative
    assert energy_in_mask(maps, mask, "clip").item() == pytest.approx(3 / 4)
    assert energy_in_mask(maps, mask, "abs").item() == pytest.approx(3 / 8)
    assert math.isnan(energy_in_mask(-maps.abs(), mask, "clip").item())  # no positive mass
    uniform = torch.ones(1, 6, 6)
    assert energy_in_mask(uniform, mask).item() == pytest.approx(9 / 36)  # = fg fraction


def test_pointing_game_hand_made_maps_and_ties():
    mask = square_mask()
    inside, outside = torch.zeros(1, 6, 6), torch.zeros(1, 6, 6)
    inside[0, 3, 3] = 1.0
    outside[0, 5, 0] = 1.0
    assert pointing_game(torch.cat([inside, outside]), torch.cat([mask, mask]),
                         ties(2)).tolist() == [1.0, 0.0]
    tie = torch.zeros(1, 6, 6)
    tie[0, 0, 5] = tie[0, 2, 2] = 1.0  # (0, 5) = flat 5 outside, (2, 2) = flat 14 inside
    first_5 = torch.tensor([[5, 14, *[i for i in range(36) if i not in (5, 14)]]])
    first_14 = torch.tensor([[14, 5, *[i for i in range(36) if i not in (5, 14)]]])
    assert pointing_game(tie, mask, first_5).tolist() == [0.0]
    assert pointing_game(tie, mask, first_14).tolist() == [1.0]


def test_pointing_game_of_a_flat_map_hits_at_the_chance_rate():
    """An all-zero map (ReLU-cut Grad-CAM) ties everywhere: the seeded random tie-break hits
    the object with probability = its area share (9/36 here), not 0 as "first pixel" did."""
    n = 2000
    masks = square_mask().repeat(n, 1, 1)
    hits = pointing_game(torch.zeros(n, 6, 6), masks, ties(n)).mean().item()
    assert abs(hits - 0.25) < 3 * np.sqrt(0.25 * 0.75 / n)
    assert torch.equal(pointing_game(torch.zeros(n, 6, 6), masks, ties(n)),
                       pointing_game(torch.zeros(n, 6, 6), masks, ties(n)))  # seeded


def test_rows_report_chance_as_mean_foreground_fraction():
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, :2] = 1     # 0.5
    masks[1, 0, 0] = 1   # 1/16
    maps = {"perfect": masks.astype(np.float16), "zero": np.zeros((2, 4, 4), np.float16)}
    table = pd.DataFrame(localisation_rows("black", maps, masks, "clip", ties(2, 16))).set_index(
        ["subject", "metric"])
    assert table.loc[("perfect", "energy_in_mask"), "mean"] == pytest.approx(1.0)
    assert table.loc[("perfect", "pointing_game"), "mean"] == pytest.approx(1.0)
    assert table.loc[("zero", "energy_in_mask"), "n"] == 0
    assert table.loc[("zero", "energy_in_mask"), "excluded"] == 2
    assert table.loc[(CHANCE, "energy_in_mask"), "mean"] == pytest.approx((0.5 + 1 / 16) / 2)
    assert table.loc[(CHANCE, "pointing_game"), "std"] == pytest.approx(np.std([0.5, 1 / 16], ddof=1))


def peak_map(y: int, x: int, size: int = 20) -> torch.Tensor:
    maps = torch.zeros(1, size, size)
    maps[0, y, x] = 1.0
    return maps


def test_torchray_hand_computed_tolerance_is_strictly_less_than():
    """Object rows/cols 10-12 of 20 x 20. Peak (11, 15): 3 px right of the object's pixel
    (11, 12). TorchRay accepts squared distance < tolerance**2: a miss at tolerance 3, a hit at
    4. Peak (15, 15): sqrt(3**2 + 3**2) = 4.24 px from the corner (12, 12): miss at 4, hit at 5."""
    mask = square_mask(size=20, lo=10, hi=13)
    order = ties(pixels=400)
    right, diagonal = peak_map(11, 15), peak_map(15, 15)
    assert pointing_game(right, mask, order).item() == 0.0  # strict
    assert pointing_game(right, hit_region(mask, 3), order).item() == 0.0
    assert pointing_game(right, hit_region(mask, 4), order).item() == 1.0
    assert pointing_game(diagonal, hit_region(mask, 4), order).item() == 0.0
    assert pointing_game(diagonal, hit_region(mask, 5), order).item() == 1.0
    assert pointing_game(peak_map(11, 11), hit_region(mask, 1), order).item() == 1.0  # on it


def test_hit_region_equals_torchrays_acceptance_test():
    """For every pixel as the point: TorchRay's ``((rows - v)**2 + (cols - u)**2 <
    tol**2) & mask`` has a pixel iff the point lies in :func:`hit_region`."""
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 12, 10)) < 0.04).astype(np.uint8)
    masks[2] = 0  # no foreground: nothing is ever hit
    rows, cols = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    for tolerance in (1, 2, 3, 5):
        region = hit_region(masks, tolerance).numpy()
        brute = np.array([[[((((rows - v) ** 2 + (cols - u) ** 2) < tolerance ** 2) & (m > 0)).any()
                            for u in range(10)] for v in range(12)] for m in masks])
        assert np.array_equal(region, brute), tolerance
    assert np.array_equal(hit_region(masks, 1).numpy(), masks > 0)  # tolerance 1 = strict
    with pytest.raises(ValueError, match="tolerance"):
        hit_region(masks, 0)


def test_tolerance_scales_to_the_resolution():
    # round(15 * r / 224), Python's round, at least 1
    assert pointing_tolerance(15, 224) == 15
    assert pointing_tolerance(15, 32) == 2    # 2.14
    assert pointing_tolerance(15, 40) == 3    # 2.68
    assert pointing_tolerance(15, 64) == 4    # 4.29
    assert pointing_tolerance(15, 8) == 1     # 0.54 -> 1, never an empty acceptance region
    with pytest.raises(ValueError):
        pointing_tolerance(0, 224)


def test_class_mean_differs_from_image_mean_on_unbalanced_classes():
    """Class 0: 3 images, all hits; class 1: 1 image, a miss. Per image 3/4, per class
    (1 + 0) / 2 = 1/2 (TorchRay's number)."""
    hits, labels = np.array([1.0, 1.0, 1.0, 0.0]), np.array([0, 0, 0, 1])
    per_class = class_means(hits, labels)
    assert per_class.to_dict() == {0: 1.0, 1: 0.0}
    assert per_class.mean() == pytest.approx(0.5) and hits.mean() == pytest.approx(0.75)
    maps = {"m": np.stack([peak_map(11, 11)[0].numpy()] * 3 + [peak_map(0, 0)[0].numpy()])}
    masks = square_mask(size=20, lo=10, hi=13).repeat(4, 1, 1).numpy()
    table = pd.DataFrame(localisation_rows("v", maps, masks, "clip", ties(4, 400),
                                           labels=labels, pointing=BOTH)).set_index(["subject", "metric"])
    assert table.loc[("m", "pointing_game"), "mean"] == pytest.approx(0.75)
    assert table.loc[("m", "pointing_game"), "n"] == 4
    assert table.loc[("m", "pointing_game_torchray"), "mean"] == pytest.approx(0.5)
    assert table.loc[("m", "pointing_game_torchray"), "n"] == 2  # classes
    with pytest.raises(ValueError, match="shape"):
        class_means(hits, labels[:3])


def test_center_baseline_hits_centred_objects_only():
    """20 x 20 images, centre pixel (10, 10). Object 1 covers it; object 2 (rows 0-2, cols
    0-2) is 7 px from it in each axis (9.9 px): a miss; object 3 (rows 10-12, cols 13-15)
    is 3 px right of it: a miss strictly, a hit with tolerance 4."""
    masks = torch.cat([square_mask(20, 8, 13), square_mask(20, 0, 3), square_mask(20, 0, 0)])
    masks[2, 10:13, 13:16] = 1
    center = center_maps(3, 20, 20)
    assert center.flatten(1).argmax(1).tolist() == [10 * 20 + 10] * 3
    order = ties(3, 400)
    assert pointing_game(center, hit_region(masks, 1), order).tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(center, hit_region(masks, 4), order).tolist() == [1.0, 0.0, 1.0]
    table = pd.DataFrame(localisation_rows(
        "v", {}, masks.numpy(), "clip", order, labels=np.array([0, 1, 1]),
        pointing=Pointing(variants=POINTING_VARIANTS, tolerance=4))).set_index(["subject", "metric"])
    assert table.loc[(CENTER, "pointing_game_torchray"), "mean"] == pytest.approx((1 + 0.5) / 2)
    assert (CENTER, "pointing_game") not in table.index  # the centre row is TorchRay's only


def test_torchray_ranks_oracle_object_above_random_above_oracle_background():
    """Known good vs known bad: the object's own map always hits; the background's maximum
    lies on the background, and hits only within the tolerance band around the object."""
    rng = np.random.default_rng(1)
    n, size = 200, 32
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i, (y, x) in enumerate(rng.integers(0, size - 8, size=(n, 2))):
        masks[i, y:y + 8, x:x + 8] = 1
    ids = [f"img{i}" for i in range(n)]
    maps = {m: oracle_maps(masks, ids, m, seed=0) for m in ("oracle_object", "oracle_background")}
    maps["random"] = rng.random((n, size, size)).astype(np.float32)
    labels = np.arange(n) % 5
    table = pd.DataFrame(localisation_rows("v", maps, masks, "clip", ties(n, size * size),
                                           labels=labels, pointing=BOTH)).set_index(["subject", "metric"])
    score = table.xs("pointing_game_torchray", level="metric")["mean"]
    assert score["oracle_object"] == 1.0
    assert score["oracle_object"] > score["random"] > score["oracle_background"]
    assert score["random"] == pytest.approx(score[CHANCE], abs=0.1)  # chance = region share


def test_rows_need_labels_for_torchray_and_keep_the_strict_rows():
    masks = square_mask().repeat(2, 1, 1).numpy()
    maps = {"m": np.random.default_rng(0).random((2, 6, 6)).astype(np.float32)}
    strict = localisation_rows("v", maps, masks, "clip", ties(2))
    both = localisation_rows("v", maps, masks, "clip", ties(2), labels=np.array([0, 1]), pointing=BOTH)
    assert [r for r in both if r["metric"] != "pointing_game_torchray"] == strict
    only = localisation_rows("v", maps, masks, "clip", ties(2), labels=np.array([0, 1]),
                             pointing=Pointing(variants=("torchray",), tolerance=2))
    assert {r["metric"] for r in only} == {"energy_in_mask", "pointing_game_torchray"}
    with pytest.raises(ValueError, match="labels"):
        localisation_rows("v", maps, masks, "clip", ties(2), pointing=BOTH)


def test_pointing_config_defaults_and_bad_values(make_config):
    settings = pointing_settings(make_config({"resolution": 64}))
    assert settings == Pointing(variants=("strict", "torchray"), tolerance=4)
    schema = load_schema()["properties"]["localisation"]["properties"]["pointing"]
    assert tuple(schema["items"]["enum"]) == POINTING_VARIANTS
    for bad, key in (({"pointing": ["strict", "torchray_15"]}, "localisation.pointing.1"),
                     ({"pointing_tolerance_224": 0}, "localisation.pointing_tolerance_224"),
                     ({"pointing": ["strict", "strict"]}, "localisation.pointing")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            make_config({"localisation": bad})


class MeanBrightness(torch.nn.Module):
    """Class 1 if the mean pixel value is above 0.3, else class 0."""

    def forward(self, x):
        score = x.mean(dim=(1, 2, 3))
        return torch.stack([0.3 - score, score - 0.3], dim=1)


def test_background_reliance_on_hand_made_model():
    from xaipipe.data.store import Split

    images = np.full((2, 3, 4, 4), 255, dtype=np.uint8)
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[:, :1] = 1  # foreground = top row (25 %), background 75 %
    split = Split(images=images, masks=masks, labels=np.array([1, 1, 0][:2]),
                  meta={"class_names": ["dark", "bright", "other"]})
    correct = reliance_correct(MeanBrightness(), split, torch.device("cpu"), 8)
    assert {k: v.tolist() for k, v in correct.items()} == {
        "accuracy_full": [True, True], "accuracy_fg_only": [False, False],
        "accuracy_bg_only": [True, True]}
    table = pd.DataFrame(reliance_rows("standard", correct, split))
    model = table[table.subject == MODEL]
    means = dict(zip(model.metric, model["mean"]))
    # full image bright -> 1; foreground only: mean 0.25 -> class 0; background only: 0.75 -> 1
    assert means == {"accuracy_full": 1.0, "accuracy_fg_only": 0.0, "accuracy_bg_only": 1.0}
    # every accuracy beside what knows nothing: 1 / 3 classes, and always "bright" (2 of 2)
    for subject, rate in ((CHANCE, 1 / 3), (MAJORITY, 1.0)):
        rows = table[table.subject == subject]
        assert sorted(rows.metric) == sorted(means) and np.allclose(rows["mean"], rate)
    # foreground = top 3 rows (75 %): a black hole leaves mean 0.25 -> class 0 (wrong), the
    # default imputation fills it from the bright background -> mean 1 -> class 1 (right)
    masks[:, :3] = 1
    for fill, expected in (("black", 0.0), ("impute", 1.0)):
        correct = reliance_correct(MeanBrightness(), split, torch.device("cpu"), 8, fill)
        rows = reliance_rows("standard", correct, split)
        assert {r["metric"]: r["mean"] for r in rows if r["subject"] == MODEL}[
            "accuracy_bg_only"] == expected


def stage_config(make_config, tmp_path) -> tuple[dict, str]:
    config = make_config({"explain": {"methods": ["gradient", "random"]}, "resolution": 32})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config, str(config_file)


def test_stage_writes_table(make_config, fake_variant_store, tmp_path):
    config, config_file = stage_config(make_config, tmp_path)
    val = fake_variant_store(config, "noise", {"val": 6})["val"]
    save_model(paths.model_weights(config, "noise", replicate=0), build_model(4),
               {"num_classes": 4})
    for method, maps in (("gradient", val.masks), ("random", np.ones_like(val.masks))):
        path = paths.attribution_map(config, "noise", method, "val", replicate=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maps.astype(np.float16))
    argv = ["--config", config_file, "--variant", "noise", "--replicate", "0"]
    assert run_workflow_script("localisation", argv) == 0
    table = pd.read_csv(paths.localisation_table(config, "noise", replicate=0)).set_index(
        ["subject", "metric"])
    assert table.loc[("gradient", "energy_in_mask"), "mean"] == pytest.approx(1.0)
    assert table.loc[("random", "energy_in_mask"), "mean"] == pytest.approx(
        table.loc[(CHANCE, "energy_in_mask"), "mean"], rel=1e-4)
    assert {"accuracy_full", "accuracy_fg_only", "accuracy_bg_only"} <= set(table.loc[MODEL].index)
    # TorchRay game: the oracle-like "gradient" map always hits; n = classes (labels i % 4)
    assert table.loc[("gradient", "pointing_game_torchray"), "mean"] == pytest.approx(1.0)
    assert table.loc[("gradient", "pointing_game_torchray"), "n"] == 4
    assert 0 <= table.loc[(CENTER, "pointing_game_torchray"), "mean"] <= 1
    images = pd.read_parquet(paths.localisation_images(config, "noise", replicate=0))
    assert_images_agree_with_table(images, table, val.ids, ["gradient", "random"])


def assert_images_agree_with_table(images, table, ids, methods):
    """The per-image table holds every image's energy in mask and strict pointing game per
    method and the model's full / fg-only / bg-only correctness, which average (NaN =
    excluded) to the summary table's rows."""
    assert list(images.columns) == ["image_id", "subject", "metric", "value"]
    expected = {(m, k) for m in methods for k in ("energy_in_mask", "pointing_game")}
    expected |= {(MODEL, f"accuracy_{k}") for k in ("full", "fg_only", "bg_only")}
    assert set(zip(images["subject"], images["metric"])) == expected
    for (subject, metric), group in images.groupby(["subject", "metric"]):
        assert list(group["image_id"]) == list(ids)
        row = table.loc[(subject, metric)]
        assert group["value"].count() == row["n"]
        assert group["value"].isna().sum() == row["excluded"]
        assert group["value"].mean() == pytest.approx(row["mean"], rel=1e-6)  # float32 mean


def test_stage_missing_model_exits_1_without_output(make_config, fake_variant_store, tmp_path, capsys):
    config, config_file = stage_config(make_config, tmp_path)
    val = fake_variant_store(config, "noise", {"val": 3})["val"]
    for method in ("gradient", "random"):
        path = paths.attribution_map(config, "noise", method, "val", replicate=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros(val.masks.shape, np.float16))
    argv = ["--config", config_file, "--variant", "noise", "--replicate", "0"]
    assert run_workflow_script("localisation", argv) == 1
    err = capsys.readouterr().err
    assert str(paths.model_weights(config, "noise", replicate=0)) in err and "train stage" in err
    assert not paths.metrics_dir(config, "noise", replicate=0).exists()


def test_untrained_stage_scores_an_untrained_models_maps(make_config, fake_variant_store,
                                                          tmp_path):
    config, config_file = stage_config(make_config, tmp_path)
    fake_variant_store(config, "standard", {"val": 6})
    assert run_workflow_script("localisation_untrained", ["--config", config_file]) == 0
    table = pd.read_csv(paths.untrained_localisation_table(config))
    assert set(table["variant"]) == {"untrained"}
    # random is a reference map, not the untrained model's explanation
    assert set(table["subject"]) == {"gradient", CHANCE, CENTER}
    gradient = table[(table.subject == "gradient") & (table.metric == "energy_in_mask")]
    assert 0 <= gradient["mean"].iloc[0] <= 1 and gradient["n"].iloc[0] == 6
    again = run_untrained_localisation(config)  # seeded: the same numbers
    pd.testing.assert_frame_equal(again.reset_index(drop=True), table, check_dtype=False)


def test_untrained_stage_without_the_standard_store_exits_1(make_config, tmp_path, capsys):
    config, config_file = stage_config(make_config, tmp_path)
    assert run_workflow_script("localisation_untrained", ["--config", config_file]) == 1
    err = capsys.readouterr().err
    assert "tensor store" in err and "variant stage" in err
    assert not paths.untrained_localisation_table(config).exists()
