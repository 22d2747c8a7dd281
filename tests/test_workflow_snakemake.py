"""The Snakemake workflow, with every stage script replaced by tests/e2e/fake_stage.py:
lint, the planned DAG, rerun triggers, the GPU cap and failure handling (seconds, no models)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from e2e.workdir import copy_repo, fake_scripts, snakemake
from xaipipe import pipeline
from xaipipe.config import load_config

CI = ["--configfile", "config/ci.yaml"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A copy of the repo in which the whole CI-config DAG has run with fake scripts."""
    work = copy_repo(tmp_path_factory.mktemp("snakemake") / "repo")
    fake_scripts(work, pipeline.STAGES)
    snakemake(["--cores", "2", *CI], work)
    return work


def fake_runs(work) -> list[str]:
    return (work / "results" / "fake_runs.log").read_text().splitlines()


def shell_commands(dry_run_output: str) -> list[str]:
    return re.findall(r"^Shell command: (python .*)$", dry_run_output, re.M)


def test_lint_is_clean(done):
    out = snakemake(["--lint", *CI], done)
    assert "Lints for" not in out.stdout + out.stderr


def test_every_planned_job_ran_once_and_rerun_does_nothing(done):
    config = load_config([done / "config.yaml", done / "config" / "ci.yaml"])
    expected = sum(len(pipeline.jobs(pipeline.STAGES[n], config))
                   for n in pipeline.active_stage_names(config))
    runs = fake_runs(done)
    assert len(runs) == expected and len(set(runs)) == expected
    # 2 variants x (gradient, random), plus the two oracle maps on black (metric validation)
    assert Counter(r.split()[0] for r in runs)["roar"] == 6
    out = snakemake(["-n", "--cores", "2", *CI], done)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_scripts_get_the_config_files_in_merge_order(done):
    out = snakemake(["-n", "-p", "--forcerun", "index", "--cores", "1", *CI], done).stdout
    assert "python workflow_scripts/index.py --config config.yaml config/ci.yaml --threads 1 > " in out


def test_changed_override_reruns_only_that_variant(done):
    overlay = done / "config" / "ci.yaml"
    original = overlay.read_text()
    overlay.write_text(original + "train_overrides:\n  black: {lr: 0.02}\n")
    try:
        out = snakemake(["-n", "-p", "--cores", "2", *CI], done).stdout
    finally:
        overlay.write_text(original)
    commands = shell_commands(out)
    per_variant = [c for c in commands if "--variant" in c]
    assert per_variant and all("--variant black" in c for c in per_variant)
    assert any("train.py" in c for c in per_variant)
    # the jobs over all variants rerun because their inputs change; nothing else does
    assert {c.split()[1] for c in commands if "--variant" not in c} == {
        "workflow_scripts/roar_summary.py", "workflow_scripts/featvis_metrics.py",
        "workflow_scripts/aggregate.py", "workflow_scripts/report.py"}


def test_command_line_config_overrides_are_rejected(done):
    out = snakemake(["-n", *CI, "--config", "seed=3"], done, check=False)
    assert out.returncode != 0
    assert "--config KEY=VALUE overrides are not supported" in out.stdout + out.stderr


def test_invalid_config_stops_before_any_job(done):
    bad = done / "config" / "bad.yaml"
    bad.write_text("resolution: -4\n")
    out = snakemake(["-n", "--configfile", "config/bad.yaml"], done, check=False)
    assert out.returncode != 0
    assert "resolution" in out.stdout + out.stderr


def test_pretrained_imagenet_without_cached_weights_stops_before_any_job(done, tmp_path,
                                                                          monkeypatch):
    """The weights are checked at config validation, not in the train stage after the data
    stages: a fresh DAG (--forceall) starts no job and the message names the file and fix."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    overlay = done / "config" / "imagenet.yaml"
    overlay.write_text("train:\n  pretrained: imagenet\n")
    before = fake_runs(done)
    out = snakemake(["--cores", "2", "--forceall", *CI, "config/imagenet.yaml"], done,
                    check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and fake_runs(done) == before  # nothing ran, not even the data
    assert str(tmp_path / "empty-torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in text
    assert "never downloads" in text and "TORCH_HOME" in text


def test_gpu_resource_caps_concurrent_gpu_jobs(done, monkeypatch):
    monkeypatch.setenv("XAIPIPE_FAKE_GPU_SECONDS", "1.5")
    (done / "results" / "gpu_concurrency.log").unlink(missing_ok=True)
    gpu_rules = ["attribute", "featvis", "undesirable", "sanity"]
    snakemake(["--cores", "8", "--resources", "gpu=2", "--forcerun", *gpu_rules,
               "--until", *gpu_rules, *CI], done)  # (--until: not their downstream jobs)
    counts = [int(n) for n in (done / "results" / "gpu_concurrency.log").read_text().split()]
    assert max(counts) == 2  # two ran together, never three


def test_failed_job_leaves_no_output_and_rerun_resumes(done, monkeypatch):
    monkeypatch.setenv("XAIPIPE_FAKE_FAIL", "featvis")
    before = len(fake_runs(done))
    failed = snakemake(["--cores", "1", "--forcerun", "featvis", *CI], done, check=False)
    assert failed.returncode != 0
    crashed = fake_runs(done)[-1]  # the fake wrote a partial output, then exited 1
    assert crashed.startswith("featvis variant=")
    job = dict(word.split("=") for word in crashed.split()[1:])
    featvis = done / "results" / "explain" / job["variant"] / f"rep{job['replicate']}" / "featvis"
    assert not featvis.exists()
    monkeypatch.delenv("XAIPIPE_FAKE_FAIL")
    snakemake(["--cores", "1", *CI], done)
    resumed = [r.split()[0] for r in fake_runs(done)[before:]]
    assert set(resumed) == {"featvis", "featvis_metrics", "aggregate", "report"}
    assert (featvis / "content.txt").is_file()
