"""Feature-visualisation quantification: high-frequency share, recognisability on hand-made
models, the stage script and the reference-model trainer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.evaluate.featvis_metrics import (
    high_frequency_share, recognisability, run_train_reference)
from xaipipe.explain.featvis import FEATVIS_ARRAY
from xaipipe.io import read_json
from xaipipe.models import build_model, load_model, save_model

CPU = torch.device("cpu")


def checkerboard(size: int = 16) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((yy + xx) % 2).float().expand(1, 3, size, size)


def test_hf_share_constant_is_zero_checkerboard_is_one():
    assert high_frequency_share(torch.full((1, 3, 16, 16), 0.7), 0.5).tolist() == [0.0]
    assert high_frequency_share(checkerboard(), 0.5).item() == pytest.approx(1.0)


def test_hf_share_of_slow_and_fast_waves_follows_the_cutoff():
    x = torch.arange(32).float()
    slow = (0.5 + 0.5 * torch.cos(2 * torch.pi * x / 16)).expand(1, 3, 32, 32)  # 1/16 cycles/px
    fast = (0.5 + 0.5 * torch.cos(2 * torch.pi * x * 10 / 32)).expand(1, 3, 32, 32)  # 0.3125
    assert high_frequency_share(slow, 0.5).item() == pytest.approx(0.0, abs=1e-6)
    assert high_frequency_share(fast, 0.5).item() == pytest.approx(1.0)  # 0.3125 > 0.25
    assert high_frequency_share(fast, 0.9).item() == pytest.approx(0.0, abs=1e-6)  # < 0.45
    mixed = (slow + fast) / 2                                # equal amplitudes: half each
    assert high_frequency_share(mixed, 0.5).item() == pytest.approx(0.5, abs=1e-4)


class PickChannel(torch.nn.Module):
    """Three classes: the logits are the mean of each colour channel (red -> 0, ...)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_recognisability_on_hand_made_model():
    images = torch.zeros(3, 3, 4, 4)
    images[0, 0] = 1.0   # red   -> class 0: right
    images[1, 2] = 1.0   # blue  -> class 2: wrong (target 1)
    images[2, 2] = 1.0   # blue  -> class 2: right
    recognised, probability = recognisability(PickChannel(), images, CPU)
    assert recognised.tolist() == [1.0, 0.0, 1.0]
    e = np.e
    assert probability == pytest.approx([e / (e + 2), 1 / (e + 2), e / (e + 2)])


def test_recognisability_rejects_class_count_mismatch():
    from xaipipe.errors import DataError

    with pytest.raises(DataError, match="featvis stage"):
        recognisability(PickChannel(), torch.zeros(4, 3, 4, 4), CPU)


def stage_config(make_config, tmp_path) -> tuple[dict, str]:
    config = make_config({"variants": ["standard", "black"], "resolution": 32, "replicates": 2})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config, str(config_file)


def write_models(config, names):
    """Every replicate of every variant in ``names``; one reference model (replicate 0)."""
    torch.manual_seed(0)
    for name in names:
        replicates = 1 if name == paths.REFERENCE_MODEL else config["replicates"]
        for replicate in range(replicates):
            save_model(paths.model_weights(config, name, replicate=replicate), build_model(4),
                       {"num_classes": 4})


def test_stage_writes_recognisability_and_hf_rows(make_config, fake_variant_store, tmp_path):
    config, config_file = stage_config(make_config, tmp_path)
    fake_variant_store(config, "standard", {"val": 4})
    write_models(config, ["standard", "black", paths.REFERENCE_MODEL])
    rng = np.random.default_rng(0)
    for variant in ("standard", "black"):
        for replicate in range(2):
            path = paths.featvis_dir(config, variant, replicate=replicate) / FEATVIS_ARRAY
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.random((4, 3, 32, 32)).astype(np.float16))
    assert run_workflow_script("featvis_metrics", ["--config", config_file]) == 0
    table = pd.read_csv(paths.featvis_metrics_table(config), keep_default_na=False)
    recognised = table[table.metric == "recognised"]
    # 2 variants x 3 judges (2 variants + reference) x 2 replicates
    assert len(recognised) == 2 * 3 * 2
    assert set(recognised.judge) == {"standard", "black", paths.REFERENCE_MODEL}
    assert sorted(recognised.replicate.value_counts().items()) == [(0, 6), (1, 6)]
    assert recognised["mean"].between(0, 1).all() and (recognised.n == 4).all()
    hf = table[table.metric == "hf_share"].set_index(["variant", "replicate"])
    assert set(hf.index) == {("standard", 0), ("standard", 1), ("black", 0), ("black", 1),
                             ("val_images", 0)}
    assert hf.loc[("standard", 0), "mean"] > 0.5  # white noise: 1 - pi/16 of the band is above 0.25


def test_stage_missing_featvis_exits_1_naming_file(make_config, fake_variant_store, tmp_path, capsys):
    config, config_file = stage_config(make_config, tmp_path)
    fake_variant_store(config, "standard", {"val": 4})
    write_models(config, ["standard", "black", paths.REFERENCE_MODEL])
    assert run_workflow_script("featvis_metrics", ["--config", config_file]) == 1
    err = capsys.readouterr().err
    assert str(paths.featvis_dir(config, "standard", replicate=0) / FEATVIS_ARRAY) in err
    assert "featvis stage" in err
    assert not paths.featvis_metrics_table(config).exists()


def test_train_reference_uses_standard_store_and_seed_plus_one(make_config, fake_variant_store):
    from xaipipe.seeds import named_seed

    config = make_config({"resolution": 16, "train": {"epochs": 0, "batch_size": 8}})
    fake_variant_store(config, "standard", {"train": 8, "val": 4, "val_matched": 4}, size=16)
    metrics = run_train_reference(config)
    assert metrics["seed"] == named_seed(config, "standard") + 1
    _, meta = load_model(paths.model_weights(config, paths.REFERENCE_MODEL, replicate=0))
    assert meta["variant"] == paths.REFERENCE_MODEL and meta["num_classes"] == 4
    metrics_file = paths.model_metrics(config, paths.REFERENCE_MODEL, replicate=0)
    assert read_json(metrics_file)["num_val_images"] == 4
