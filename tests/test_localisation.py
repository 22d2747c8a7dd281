"""Localisation against ground truth: energy in mask, pointing game, chance level, background
reliance, and the stage script."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.evaluate.localisation import (
    CHANCE, MAJORITY, MODEL, energy_in_mask, localisation_rows, pointing_game, reliance_rows,
    run_untrained_localisation)
from xaipipe.evaluate.removal import tie_orders
from xaipipe.models import build_model, save_model


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
    table = pd.DataFrame(reliance_rows("standard", MeanBrightness(), split, torch.device("cpu"), 8))
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
        rows = reliance_rows("standard", MeanBrightness(), split, torch.device("cpu"), 8, fill)
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
    save_model(paths.model_weights(config, "noise"), build_model(4), {"num_classes": 4})
    for method, maps in (("gradient", val.masks), ("random", np.ones_like(val.masks))):
        path = paths.attribution_map(config, "noise", method, "val")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maps.astype(np.float16))
    assert run_workflow_script("localisation", ["--config", config_file, "--variant", "noise"]) == 0
    table = pd.read_csv(paths.localisation_table(config, "noise")).set_index(["subject", "metric"])
    assert table.loc[("gradient", "energy_in_mask"), "mean"] == pytest.approx(1.0)
    assert table.loc[("random", "energy_in_mask"), "mean"] == pytest.approx(
        table.loc[(CHANCE, "energy_in_mask"), "mean"], rel=1e-4)
    assert {"accuracy_full", "accuracy_fg_only", "accuracy_bg_only"} <= set(table.loc[MODEL].index)


def test_stage_missing_model_exits_1_without_output(make_config, fake_variant_store, tmp_path, capsys):
    config, config_file = stage_config(make_config, tmp_path)
    val = fake_variant_store(config, "noise", {"val": 3})["val"]
    for method in ("gradient", "random"):
        path = paths.attribution_map(config, "noise", method, "val")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros(val.masks.shape, np.float16))
    assert run_workflow_script("localisation", ["--config", config_file, "--variant", "noise"]) == 1
    err = capsys.readouterr().err
    assert str(paths.model_weights(config, "noise")) in err and "train stage" in err
    assert not paths.metrics_dir(config, "noise").exists()


def test_untrained_stage_scores_an_untrained_models_maps(make_config, fake_variant_store,
                                                          tmp_path):
    config, config_file = stage_config(make_config, tmp_path)
    fake_variant_store(config, "standard", {"val": 6})
    assert run_workflow_script("localisation_untrained", ["--config", config_file]) == 0
    table = pd.read_csv(paths.untrained_localisation_table(config))
    assert set(table["variant"]) == {"untrained"}
    # random is a reference map, not the untrained model's explanation
    assert set(table["subject"]) == {"gradient", CHANCE}
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
