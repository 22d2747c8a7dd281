"""Undesirable pixels: F-TC / F-NTC masks and phi (Kang et al., Eq. 1-8)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_workflow_script
from torch import nn

from xaipipe import paths
from xaipipe.explain import undesirable as U

MASK = torch.tensor([[0.0, 1.0, 0.0],
                     [0.0, 0.0, 0.0],
                     [1.0, 0.0, 0.0]]).view(1, 1, 3, 3)


def settings(**overrides) -> dict:
    base = {"methods": ["ftc", "fntc"], "target_class": "label", "mask_size": 4, "blur_sigma": 2.0,
            "blur_kernel": 5, "lr": 0.1, "iterations": 40, "lambda1": 0.01, "lambda2": 0.01, "beta": 2.0,
            "gamma": 0.3, "reg_reduction": "mean", "threshold": 0.6, "min_residual": 1e-6,
            "num_images": 4, "batch_size": 2, "figure_images": 2}
    return {**base, **overrides}


# --- Eq. 3 terms, by hand ----------------------------------------------------------------

def test_tv_norm_hand_computed():
    # positions (i, j) with both neighbours: (0,0): dy 0, dx 1; (0,1): dy -1, dx -1;
    # (1,0): dy 1, dx 0; (1,1): 0, 0
    assert U.tv_norm(MASK, beta=2.0).item() == pytest.approx(1 + math.sqrt(2) + 1 + 0, abs=1e-5)
    assert U.tv_norm(MASK, beta=1.0).item() == pytest.approx(1 + 2 + 1 + 0, abs=1e-5)
    assert U.tv_norm(torch.ones(2, 1, 5, 5), beta=2.0).tolist() == pytest.approx([0.0, 0.0], abs=1e-4)


def test_tv_norm_gradient_is_finite_on_a_flat_mask():
    mask = torch.ones(1, 1, 4, 4, requires_grad=True)
    U.tv_norm(mask, beta=2.0).sum().backward()
    assert torch.isfinite(mask.grad).all()


def test_l1_area_and_mask_regulariser_hand_computed():
    assert U.l1_area(MASK).item() == pytest.approx(7.0)  # seven zeros
    assert U.l1_area(torch.full((1, 1, 2, 2), 0.25)).item() == pytest.approx(3.0)
    expected = 1.7 * (2 + math.sqrt(2)) + 3.0 * 7.0
    assert U.mask_regulariser(MASK, 1.7, 3.0, 2.0, "sum").item() == pytest.approx(expected, abs=1e-4)
    assert U.mask_regulariser(MASK, 1.7, 3.0, 2.0, "mean").item() == pytest.approx(expected / 9, abs=1e-4)


# --- Eq. 4-7 terms, by hand --------------------------------------------------------------

LOGITS_X = torch.tensor([[1.0, 2.0, 3.0]])
LOGITS_Q = torch.tensor([[5.0, 1.0, 4.0]])


def test_ftc_regulariser_is_mean_change_of_non_target_logits():
    # k = 0: others change by -1 and +1 -> mean 0; k = 1: +4 and +1 -> mean 2.5
    assert U.ftc_regulariser(LOGITS_Q, LOGITS_X, torch.tensor([0]), 0.3).item() == pytest.approx(0.0)
    assert U.ftc_regulariser(LOGITS_Q, LOGITS_X, torch.tensor([1]), 0.3).item() == pytest.approx(0.3 * 2.5)


def test_fntc_regulariser_is_change_of_target_logit():
    assert U.fntc_regulariser(LOGITS_Q, LOGITS_X, torch.tensor([1]), 0.3).item() == pytest.approx(0.3 * 1.0)
    assert U.fntc_regulariser(LOGITS_Q, LOGITS_X, torch.tensor([0]), 0.3).item() == pytest.approx(0.3 * 4.0)


def test_losses_combine_softmax_and_regulariser():
    z = sum(math.exp(v) for v in (5.0, 1.0, 4.0))
    target = torch.tensor([1])
    ftc = U.ftc_loss(LOGITS_Q, LOGITS_X, target, 0.3).item()
    fntc = U.fntc_loss(LOGITS_Q, LOGITS_X, target, 0.3).item()
    assert ftc == pytest.approx(-math.exp(1.0) / z + 0.3 * 2.5, abs=1e-6)
    assert fntc == pytest.approx((math.exp(5.0) + math.exp(4.0)) / z + 0.3 * 1.0, abs=1e-6)


# --- Eq. 1, 8 and pixel statistics -------------------------------------------------------

def test_perturbation_keeps_image_where_mask_is_one_and_blurs_where_zero():
    images = torch.rand(2, 3, 8, 8)
    blurred = U.blur(images, 5, 2.0)
    ones = U.upsample_mask(torch.ones(2, 1, 4, 4), (8, 8))
    assert torch.allclose(U.perturb(images, blurred, ones), images)
    assert torch.allclose(U.perturb(images, blurred, 0 * ones), blurred)
    assert not torch.allclose(blurred, images)


def test_phi_hand_computed_and_skips_zero_residual():
    value, used = U.phi(np.array([0.5, 0.2, 1.0]), np.array([0.75, 0.6, 1.0]), min_residual=1e-6)
    assert (value, used) == (pytest.approx(50.0), 2)  # (0.25/0.5, 0.4/0.8) * 100
    value, used = U.phi(np.array([0.5, 0.5]), np.array([0.25, 1.0]), min_residual=1e-6)
    assert value == pytest.approx((-50.0 + 100.0) / 2)
    assert math.isnan(U.phi(np.array([1.0]), np.array([1.0]), 1e-6)[0])


def test_undesirable_pixels_threshold_one_minus_mask():
    assert U.undesirable_pixels(torch.full((1, 1, 2, 2), 0.3), (4, 4), 0.6).all()  # 0.7 > 0.6
    assert not U.undesirable_pixels(torch.full((1, 1, 2, 2), 0.4), (4, 4), 0.6).any()  # 0.6 is not above


def test_pixel_stats_background_share_hand_computed():
    undesirable = np.zeros((2, 2, 2), bool)
    undesirable[0, 0, :] = True        # image 0: 2 undesirable pixels, 1 on background
    undesirable[1, 1, 1] = True        # image 1: 1 undesirable pixel, on foreground
    foreground = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 1]]], np.uint8)
    summary = U.PixelStats.measure(undesirable, foreground).summary()
    assert summary["undesirable_ratio"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert summary["background_share"] == pytest.approx(1 / 3)
    assert summary["background_fraction"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert summary["undesirable_pixels"] == 3


def test_choose_images_is_seeded_sorted_and_capped():
    first = U.choose_images(50, 10, seed=3)
    assert first.tolist() == sorted(set(first.tolist())) and len(first) == 10
    assert np.array_equal(first, U.choose_images(50, 10, seed=3))
    assert not np.array_equal(first, U.choose_images(50, 10, seed=4))
    assert U.choose_images(5, 10, seed=0).tolist() == [0, 1, 2, 3, 4]


# --- the optimisation finds the hindering region -----------------------------------------

class LeftTexture(nn.Module):
    """2 classes; only the left half's texture (mean |horizontal gradient|) matters:
    ``hurts_target`` -> logit 0 = 4 * (0.8 - tv), else logit 1 = 4 * (tv - 0.2)."""

    def __init__(self, hurts_target: bool):
        super().__init__()
        self.hurts_target = hurts_target

    def forward(self, x):
        left = x[:, :, :, : x.shape[3] // 2]
        tv = (left[:, :, :, 1:] - left[:, :, :, :-1]).abs().flatten(1).mean(1)
        zero = torch.zeros_like(tv)
        if self.hurts_target:
            return torch.stack([4 * (0.8 - tv), zero], 1)
        return torch.stack([zero, 4 * (tv - 0.2)], 1)


@pytest.mark.parametrize("method, hurts_target", [("ftc", True), ("fntc", False)])
def test_masks_blur_the_hindering_half_only(method, hurts_target):
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float()
    images = checker.expand(1, 3, 16, 16).clone()
    mask = U.learn_masks(LeftTexture(hurts_target), images, torch.tensor([0]), method,
                         settings(lambda1=0.001, lambda2=0.05), progress=False)
    assert mask.shape == (1, 1, 4, 4)
    assert mask[..., 0].mean() < 0.5      # left columns blurred
    assert mask[..., 3].mean() > 0.9      # right columns kept


# --- the stage ---------------------------------------------------------------------------

def write_config(config: dict) -> str:
    path = Path(config["results_dir"]).parent / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_stage_writes_results_csv_masks_and_figure(make_config, fake_variant_store, save_untrained_model):
    config = make_config({"resolution": 16, "undesirable": settings(iterations=1, blur_kernel=3, num_images=2)})
    fake_variant_store(config, "mixed", {"val": 3}, size=16, num_classes=3)
    save_untrained_model(config, "mixed", num_classes=3)
    argv = ["--config", write_config(config), "--variant", "mixed", "--replicate", "0"]
    assert run_workflow_script("undesirable", argv) == 0
    out = paths.undesirable_dir(config, "mixed", replicate=0)
    assert sorted(p.name for p in out.iterdir()) == ["examples.png", "masks_fntc.npy", "masks_ftc.npy",
                                                      "per_image.csv", "results.json"]
    results = json.loads((out / "results.json").read_text())
    assert results["num_images"] == 2 and set(results["methods"]) == {"ftc", "fntc"}
    assert results["replicate"] == 0
    table = pd.read_csv(out / "per_image.csv")
    assert len(table) == 4 and (table["target"] == table["label"]).all()
    for method, rows in table.groupby("method"):
        assert results["methods"][method]["phi"] == pytest.approx(rows["relative_improvement"].mean(), rel=1e-4)
        assert results["methods"][method]["undesirable_ratio"] == pytest.approx(rows["undesirable_ratio"].mean())
    masks = np.load(out / "masks_ftc.npy")
    assert masks.dtype == np.float16 and masks.shape == (2, 4, 4)
    assert 0.0 <= masks.min() and masks.max() <= 1.0


def test_phi_targets_the_top_predicted_class_by_default(make_config, fake_variant_store,
                                                       save_untrained_model):
    """Kang et al. Eq. 8: "h is a class that has the highest accuracy for an image"."""
    config = make_config({"resolution": 16})
    assert config["undesirable"]["target_class"] == "predicted"
    options = {k: v for k, v in settings(iterations=1, blur_kernel=3, num_images=3).items()
               if k != "target_class"}
    config["undesirable"].update(options)
    fake_variant_store(config, "mixed", {"val": 3}, size=16, num_classes=3)
    save_untrained_model(config, "mixed", num_classes=3)
    argv = ["--config", write_config(config), "--variant", "mixed", "--replicate", "0"]
    assert run_workflow_script("undesirable", argv) == 0
    table = pd.read_csv(paths.undesirable_dir(config, "mixed", replicate=0) / "per_image.csv")
    assert (table["target"] == table["pred_before"]).all()
    assert (table["target"] != table["label"]).any()  # an untrained model: h is not the label


def test_stage_missing_inputs_are_clear_errors(make_config, fake_variant_store, save_untrained_model, capsys):
    config = make_config({"resolution": 16})
    argv = ["--config", write_config(config), "--variant", "black", "--replicate", "0"]
    assert run_workflow_script("undesirable", argv) == 1
    assert "train stage" in capsys.readouterr().err
    save_untrained_model(config, "black", num_classes=3)
    assert run_workflow_script("undesirable", argv) == 1
    assert "rerun the variant stage" in capsys.readouterr().err
    assert not paths.undesirable_dir(config, "black", replicate=0).exists()
