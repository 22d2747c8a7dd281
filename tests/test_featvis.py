"""Feature visualisation (Simonyan et al. Eq. 1 with L2; Nielsen et al. section IV)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_workflow_script
from torch import nn

from xaipipe import paths
from xaipipe.errors import DataError
from xaipipe.explain import featvis
from xaipipe.models import IMAGENET_MEAN


def tiny_cnn(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, num_classes))


def write_config(config: dict) -> str:
    path = Path(config["results_dir"]).parent / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


class LinearScore(nn.Module):
    """logit_c = sum(w_c * x): its L2-regularised maximiser is known in closed form."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.flatten(1).T


def settings(**overrides) -> dict:
    base = {"mode": "l2", "steps": 5, "lr": 0.05, "l2_weight": 1e-4, "l2_reference": "normalized",
            "init_std": 0.1, "jitter": 2, "tv_weight": 5e-4, "fourier": True, "top_images": 2, "batch_size": 4}
    return {**base, **overrides}


def test_l2_penalty_hand_computed():
    half = torch.full((1, 3, 2, 2), 0.5)
    assert featvis.l2_penalty(half, "pixel").item() == pytest.approx(0.25 * 12)
    mean_image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert featvis.l2_penalty(mean_image, "normalized").tolist() == pytest.approx([0.0, 0.0], abs=1e-10)
    with pytest.raises(ValueError, match="unknown l2 reference"):
        featvis.l2_penalty(half, "other")


def test_total_variation_hand_computed():
    stripes = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert featvis.total_variation(stripes).item() == pytest.approx(1.0)  # dx only, mean |1 - 0|


def test_l2_maximiser_matches_closed_form():
    # max_x w*x - lam*x^2 on [0, 1] -> x* = clip(w / (2 lam), 0, 1): w = 0.4 -> 0.2, w > 0.8 -> 1, w < 0 -> 0
    weight = torch.tensor([0.4, 2.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    result = featvis.visualise_classes(LinearScore(weight), 1, (2, 2),
                                       settings(steps=300, lr=0.01, l2_weight=1.0, l2_reference="pixel"),
                                       seed=0, progress=False)
    per_channel = result.images[0].mean((1, 2))
    assert per_channel.tolist() == pytest.approx([0.2, 1.0, 0.0], abs=0.02)


def test_visualisation_raises_target_logit_and_is_seeded():
    model = tiny_cnn(3)
    first = featvis.visualise_classes(model, 3, (32, 32), settings(), seed=7, progress=False)
    again = featvis.visualise_classes(model, 3, (32, 32), settings(), seed=7, progress=False)
    other = featvis.visualise_classes(model, 3, (32, 32), settings(), seed=8, progress=False)
    gains = (first.final_logits - first.initial_logits).diagonal()
    assert (gains > 0).all()
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (3, 3, 32, 32)
    assert 0.0 <= first.images.min() and first.images.max() <= 1.0
    summary = first.summary(["a", "b", "c"])
    assert summary["1"]["class_name"] == "b"
    assert summary["1"]["final_logit"] == pytest.approx(first.final_logits[1, 1].item())
    assert 0.0 < summary["1"]["final_prob"] < 1.0


def test_regularised_fourier_mode_stays_in_range_and_improves():
    model = tiny_cnn(2)
    result = featvis.visualise_classes(model, 2, (32, 32), settings(mode="regularised", lr=0.05),
                                       seed=0, progress=False)
    assert 0.0 < result.images.min() and result.images.max() < 1.0  # sigmoid range
    assert ((result.final_logits - result.initial_logits).diagonal() > 0).all()


def test_top_activating_picks_highest_logits_per_class():
    scores = np.array([[1.0, 5.0], [3.0, 0.0], [2.0, 4.0]])
    assert featvis.top_activating(scores, 2).tolist() == [[1, 2], [0, 2]]


def test_featvis_grid_reads_dirs_and_rejects_missing(tmp_path):
    for variant in ("standard", "black"):
        (tmp_path / variant).mkdir()
        np.save(tmp_path / variant / featvis.FEATVIS_ARRAY, np.zeros((2, 3, 8, 8), np.float16))
    out = tmp_path / "grid.png"
    featvis.featvis_grid({v: tmp_path / v for v in ("standard", "black")}, ["a", "b"], out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="run the featvis stage"):
        featvis.featvis_grid({"noise": tmp_path / "noise"}, ["a", "b"], out)
    with pytest.raises(DataError, match="expected 3 x 3 x H x W"):
        featvis.featvis_grid({"black": tmp_path / "black"}, ["a", "b", "c"], out)


def test_stage_writes_all_outputs(make_config, fake_variant_store, save_untrained_model):
    config = make_config({"resolution": 16, "featvis": {"steps": 1, "top_images": 2}})
    fake_variant_store(config, "black", {"val": 3}, size=16, num_classes=3)
    save_untrained_model(config, "black", num_classes=3)
    assert run_workflow_script("featvis", ["--config", write_config(config), "--variant", "black",
                                          "--replicate", "0"]) == 0
    out = paths.featvis_dir(config, "black", replicate=0)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["class_0_class0.png", "class_1_class1.png", "class_2_class2.png",
                     "featvis.npy", "summary.json", "top_images.png"]
    array = np.load(out / "featvis.npy")
    assert array.dtype == np.float16 and array.shape == (3, 3, 16, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["classes"]["0"]) == {"class_name", "initial_logit", "final_logit", "initial_prob", "final_prob"}
    assert all(len(rows) == 2 for rows in summary["top_images"].values())


def test_stage_missing_model_is_a_clear_error(make_config, fake_variant_store, capsys):
    config = make_config({"resolution": 16})
    fake_variant_store(config, "noise", {"val": 4}, size=16)
    assert run_workflow_script("featvis", ["--config", write_config(config), "--variant", "noise",
                                          "--replicate", "0"]) == 1
    err = capsys.readouterr().err
    assert str(paths.model_weights(config, "noise", replicate=0)) in err and "train stage" in err
    assert not paths.featvis_dir(config, "noise", replicate=0).exists()
