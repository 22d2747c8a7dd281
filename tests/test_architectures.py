"""``model.arch`` end to end: the CI config with ResNet50 (Bottleneck blocks) and with VGG16-BN
through the whole DAG with the real stage scripts (local Snakemake), one variant and no
metric validation to keep it small. Each model file records its architecture, the sanity
cascade steps through the architecture's blocks and the report names it.

Measured cost (time, CPU, disk, memory): docs/training.md, "Architectures"; a vgg16_bn model
file is about 0.5 GB (its 120 M-parameter classifier), two of them per run (black + the
reference model)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from e2e.workdir import copy_repo, snakemake
from xaipipe import paths
from xaipipe.architectures import architecture
from xaipipe.config import load_config

pytestmark = pytest.mark.slow

SMALL = {"variants": ["black"], "metric_validation": {"variants": []}}
"""On top of config/ci.yaml: one variant (plus the reference model featvis_metrics needs)."""


@pytest.mark.parametrize("arch", ["resnet50", "vgg16_bn"])
def test_architecture_runs_the_ci_config_end_to_end(tmp_path, arch):
    work = copy_repo(tmp_path / "repo")
    (work / "arch.yaml").write_text(yaml.safe_dump({**SMALL, "model": {"arch": arch}}))
    args = ["--cores", "2", "--configfile", "config/ci.yaml", "arch.yaml"]
    snakemake(args, work, timeout=1500)
    config = load_config([work / "config.yaml", work / "config" / "ci.yaml", work / "arch.yaml"])
    config["results_dir"] = str(work / "results")
    description = architecture(arch)
    for name in ("black", paths.REFERENCE_MODEL):
        blob = torch.load(paths.model_weights(config, name), weights_only=True, map_location="cpu")
        assert blob["meta"]["arch"] == arch, name
    sanity = pd.read_csv(paths.sanity_dir(config, "black") / "sanity.csv")
    cascading = sanity[sanity["test"] == "cascading"]
    assert list(cascading["layer"]) == ["original", *description.cascade]
    roar = pd.read_csv(work / "results" / "evaluate" / "roar_summary" / "roar_runs.csv")
    assert set(roar["method"]) == {"gradient", "random"}
    html = (work / "results" / "report" / "index.html").read_text()
    assert f"{description.title} ({description.origin}" in html
    out = snakemake(["-n", *args], work)
    assert "Nothing to be done" in out.stdout + out.stderr
