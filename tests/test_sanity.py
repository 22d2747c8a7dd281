"""Sanity checks (Adebayo et al. 2018): rank correlations, cascading re-initialisation, the
stage's outputs and its bad-input behaviour."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import fake_split, run_workflow_script
from xaipipe import paths
from xaipipe.config import validate_config
from xaipipe.architectures import resnet18
from xaipipe.explain.sanity import (SignedMaps, cascading_models, cascading_randomisation,
                                    rank_correlations)
from xaipipe.models import build_model, save_model

CASCADE = list(resnet18().cascade)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_rank_correlations_hand_cases():
    a = np.array([[[1.0, -2.0], [3.0, -4.0]]])
    same_abs, same_signed = rank_correlations(a, a)
    np.testing.assert_allclose([same_abs[0], same_signed[0]], [1.0, 1.0])
    flipped_abs, flipped_signed = rank_correlations(a, -a)     # sign flip: |.| identical, signed reversed
    np.testing.assert_allclose([flipped_abs[0], flipped_signed[0]], [1.0, -1.0])
    constant_abs, _ = rank_correlations(a, np.zeros_like(a))   # no ranking -> NaN
    assert np.isnan(constant_abs[0])


def test_cascade_reinitialises_top_down_and_keeps_the_original():
    torch.manual_seed(0)
    model = build_model(3)
    with torch.no_grad():      # make BN weights differ from a fresh init, so their reset shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.add_(0.5)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for block, randomised in cascading_models(model, seed=1):
        seen.append(block)
        state = randomised.state_dict()
        changed = {k.split(".")[1] for k in state if "weight" in k and not torch.equal(state[k], original[k])}
        expected = set(CASCADE[:len(seen)]) | ({"bn1"} if block == "conv1" else set())
        assert changed == expected, block
    assert seen == list(CASCADE)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_gradient_maps_decorrelate_under_randomisation():
    settings = validate_config({}, source="test")["explain"]
    torch.manual_seed(0)
    model = build_model(4).eval()
    images = fake_split(n=4, size=32)
    images.images[:] = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    maps = SignedMaps(images, np.array([0, 1, 2, 3]), settings, torch.device("cpu"), seed=0)
    table = pd.DataFrame(cascading_randomisation(model, maps, ["gradient"], seed=1))
    assert list(table["layer"]) == ["original", *CASCADE]
    assert table["spearman_abs_mean"].iloc[0] == pytest.approx(1.0)
    full = table[table["layer"] == "conv1"].iloc[0]
    assert full["spearman_abs_mean"] < 0.5 and abs(full["spearman_signed_mean"]) < 0.5
    assert full["n_valid"] == 4


def test_oracle_maps_fail_the_cascading_check_as_they_should():
    """The oracle maps ignore the model, so randomising it leaves them unchanged: the check
    must flag them (correlation 1 at every layer), a known-bad case for the sanity check."""
    settings = validate_config({}, source="test")["explain"]
    torch.manual_seed(0)
    maps = SignedMaps(fake_split(n=3, size=16), np.array([0, 1, 2]), settings,
                      torch.device("cpu"), seed=0)
    table = pd.DataFrame(cascading_randomisation(build_model(4).eval(), maps, ["oracle_object"],
                                                 seed=1))
    assert (table["spearman_abs_mean"] > 0.999).all() and len(table) == 1 + len(CASCADE)


def test_sanity_stage_outputs(make_config, fake_variant_store):
    config = make_config({"sanity": {"methods": ["gradient", "gradcam"], "num_images": 3,
                                     "data_randomisation": True},
                          "explain": {"methods": ["gradient", "random"], "saliency_figure_images": 2},
                          "train": {"epochs": 1, "batch_size": 8}})
    fake_variant_store(config, "black", {"train": 8, "val": 4})
    torch.manual_seed(0)
    save_model(paths.model_weights(config, "black", replicate=0), build_model(4),
               {"num_classes": 4})
    argv = ["--config", *_config_files(config), "--variant", "black", "--replicate", "0"]
    assert run_workflow_script("sanity", argv) == 0
    out = paths.sanity_dir(config, "black", replicate=0)
    table = pd.read_csv(out / "sanity.csv")
    assert len(table) == 2 * (1 + len(CASCADE)) + 2
    data = table[table["test"] == "data"]
    assert set(data["layer"]) == {"random_labels"}
    # one epoch on 8 images cannot fit random labels: recorded and flagged, not hidden
    assert data["shuffled_train_accuracy"].between(0, 1).all()
    assert (data["shuffled_train_accuracy"] < 0.95).all() and not data["meaningful"].any()
    assert table[table["test"] == "cascading"]["meaningful"].all()
    for name in ("cascade_gradient.png", "cascade_gradcam.png", "saliency.png"):
        assert (out / name).stat().st_size > 1000


def test_data_randomisation_is_meaningful_once_the_model_fits_its_labels():
    """A shuffled-label model that memorises its 8 images (no augmentation, 40 epochs) fits
    them, so its check counts; the fit is what sanity.min_fit_accuracy tests."""
    from xaipipe.config import validate_config
    from xaipipe.explain.sanity import shuffled_label_model

    train = fake_split(n=8, size=16)
    settings = validate_config({"train": {"epochs": 40, "batch_size": 8, "optimizer": "adam",
                                          "lr": 0.003, "augment": {
                                              "random_resized_crop_scale": [1.0, 1.0],
                                              "hflip": False}}})["train"]
    _, fit = shuffled_label_model(train, settings, num_classes=4, seed=0,
                                  device=torch.device("cpu"))
    assert fit >= 0.95


def test_sanity_stage_missing_store_is_a_clear_error(make_config, capsys):
    config = make_config()
    torch.manual_seed(0)
    save_model(paths.model_weights(config, "noise", replicate=0), build_model(4),
               {"num_classes": 4})
    argv = ["--config", *_config_files(config), "--variant", "noise", "--replicate", "0"]
    assert run_workflow_script("sanity", argv) == 1
    err = capsys.readouterr().err
    assert "tensor store" in err and "variant stage" in err
    assert not paths.sanity_dir(config, "noise", replicate=0).exists()
    assert not any(paths.sanity_dir(config, "noise", replicate=0).parent.glob(".sanity*"))


def _config_files(config):
    import yaml
    path = paths.results(config).parent / "test_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return [str(path)]
