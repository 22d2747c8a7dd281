"""Training: batched augmentation, schedule, evaluation helpers, learning, determinism,
kill-and-resume equality, checkpoint handling, pretrained init and the train stage script."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchvision.models import resnet18

from conftest import fake_split, run_workflow_script
from xaipipe import checkpoint, paths
from xaipipe.augment import apply_affine, crop_flip_params
from xaipipe.data.store import Split, read_split
from xaipipe.errors import ConfigError, DataError
from xaipipe.io import read_json
from xaipipe.models import load_model
from xaipipe.seeds import model_seed
from xaipipe.train import (FAIL_AFTER_EPOCH_ENV, SimulatedKill, accuracy, initial_model,
                           lr_factor, predict, recalibrate_batchnorm, spread_indices,
                           train_classifier)
from xaipipe.train_stage import background_only, foreground_only, run_train_stage

CPU = torch.device("cpu")
SETTINGS = {
    "epochs": 3, "batch_size": 16, "optimizer": "adam", "lr": 0.001, "momentum": 0.9,
    "weight_decay": 0.0, "schedule": "cosine", "warmup_epochs": 0, "step_epochs": 30,
    "step_gamma": 0.1, "label_smoothing": 0.0, "recalibrate_bn_images": 0,
    "augment": {"random_resized_crop_scale": [0.6, 1.0], "hflip": True},
    "pretrained": "none", "amp": True, "channels_last": True, "compile": False,
    "checkpoint_every": 1,
}


# --- augmentation ---------------------------------------------------------------------------

def test_identity_and_flip_affines_are_exact():
    images = torch.rand(2, 3, 8, 8)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(apply_affine(images, identity), images)
    torch.testing.assert_close(apply_affine(images, flip), images.flip(-1))


def test_left_half_crop_of_a_ramp_hand_computed():
    # ramp f(column) = column on 8 px; the crop box is the left half (w = 0.5, cx = -0.5).
    # Output column j samples input column 0.5 j - 0.25 (bilinear is exact on a ramp),
    # clamped to 0 at the border for j = 0.
    ramp = torch.arange(8.0).expand(1, 1, 8, 8).clone()
    theta = torch.tensor([[[0.5, 0, -0.5], [0, 1.0, 0]]])
    out = apply_affine(ramp, theta)
    expected = torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25])
    torch.testing.assert_close(out[0, 0], expected.expand(8, 8))


def test_crop_params_stay_inside_the_image_and_follow_the_scale():
    theta = crop_flip_params(4000, (0.3, 0.9), True, torch.Generator().manual_seed(0)).double()
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    cx, cy = theta[:, 0, 2], theta[:, 1, 2]
    assert (w <= 1).all() and (h <= 1).all()
    assert ((cx.abs() + w) <= 1 + 1e-6).all() and ((cy.abs() + h) <= 1 + 1e-6).all()
    area = w * h  # box area as a fraction of the image (clamping only shrinks it)
    assert area.max() <= 0.9 + 1e-6 and area.min() >= 0.3 * 0.75 - 1e-6
    assert abs((theta[:, 0, 0] < 0).double().mean() - 0.5) < 0.05  # hflip half the time
    no_flip = crop_flip_params(100, (0.3, 0.9), False, torch.Generator().manual_seed(0))
    assert (no_flip[:, 0, 0] > 0).all()
    again = crop_flip_params(4000, (0.3, 0.9), True, torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(theta, again)


# --- schedule and optimiser -------------------------------------------------------------------

def test_lr_factor_hand_computed():
    cosine = dict(SETTINGS, epochs=4)
    assert [round(lr_factor(e, cosine), 4) for e in range(4)] == [1.0, 0.8536, 0.5, 0.1464]
    warm = dict(SETTINGS, epochs=6, warmup_epochs=2)
    assert [round(lr_factor(e, warm), 4) for e in range(3)] == [0.3333, 0.6667, 1.0]
    assert lr_factor(4, warm) == pytest.approx(0.5)
    step = dict(SETTINGS, schedule="step", step_epochs=2, step_gamma=0.5)
    assert [lr_factor(e, step) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert lr_factor(7, dict(SETTINGS, schedule="constant")) == 1.0


# --- predict / accuracy -----------------------------------------------------------------------

class ChannelMeans(nn.Module):
    """Logits = per-channel means: a model whose outputs can be computed by hand."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_predict_scales_uint8_and_accuracy_hand_computed():
    images = np.zeros((3, 3, 2, 2), dtype=np.uint8)
    images[0, 0] = 255  # argmax channel 0
    images[1, 2] = 51   # argmax channel 2, mean 0.2
    images[2, 1] = 255  # argmax channel 1
    model = ChannelMeans().train()
    logits = predict(model, images, CPU, batch_size=2)
    assert logits.dtype == torch.float32 and logits.shape == (3, 3)
    torch.testing.assert_close(logits[1], torch.tensor([0.0, 0.0, 0.2]))
    assert model.training  # mode restored
    floats = torch.from_numpy(images).float() / 255
    torch.testing.assert_close(predict(model, floats, CPU), logits)
    assert accuracy(model, images, np.array([0, 2, 0]), CPU) == pytest.approx(2 / 3)


