"""ROAD noisy linear imputation (Rong et al. 2022) and the road stage."""

import numpy as np
import pytest
import torch
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.errors import ConfigError
from xaipipe.evaluate import road_solver
from xaipipe.evaluate.road import (ROAD_SOLVERS, add_noise, batch_linear_imputation,
                                   linear_imputation, noisy_linear_imputation, run_road)
from xaipipe.io import read_json, save_npy, unbits
from xaipipe.models import build_model, save_model

IMAGE = np.array([[1, 2, 4], [8, 0, 16], [32, 64, 128]], dtype=float)[None]


def impute(solver: str, image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """One image through the batched entry point with ``solver``."""
    return batch_linear_imputation(image[None], removed[None], solver=solver)[0]


APPROX = {"exact": {}, "iterative": {"abs": 1e-5}}
"""How close each solver gets to a hand-computed value (float32, tolerance 1e-6)."""


@pytest.mark.parametrize("solver", ROAD_SOLVERS)
def test_centre_pixel_is_the_weighted_neighbour_mean(solver):
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    out = impute(solver, IMAGE, removed)
    expected = (2 + 8 + 16 + 64) / 6 + (1 + 4 + 32 + 128) / 12  # = 28.75
    assert out[0, 1, 1] == pytest.approx(expected, **APPROX[solver])
    out[0, 1, 1] = 0
    assert (out == np.where(removed, 0, IMAGE)).all()  # known pixels untouched


@pytest.mark.parametrize("solver", ROAD_SOLVERS)
def test_two_adjacent_removed_pixels_solve_the_linear_system(solver):
    # x = centre (1,1), y = right border pixel (1,2) (its value 16 is discarded); by hand:
    #   x = (2 + 8 + 64 + y)/6 + (1 + 4 + 32 + 128)/12
    #   (2/3) y = (4 + 128 + x)/6 + (2 + 64)/12          (border: weights renormalised)
    # => x = 791/23, y = 4586/92
    removed = np.zeros((3, 3), bool)
    removed[1, 1:] = True
    out = impute(solver, IMAGE, removed)
    assert out[0, 1, 1] == pytest.approx(791 / 23, **APPROX[solver])
    assert out[0, 1, 2] == pytest.approx(4586 / 92, **APPROX[solver])


@pytest.mark.parametrize("solver", ROAD_SOLVERS)
def test_imputation_preserves_constants_and_linear_ramps_per_channel(solver):
    rng = np.random.default_rng(0)
    removed = rng.random((9, 9)) < 0.5
    removed[0, 0] = False
    yy, xx = np.mgrid[0:9, 0:9].astype(float)
    image = np.stack([np.full((9, 9), 0.3), 0.1 * xx, 0.05 * yy + 0.02 * xx])
    inner = np.zeros((9, 9), bool)
    inner[1:-1, 1:-1] = True
    out = impute(solver, image, removed & inner)
    assert out == pytest.approx(image, **APPROX[solver])  # weighted mean of a linear function


def _random_case(rng, height, width, fraction):
    image = rng.random((3, height, width))
    removed = rng.random((height, width)) < fraction
    removed.flat[rng.integers(height * width)] = False  # never everything
    return image, removed


@pytest.mark.parametrize("height,width", [(4, 4), (7, 7), (16, 16), (13, 30), (40, 40)])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_iterative_solver_matches_the_exact_solve_on_random_masks(height, width, fraction):
    """Max abs deviation from the exact sparse solve below 1e-4 in [0, 1] pixel units, on
    sizes below, at and above the coarsest grid, odd, even and non-square."""
    rng = np.random.default_rng([height, width, int(fraction * 100)])
    cases = [_random_case(rng, height, width, fraction) for _ in range(3)]
    images = np.stack([c[0] for c in cases])
    removed = np.stack([c[1] for c in cases])
    exact = np.stack([linear_imputation(i, r) for i, r in cases])
    iterative = batch_linear_imputation(images, removed)
    assert np.abs(iterative - exact).max() < 1e-4


def test_iterative_solver_matches_the_exact_solve_on_one_large_region_at_224_px():
    """The hard case: 90 % of a 224 px image removed as one blob (a smooth map's MoRF), where
    the iteration count of a plain Jacobi-preconditioned solver would be in the hundreds."""
    yy, xx = np.mgrid[0:224, 0:224]
    distance = (yy - 90) ** 2 + (xx - 130) ** 2
    removed = distance <= np.quantile(distance, 0.9)
    image = np.random.default_rng(0).random((3, 224, 224))
    images, _ = road_solver.solve(torch.as_tensor(image[None]), torch.as_tensor(removed[None]),
                                  tolerance=1e-6)
    assert np.abs(images[0].numpy() - linear_imputation(image, removed)).max() < 1e-4


def test_several_masks_per_image_are_solved_against_the_same_image():
    rng = np.random.default_rng(3)
    images = rng.random((2, 3, 12, 12))
    removed = rng.random((4, 2, 12, 12)) < 0.6        # 4 points x 2 images
    out = batch_linear_imputation(images, removed)
    assert out.shape == (4, 2, 3, 12, 12)
    for point in range(4):
        for i in range(2):
            exact = linear_imputation(images[i], removed[point, i])
            assert np.abs(out[point, i] - exact).max() < 1e-4


def test_iterative_solver_that_cannot_converge_stops_with_a_clear_error():
    image, removed = _random_case(np.random.default_rng(1), 32, 32, 0.9)
    with pytest.raises(road_solver.SolverError, match="did not converge in 1 iterations.*"
                                                      "roar.road_tolerance.*road_solver: exact"):
        road_solver.solve(torch.as_tensor(image[None]), torch.as_tensor(removed[None]),
                          tolerance=1e-6, max_iterations=1)


def test_unknown_solver_is_a_config_error():
    with pytest.raises(ConfigError, match="roar.road_solver"):
        batch_linear_imputation(IMAGE[None], np.zeros((1, 3, 3), bool), solver="cholesky")


def test_batched_noise_draws_what_the_per_image_loop_drew():
    """road_curves adds noise to a whole batch at once; the draws must be those of the
    per-image noisy imputation with the same generator, image after image."""
    rng = np.random.default_rng(4)
    images = rng.random((3, 3, 10, 10))
    removed = rng.random((3, 10, 10)) < 0.4
    one_by_one = np.stack([noisy_linear_imputation(images[i], removed[i], 0.05, generator)
                           for generator in [np.random.default_rng(9)] for i in range(3)])
    batched = add_noise(batch_linear_imputation(images, removed, solver="exact"), removed, 0.05,
                        np.random.default_rng(9))
    assert np.abs(batched - one_by_one).max() < 1e-6


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


@pytest.mark.parametrize("solver", ROAD_SOLVERS)
def test_everything_removed_is_a_clear_error(solver):
    with pytest.raises(ConfigError, match="every pixel removed"):
        batch_linear_imputation(np.zeros((1, 3, 2, 2)), np.ones((1, 2, 2), bool), solver=solver)


@pytest.fixture
def road_config(make_config, fake_variant_store, tmp_path):
    config = make_config({"device": "cpu", "roar": {"fractions": [0.25, 0.5]}})
    fake_variant_store(config, splits={"val": 5, "val_matched": 6}, size=16)
    save_model(paths.model_weights(config, "standard", replicate=0), build_model(4),
               {"num_classes": 4})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config, ["--config", str(config_file), "--variant", "standard", "--method", "gradcam",
                    "--replicate", "0"]


def test_road_stage_writes_morf_and_lerf_curves_on_the_matched_val_split(road_config):
    """ROAD evaluates the trained model on val_matched (roar.eval_split): the val images drawn
    like its training images, so only the removal differs (here 6 images vs val's 5)."""
    config, argv = road_config
    maps = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    save_npy(paths.attribution_map(config, "standard", "gradcam", "val_matched", replicate=0), maps)
    assert run_workflow_script("road", argv) == 0
    result = read_json(paths.road_result(config, "standard", "gradcam", replicate=0))
    points = [(row["order"], row["fraction"], row["pixels_removed"]) for row in result["curves"]]
    assert points == [("morf", 0.25, 64), ("morf", 0.5, 128), ("lerf", 0.25, 64), ("lerf", 0.5, 128)]
    assert all(0 <= row["accuracy"] <= 1 for row in result["curves"])
    assert result["n_images"] == 6 and result["noise_std"] == 0.01
    assert result["split"] == "val_matched" and result["replicate"] == 0
    for row in result["curves"]:  # the per-image hits behind each accuracy
        hits = unbits(row["correct"])
        assert len(hits) == 6 and hits.mean() == pytest.approx(row["accuracy"])


def test_road_eval_split_val_reads_the_unmodified_val_split(road_config):
    config, _ = road_config
    config["roar"]["eval_split"] = "val"
    save_npy(paths.attribution_map(config, "standard", "gradcam", "val", replicate=0),
             np.random.default_rng(0).random((5, 16, 16)).astype(np.float32))
    result = run_road(config, "standard", "gradcam", torch.device("cpu"), replicate=0)
    assert result["split"] == "val" and result["n_images"] == 5


def test_road_iterative_and_exact_solvers_give_the_same_curves(road_config):
    """The solver is a speed choice: both give the same accuracies (at most one of the 6
    images may flip on a near-tie logit) and the result names the solver."""
    config, _ = road_config
    save_npy(paths.attribution_map(config, "standard", "gradcam", "val_matched", replicate=0),
             np.random.default_rng(0).random((6, 16, 16)).astype(np.float32))
    results = {}
    for solver in ROAD_SOLVERS:
        config["roar"]["road_solver"] = solver
        results[solver] = run_road(config, "standard", "gradcam", torch.device("cpu"), replicate=0)
        assert results[solver]["solver"] == solver
    for iterative, exact in zip(results["iterative"]["curves"], results["exact"]["curves"]):
        assert abs(iterative["accuracy"] - exact["accuracy"]) <= 1 / 6


def test_road_stage_missing_maps_exit_1_without_output(road_config, capsys):
    config, argv = road_config
    assert run_workflow_script("road", argv) == 1
    err = capsys.readouterr().err
    assert "error: attribution maps" in err and "gradcam_val_matched.npy do not exist" in err
    assert not paths.road_result(config, "standard", "gradcam", replicate=0).exists()
    assert not list((paths.results(config) / "evaluate").rglob("*"))
