"""The worked example of docs/extending.md end to end: a plug-in variant (blur) and a plug-in
attribution method (grad_x_input), registered by config only, through the whole DAG on the
CI config with the real stage scripts (local Snakemake, about a minute)."""

from __future__ import annotations

import pandas as pd
import pytest

from e2e.workdir import copy_repo, snakemake

pytestmark = pytest.mark.slow


def test_plugin_variant_and_method_run_through_the_whole_dag(tmp_path):
    work = copy_repo(tmp_path / "repo")
    snakemake(["--cores", "2", "--configfile", "config/ci.yaml", "tests/e2e/plugins.yaml"], work,
              warm_start=True, timeout=600)
    results = work / "results"
    metrics = pd.read_json(results / "models" / "blur" / "rep0" / "metrics.json", typ="series")
    assert 0 <= metrics["val_accuracy"] <= 1
    for split in ("train", "val", "val_matched"):
        assert (results / "explain" / "blur" / "rep0" / "attributions"
                / f"grad_x_input_{split}.npy").is_file()
    roar = pd.read_csv(results / "evaluate" / "roar_summary" / "roar_runs.csv")
    assert set(roar["method"]) == {"grad_x_input", "random"} and set(roar["variant"]) == {"blur"}
    localisation = pd.read_csv(results / "report" / "localisation.csv")
    assert {"grad_x_input", "random"} <= set(localisation["subject"])
    sanity = pd.read_csv(results / "report" / "sanity.csv")
    assert set(sanity["method"]) == {"grad_x_input"}
    html = (results / "report" / "index.html").read_text()
    assert "blur" in html and "grad_x_input" in html
    out = snakemake(["-n", "--cores", "2", "--configfile", "config/ci.yaml",
                     "tests/e2e/plugins.yaml"], work)
    assert "Nothing to be done" in out.stdout + out.stderr