def test_recalibrated_batchnorm_holds_the_batch_statistics_of_the_split():
    """bn1's running mean = the mean over the batches of conv1's per-channel output mean (two
    equal batches, so also the split's mean); weights untouched; eval mode afterwards."""
    model = initial_model(3, "none", seed=0)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    recalibrate_batchnorm(model, images, batch_size=4)
    with torch.no_grad():
        conv1 = model.backbone.conv1(model.normalize(images.float() / 255))
    torch.testing.assert_close(model.backbone.bn1.running_mean, conv1.mean((0, 2, 3)),
                               rtol=1e-4, atol=1e-5)
    halves = [conv1[:4].var((0, 2, 3), unbiased=True), conv1[4:].var((0, 2, 3), unbiased=True)]
    torch.testing.assert_close(model.backbone.bn1.running_var, (halves[0] + halves[1]) / 2,
                               rtol=1e-4, atol=1e-5)
    assert not model.training
    assert model.backbone.bn1.momentum == 0.1
    for key, value in weights.items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_spread_indices_cover_the_split_evenly():
    assert spread_indices(10, 4).tolist() == [0, 2, 5, 7]
    assert spread_indices(3, 8).tolist() == [0, 1, 2]


def test_recalibration_changes_eval_statistics_but_not_training(data):
    """Same seed with and without recalibration: identical weights, different BN buffers."""
    train, _ = data
    plain = train_classifier(train, {**SETTINGS, "epochs": 1}, num_classes=4, seed=0, device=CPU)
    precise = train_classifier(train, {**SETTINGS, "epochs": 1, "recalibrate_bn_images": 16},
                               num_classes=4, seed=0, device=CPU)
    a, b = plain.model.state_dict(), precise.model.state_dict()
    torch.testing.assert_close(a["backbone.fc.weight"], b["backbone.fc.weight"])
    assert not torch.allclose(a["backbone.bn1.running_mean"], b["backbone.bn1.running_mean"])


def test_foreground_and_black_background_only_images():
    split = fake_split(n=4, size=8)
    fg, bg = foreground_only(split), background_only(split, "black")
    np.testing.assert_array_equal(fg + bg, split.images)
    mask = split.masks[:, None].astype(bool).repeat(3, axis=1)
    assert (fg[~mask] == 0).all() and (bg[mask] == 0).all()


def _split(images: np.ndarray, masks: np.ndarray) -> Split:
    return Split(images=images.astype(np.uint8), masks=masks.astype(np.uint8),
                 labels=np.zeros(len(images), dtype=np.int64))


def test_background_only_imputes_the_object_hand_computed():
    """3 x 3 image, centre pixel = object: it becomes the ROAD-weighted mean of its 8
    neighbours (direct 1/6, diagonal 1/12): 4/6 * 60 + 4/12 * 120 = 80 (channel 0), and
    4/6 * 30 + 4/12 * 90 = 50 (channel 1); background pixels stay as they were."""
    channel0 = np.array([[120, 60, 120], [60, 0, 60], [120, 60, 120]])
    channel1 = np.array([[90, 30, 90], [30, 250, 30], [90, 30, 90]])
    images = np.stack([channel0, channel1, channel0])[None]
    masks = np.zeros((1, 3, 3))
    masks[0, 1, 1] = 1
    out = background_only(_split(images, masks))
    assert out.dtype == np.uint8
    assert out[0, :, 1, 1].tolist() == [80, 50, 80]
    keep = ~masks[0].astype(bool)
    np.testing.assert_array_equal(out[0][:, keep], images[0][:, keep])
    assert background_only(_split(images, masks), "black")[0, :, 1, 1].tolist() == [0, 0, 0]


