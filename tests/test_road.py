"""ROAD noisy linear imputation (Rong et al. 2022) and the road stage."""

import numpy as np
import pytest
import torch
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.errors import ConfigError
from xaipipe.evaluate.road import linear_imputation, noisy_linear_imputation, run_road
from xaipipe.io import read_json, save_npy
from xaipipe.models import build_model, save_model

IMAGE = np.array([[1, 2, 4], [8, 0, 16], [32, 64, 128]], dtype=float)[None]


def test_centre_pixel_is_the_weighted_neighbour_mean():
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    out = linear_imputation(IMAGE, removed)
    expected = (2 + 8 + 16 + 64) / 6 + (1 + 4 + 32 + 128) / 12  # = 28.75
    assert out[0, 1, 1] == pytest.approx(expected)
    out[0, 1, 1] = 0
    assert (out == np.where(removed, 0, IMAGE)).all()  # known pixels untouched


def test_two_adjacent_removed_pixels_solve_the_linear_system():
    # x = centre (1,1), y = right border pixel (1,2) (its value 16 is discarded); by hand:
    #   x = (2 + 8 + 64 + y)/6 + (1 + 4 + 32 + 128)/12
    #   (2/3) y = (4 + 128 + x)/6 + (2 + 64)/12          (border: weights renormalised)
    # => x = 791/23, y = 4586/92
    removed = np.zeros((3, 3), bool)
    removed[1, 1:] = True
    out = linear_imputation(IMAGE, removed)
    assert out[0, 1, 1] == pytest.approx(791 / 23)
    assert out[0, 1, 2] == pytest.approx(4586 / 92)


def test_imputation_preserves_constants_and_linear_ramps_per_channel():
    rng = np.random.default_rng(0)
    removed = rng.random((9, 9)) < 0.5
    removed[0, 0] = False
    yy, xx = np.mgrid[0:9, 0:9].astype(float)
    image = np.stack([np.full((9, 9), 0.3), 0.1 * xx, 0.05 * yy + 0.02 * xx])
    inner = np.zeros((9, 9), bool)
    inner[1:-1, 1:-1] = True
    out = linear_imputation(image, removed & inner)
    assert out == pytest.approx(image)  # weighted mean of a linear function is itself


def test_noise_only_on_removed_pixels_with_the_configured_std():
    rng = np.random.default_rng(1)
    image = rng.random((3, 32, 32))
    removed = rng.random((32, 32)) < 0.5
    clean = linear_imputation(image, removed)
    noisy = noisy_linear_imputation(image, removed, 0.05, np.random.default_rng(2))
    diff = noisy - clean
    assert (diff[:, ~removed] == 0).all()
    assert diff[:, removed].std() == pytest.approx(0.05, rel=0.1)
    assert (noisy_linear_imputation(image, removed, 0.0, np.random.default_rng(2)) == clean).all()


def test_everything_removed_is_a_clear_error():
    with pytest.raises(ConfigError, match="every pixel removed"):
        linear_imputation(np.zeros((3, 2, 2)), np.ones((2, 2), bool))


@pytest.fixture
def road_config(make_config, fake_variant_store, tmp_path):
    config = make_config({"device": "cpu", "roar": {"fractions": [0.25, 0.5]}})
    fake_variant_store(config, splits={"val": 5, "val_matched": 6}, size=16)
    save_model(paths.model_weights(config, "standard"), build_model(4), {"num_classes": 4})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config, ["--config", str(config_file), "--variant", "standard", "--method", "gradcam"]


def test_road_stage_writes_morf_and_lerf_curves_on_the_matched_val_split(road_config):
    """ROAD evaluates the trained model on val_matched (roar.eval_split): the val images drawn
    like its training images, so only the removal differs (here 6 images vs val's 5)."""
    config, argv = road_config
    maps = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    save_npy(paths.attribution_map(config, "standard", "gradcam", "val_matched"), maps)
    assert run_workflow_script("road", argv) == 0
    result = read_json(paths.road_result(config, "standard", "gradcam"))
    points = [(row["order"], row["fraction"], row["pixels_removed"]) for row in result["curves"]]
    assert points == [("morf", 0.25, 64), ("morf", 0.5, 128), ("lerf", 0.25, 64), ("lerf", 0.5, 128)]
    assert all(0 <= row["accuracy"] <= 1 for row in result["curves"])
    assert result["n_images"] == 6 and result["noise_std"] == 0.01
    assert result["split"] == "val_matched"


def test_road_eval_split_val_reads_the_unmodified_val_split(road_config):
    config, _ = road_config
    config["roar"]["eval_split"] = "val"
    save_npy(paths.attribution_map(config, "standard", "gradcam", "val"),
             np.random.default_rng(0).random((5, 16, 16)).astype(np.float32))
    result = run_road(config, "standard", "gradcam", torch.device("cpu"))
    assert result["split"] == "val" and result["n_images"] == 5


def test_road_stage_missing_maps_exit_1_without_output(road_config, capsys):
    config, argv = road_config
    assert run_workflow_script("road", argv) == 1
    err = capsys.readouterr().err
    assert "error: attribution maps" in err and "gradcam_val_matched.npy do not exist" in err
    assert not paths.road_result(config, "standard", "gradcam").exists()
    assert not list((paths.results(config) / "evaluate").rglob("*"))
