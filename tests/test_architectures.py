"""``model.arch`` end to end: ResNet50 (Bottleneck blocks) and VGG16-BN through the stages
whose code depends on the architecture, with the real stage scripts under local Snakemake:
training (the model file records its architecture), the sanity cascade (it steps through
the architecture's blocks) and one ROAR retraining (it rebuilds the architecture from the
config). The stages in between take the model as a black box; the per-arch numerics (Grad-CAM
layer, c-MWP rules, guided ReLUs, cascade order, pretrained files, the report's setting line)
are unit-tested on every architecture in tests/test_models.py.

Measured cost (time, CPU, disk, memory): docs/training.md, "Architectures"; a vgg16_bn model
file is about 0.5 GB (its 120 M-parameter classifier)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from e2e.workdir import copy_repo, snakemake
from xaipipe import paths
from xaipipe.architectures import architecture
from xaipipe.config import load_config

pytestmark = pytest.mark.slow

SMALL = {"variants": ["black"], "replicates": 1, "metric_validation": {"variants": []}}
"""On top of config/ci.yaml: one variant, one model."""


@pytest.mark.parametrize("arch", ["resnet50", "vgg16_bn"])
def test_architecture_trains_explains_and_retrains(tmp_path, arch):
    work = copy_repo(tmp_path / "repo")
    (work / "arch.yaml").write_text(yaml.safe_dump({**SMALL, "model": {"arch": arch}}))
    config = load_config([work / "config.yaml", work / "config" / "ci.yaml", work / "arch.yaml"])
    config["results_dir"] = "results"
    sanity = paths.sanity_dir(config, "black", replicate=0)
    roar = paths.roar_result(config, "roar", "black", "gradient", 0.5, 0)
    args = ["--cores", "2", "--configfile", "config/ci.yaml", "arch.yaml"]
    snakemake([str(sanity), str(roar), *args], work, timeout=1200, warm_start=True)
    description = architecture(arch)
    blob = torch.load(work / paths.model_weights(config, "black", replicate=0),
                      weights_only=True, map_location="cpu")
    assert blob["meta"]["arch"] == arch
    cascading = pd.read_csv(work / sanity / "sanity.csv").query("test == 'cascading'")
    assert list(cascading["layer"]) == ["original", *description.cascade]
    result = json.loads((work / roar).read_text())
    assert 0 <= result["accuracy"] <= 1
    out = snakemake(["-n", str(sanity), str(roar), *args], work)
    assert "Nothing to be done" in out.stdout + out.stderr