def test_background_only_leaves_no_silhouette_and_keeps_the_background():
    """A linear ramp background is reproduced exactly inside a 4 x 4 object (the imputation
    is a weighted mean, so it is exact for linear images); a non-zero background leaves no
    zero where the object was; whole-object and object-free images are handled."""
    y, x = np.mgrid[0:8, 0:8]
    ramp = 10 + 5 * x + 3 * y
    images = np.repeat(np.stack([ramp, ramp + 20, 200 - ramp])[None], 3, axis=0)
    images[0, :, 2:6, 2:6] = 0                      # the "object" itself: black
    images[1, :, 2:6, 2:6] = 255
    masks = np.zeros((3, 8, 8))
    masks[0, 2:6, 2:6] = masks[1, 2:6, 2:6] = 1
    masks[2] = 0                                    # no object: unchanged
    out = background_only(_split(images, masks))
    expected = np.stack([ramp, ramp + 20, 200 - ramp])
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1], expected)
    np.testing.assert_array_equal(out[2], images[2])
    split = fake_split(n=6, size=16)
    split.images[:] = np.maximum(split.images, 1)   # a background without zeros
    out = background_only(split)
    mask = split.masks[:, None].astype(bool).repeat(3, axis=1)
    np.testing.assert_array_equal(out[~mask], split.images[~mask])
    assert (out[mask] > 0).all()
    assert not np.array_equal(out[mask], split.images[mask])  # the object colour is gone
    full = background_only(_split(np.full((1, 3, 4, 4), 9), np.ones((1, 4, 4))))
    assert (full == 0).all()                        # nothing to impute from: black


def test_background_only_rejects_unknown_fill():
    with pytest.raises(ConfigError, match="train.bg_only_fill"):
        background_only(fake_split(n=1, size=4), "blur")


# --- training: learning, determinism, resume ------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return fake_split(n=48, size=32, num_classes=4, seed=0), fake_split(n=32, size=32, num_classes=4, seed=1, split="val")


@pytest.fixture(scope="module")
def reference_run(data):
    train, val = data
    return train_classifier(train, SETTINGS, num_classes=4, seed=7, device=CPU, evals={"val": val})


def test_tiny_run_learns_and_beats_chance(reference_run):
    history = reference_run.history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert set(history[0]) >= {"epoch", "loss", "train_acc", "lr", "seconds", "images_per_s", "val_acc"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert reference_run.final["train_acc"] > 0.6
    assert reference_run.final["val_acc"] > 0.6  # chance is 0.25
    assert not reference_run.model.training


def test_kill_and_resume_equals_uninterrupted(data, reference_run, tmp_path, monkeypatch):
    train, val = data
    ckpt = tmp_path / "ckpt"
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "1")
    with pytest.raises(SimulatedKill):
        train_classifier(train, SETTINGS, num_classes=4, seed=7, device=CPU, evals={"val": val},
                         checkpoint_dir=ckpt)
    assert (ckpt / checkpoint.CHECKPOINT_FILE).is_file()
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    resumed = train_classifier(train, SETTINGS, num_classes=4, seed=7, device=CPU,
                               evals={"val": val}, checkpoint_dir=ckpt)
    assert resumed.final["resumed_from_epoch"] == 1
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]
    assert strip(resumed.history) == strip(reference_run.history)  # exact, not approximate
    for a, b in zip(resumed.model.state_dict().values(), reference_run.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not (ckpt / checkpoint.CHECKPOINT_FILE).exists()  # removed once finished


def test_mismatched_checkpoint_is_ignored_with_warning(tmp_path, caplog):
    checkpoint.save_checkpoint(tmp_path, {"fingerprint": "other-run", "epoch": 2})
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load_checkpoint(tmp_path, "this-run") is None
    assert "different run" in caplog.text
    assert checkpoint.load_checkpoint(tmp_path, "other-run")["epoch"] == 2


def test_fingerprint_tracks_result_settings_seed_and_data(data):
    train, _ = data
    base = checkpoint.fingerprint(SETTINGS, 7, 4, train.images, train.labels)
    assert base == checkpoint.fingerprint(dict(SETTINGS, checkpoint_every=9), 7, 4, train.images, train.labels)
    assert base != checkpoint.fingerprint(dict(SETTINGS, lr=0.1), 7, 4, train.images, train.labels)
    assert base != checkpoint.fingerprint(SETTINGS, 8, 4, train.images, train.labels)
    changed = train.images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert base != checkpoint.fingerprint(SETTINGS, 7, 4, changed, train.labels)


def test_corrupt_checkpoint_is_a_clear_error(data, tmp_path):
    train, _ = data
    (tmp_path / checkpoint.CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"checkpoint\.pt is unreadable.*delete it"):
        train_classifier(train, SETTINGS, num_classes=4, seed=7, device=CPU, checkpoint_dir=tmp_path)


def test_labels_outside_num_classes_are_rejected(data):
    train, _ = data
    with pytest.raises(DataError, match="num_classes is 3"):
        train_classifier(train, SETTINGS, num_classes=3, seed=0, device=CPU)


# --- pretrained initialisation -----------------------------------------------------------------

def test_pretrained_from_local_file_replaces_fc(tmp_path):
    source = resnet18(num_classes=5)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = initial_model(3, str(path), seed=0)
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert model.backbone.fc.out_features == 3


def test_hub_dir_matches_torch(tmp_path, monkeypatch):
    """(Each architecture's ImageNet file name is checked against torchvision in test_models.)"""
    from xaipipe.pretrained import hub_dir

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert hub_dir() == Path(torch.hub.get_dir())


def test_pretrained_imagenet_offline_fails_config_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from xaipipe.config import validate_config
    with pytest.raises(ConfigError, match=r"resnet18-f37072fd\.pth.*never downloads"):
        validate_config({"train": {"pretrained": "imagenet"}})
    with pytest.raises(ConfigError, match=r"train_overrides\.black: .*missing\.pth does not exist"):
        validate_config({"train_overrides": {"black": {"pretrained": str(tmp_path / "missing.pth")}}})
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"")
    assert validate_config({"train": {"pretrained": "imagenet"}})["train"]["pretrained"] == "imagenet"


