"""The declared-I/O audit: the recording config, and a planted undeclared read and config
key caught on a real stage (make_synthetic on the CI config, a few seconds). The whole DAG
runs under the audit in tests/test_workflow_e2e.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from e2e.workdir import REPO
from xaipipe import io_audit
from xaipipe.config import load_config

CONFIGS = [str(REPO / "config.yaml"), str(REPO / "config" / "ci.yaml")]


def test_recording_config_records_leaves_sections_and_missing_keys():
    seen: set[str] = set()
    config = io_audit.RecordingConfig({"train": {"lr": 0.1, "epochs": 2}, "seed": 0,
                                       "overrides": {"black": {"lr": 1}}}, seen)
    assert config["train"]["lr"] == 0.1
    assert seen == {"train.lr"}  # going through "train" is not reading all of it
    assert config["overrides"].get("noise", {}) == {}
    assert "overrides.noise" in seen
    copy.deepcopy(config["train"])
    assert "train" in seen  # a copy reads the whole section
    seen.clear()
    assert json.loads(json.dumps(config))["seed"] == 0
    assert {"seed", "train.lr", "train.epochs"} <= seen


def run_stage_under_audit(tmp_path, plant: bool) -> list[str]:
    """make_synthetic under the audit in ``tmp_path``; ``plant``: also read an undeclared
    file and an undeclared config key. Returns the audit's problems."""
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "planted.txt").write_text("not an input of make_synthetic\n")
    script = REPO / "workflow_scripts" / "make_synthetic.py"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(f"""
import pathlib, runpy, sys
import xaipipe.data.synthetic as synthetic

original = synthetic.make_synthetic

def planted(config):
    pathlib.Path(config["results_dir"], "planted.txt").read_text()
    config["undesirable"]["num_images"]
    return original(config)

if {plant!r}:
    synthetic.make_synthetic = planted
sys.argv = [{str(script)!r}, "--config", *{CONFIGS!r}]
runpy.run_path({str(script)!r}, run_name="__main__")
""")
    audit = tmp_path / "audit"
    env = {**os.environ, io_audit.AUDIT_DIR_ENV: str(audit)}
    proc = subprocess.run([sys.executable, str(wrapper)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record_file,) = audit.glob("*.json")
    record = json.loads(record_file.read_text())
    assert any("JPEGImages" in w for w in record["writes"])  # the recorder saw the writes
    return io_audit.problems(record, load_config(CONFIGS), tmp_path)


def test_declared_stage_passes_the_audit(tmp_path):
    assert run_stage_under_audit(tmp_path, plant=False) == []


def test_planted_undeclared_read_and_key_are_caught(tmp_path):
    found = run_stage_under_audit(tmp_path, plant=True)
    assert any("reads" in p and "planted.txt" in p and "declares no input" in p for p in found)
    assert any("'undesirable.num_images'" in p and "not in its params" in p for p in found)
    assert len(found) == 2, found


@pytest.mark.parametrize("write, ok", [("results/data/synthetic/manifest.json", True),
                                       ("results/data/synthetic/.manifest.json.ab12.tmp", True),
                                       ("results/data/index.parquet", False)])
def test_writes_must_be_declared_outputs_or_their_temporaries(tmp_path, write, ok):
    record = {"script": "workflow_scripts/make_synthetic.py", "wildcards": {}, "reads": [],
              "writes": [str(tmp_path / write)], "keys": [], "modules": []}
    found = io_audit.problems(record, load_config(CONFIGS), tmp_path)
    assert (found == []) == ok, found