def test_pretrained_imagenet_offline_says_where_to_put_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"resnet18-f37072fd\.pth.*never downloads|never downloads.*resnet18"):
        initial_model(3, "imagenet", seed=0)
    with pytest.raises(ConfigError, match="does not exist"):
        initial_model(3, str(tmp_path / "missing.pth"), seed=0)


# --- the stage --------------------------------------------------------------------------------

def _stage_config(make_config):
    return make_config({"resolution": 32, "device": "cpu", "train": {
        "epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.001, "checkpoint_every": 1}})


def test_stage_writes_model_metrics_history_and_curve(make_config, fake_variant_store):
    config = _stage_config(make_config)
    fake_variant_store(config, "black", {"train": 32, "val": 16, "val_matched": 16})
    metrics = run_train_stage(config, "black", 0)
    for key in ("train_accuracy", "val_accuracy", "val_matched_accuracy",
                "fg_only_val_accuracy", "bg_only_val_accuracy"):
        assert 0 <= metrics[key] <= 1
    assert metrics["loss"] > 0 and metrics["chance_accuracy"] == 0.25 and metrics["epochs"] == 1
    assert read_json(paths.model_metrics(config, "black", replicate=0)) == metrics
    model, meta = load_model(paths.model_weights(config, "black", replicate=0))
    assert meta["variant"] == "black" and meta["class_names"][0] == "class0" and meta["resolution"] == 32
    assert meta["replicate"] == 0 and metrics["replicate"] == 0
    history = paths.model_history(config, "black", replicate=0).read_text().splitlines()
    assert len(history) == 2 and "val_matched_acc" in history[0]
    assert paths.model_curve(config, "black", replicate=0).read_bytes()[:4] == b"\x89PNG"
    assert not (paths.checkpoint_dir(config, "black/rep0") / checkpoint.CHECKPOINT_FILE).exists()
    # the val split's majority-class rate beside chance; the predictions behind val accuracy
    val = read_split(paths.variant_split_dir(config, "black", "val"))
    assert metrics["majority_accuracy"] == pytest.approx(
        np.bincount(val.labels).max() / len(val.labels))
    predictions = np.load(paths.model_predictions(config, "black", replicate=0))
    assert predictions.dtype == np.int64 and predictions.shape == (16,)
    assert (predictions == val.labels).mean() == pytest.approx(metrics["val_accuracy"])


def test_stage_script_missing_store_exits_1_naming_the_path(make_config, tmp_path, capsys):
    config = _stage_config(make_config)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["--config", str(config_file), "--variant", "noise", "--replicate", "0"]
    assert run_workflow_script("train", argv) == 1
    stderr = capsys.readouterr().err
    assert str(paths.variant_split_dir(config, "noise", "train")) in stderr
    assert "rerun the variant stage" in stderr and "Traceback" not in stderr
    assert not paths.model_dir(config, "noise", replicate=0).exists()


def test_replicates_are_independently_seeded_models(make_config, fake_variant_store):
    """Two replicates of a variant: the same store, their own seed (model_seed), their own
    directory, different weights."""
    config = _stage_config(make_config)
    fake_variant_store(config, "black", {"train": 16, "val": 8, "val_matched": 8})
    seeds = [run_train_stage(config, "black", replicate)["seed"] for replicate in (0, 1)]
    assert seeds == [model_seed(config, "black", 0), model_seed(config, "black", 1)]
    assert seeds[0] != seeds[1]
    states = []
    for replicate in (0, 1):
        model, meta = load_model(paths.model_weights(config, "black", replicate=replicate))
        assert meta["replicate"] == replicate and meta["seed"] == seeds[replicate]
        assert read_json(paths.model_metrics(config, "black", replicate=replicate))["seed"] == \
            seeds[replicate]
        states.append(model.state_dict())
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0]
               if states[0][k].is_floating_point())
