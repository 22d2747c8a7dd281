"""The real stage scripts end to end on config/ci.yaml (one variant, two replicates), three
ways: local Snakemake (the whole DAG, every job audited against the stage table), `dvc repro`
and Snakemake on a local one-node SLURM cluster (both: data -> train -> localisation of one
model). Same config and seeds -> the same training metrics and localisation table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from e2e.workdir import REPO, VENV_BIN, copy_repo, run, snakemake, warm
from xaipipe import io_audit, pipeline
from xaipipe.config import load_config

pytestmark = pytest.mark.slow
CI = ["--configfile", "config/ci.yaml", "tests/e2e/one-variant.yaml"]
SLICE = ["results/models/black/rep0/metrics.json",
         "results/evaluate/metrics/black/rep0/localisation.csv"]
LOCAL_SLURM = REPO / "tests" / "e2e" / "local_slurm.sh"
# The tables both runners write (results/...), compared between them: Snakemake on a local
# SLURM cluster and dvc repro run the slice up to black's localisation.
SLICE_TABLES = ["evaluate/metrics/black/rep0/localisation.csv"]


def train_metrics(work, results="results") -> dict:
    """black's training metrics without throughput/wall-clock entries, floats rounded to
    5 decimals (CPU float sums may differ in the last bits between runs)."""
    metrics = json.loads((work / results / "models" / "black" / "rep0" / "metrics.json")
                         .read_text())
    return {k: round(v, 5) if isinstance(v, float) else v
            for k, v in metrics.items()
            if not any(word in k for word in ("time", "second", "per_s", "device", "host"))}


def assert_same_key_outputs(a, b, tables, b_results="results") -> None:
    """Two runs' training metrics are equal and each of ``tables`` holds the same rows and
    the same numbers (to 1e-5, like train_metrics' rounding); run ``b`` wrote to
    ``b_results``."""
    assert train_metrics(a) == train_metrics(b, b_results)
    for rel in tables:
        left, right = pd.read_csv(a / "results" / rel), pd.read_csv(b / b_results / rel)
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-5, atol=1e-5,
                                      obj=rel)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The whole CI DAG by local Snakemake, every stage recorded by xaipipe.io_audit into
    ``<work>/../audit``."""
    work = copy_repo(tmp_path_factory.mktemp("local") / "repo")
    snakemake(["--cores", "2", *CI], work, timeout=600,
              extra_env={io_audit.AUDIT_DIR_ENV: str(work.parent / "audit")})
    return work


def test_every_stage_reads_and_writes_only_what_it_declares(local_run):
    """Files read and written, config keys read and library modules imported by every job
    are declared in the stage table (inputs, outputs, params, DVC deps)."""
    config = load_config([local_run / "config.yaml", *(local_run / c for c in CI[1:])])
    records = [json.loads(p.read_text()) for p in (local_run.parent / "audit").glob("*.json")]
    jobs = sum(len(pipeline.jobs(pipeline.STAGES[n], config))
               for n in pipeline.active_stage_names(config))
    assert len(records) == jobs, "every job leaves one audit record"
    found = [p for record in records for p in io_audit.problems(record, config, local_run)]
    assert found == [], "\n".join(found)


def test_local_snakemake_runs_the_whole_dag(local_run):
    assert (local_run / "results" / "evaluate" / "roar_summary").is_dir()
    assert (local_run / "results" / "evaluate" / "featvis_metrics.csv").is_file()
    assert (local_run / "results" / "report" / "index.html").is_file()
    out = snakemake(["-n", "--cores", "2", *CI], local_run)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_snakemake_html_report_holds_figures_and_tables(local_run):
    snakemake(["--report", "snakemake-report.html", "--cores", "1", *CI], local_run)
    page = (local_run / "snakemake-report.html").read_text(errors="replace")
    for entry in ("learning_curve.png", "localisation.csv", "confidence_gain.csv",
                  "featvis_metrics.csv", "index.html", "curves_roar_black.png"):
        assert entry in page, entry


def test_corrupt_input_fails_cleanly_and_rerun_resumes(local_run):
    store = local_run / "results" / "data" / "variants" / "black" / "val" / "labels.npy"
    good = store.read_bytes()
    store.write_bytes(b"not a numpy file")
    target = "results/evaluate/metrics/black/rep0/localisation.csv"
    failed = snakemake([target, "--cores", "1", "--forcerun", "localisation", *CI], local_run,
                       check=False)
    assert failed.returncode != 0
    assert not (local_run / target).exists()
    store.write_bytes(good)
    snakemake([target, "--cores", "1", *CI], local_run)
    assert (local_run / target).is_file()


def dvc(args, work, **kw):
    return run([str(VENV_BIN / "dvc"), *args], work, **kw)


def test_dvc_repro_runs_the_slice_as_snakemake_does(local_run, tmp_path):
    """The preset's own generated dvc.yaml (`--out`, beside the committed one, which stays
    untouched) reproduces the slice up to localisation (data, variant store, training,
    attributions) with outputs under results/ci/ equal to Snakemake's; the whole generated
    DAG is checked against the stage table by tests/test_workflow_dvc.py, and the stage
    table against what every job really does by the audited run above."""
    work = copy_repo(tmp_path / "repo")
    run(["git", "init", "-q"], work)
    committed = (work / "dvc.yaml").read_text()
    run([str(VENV_BIN / "python"), "-m", "xaipipe.pipeline", "dvc", "--config", "config.yaml",
         "config/ci.yaml", "tests/e2e/one-variant.yaml", "--out", "config/dvc/ci"], work)
    pipeline = "config/dvc/ci/dvc.yaml"
    target = f"{pipeline}:localisation@black-0"
    run(warm([str(VENV_BIN / "dvc"), "repro", target]), work, timeout=600)
    assert (work / "dvc.yaml").read_text() == committed
    assert not (work / "results" / "models").exists()
    assert_same_key_outputs(local_run, work, SLICE_TABLES, "results/ci")
    assert "Data and pipelines are up to date" in dvc(["status", "--with-deps", target],
                                                      work).stdout
    # a second repro does nothing; a train param change reruns train and what follows only
    second = dvc(["repro", target], work).stdout
    assert "Running stage" not in second and "didn't change, skipping" in second
    ci = work / "config" / "ci.yaml"
    original = ci.read_text()
    ci.write_text(original.replace("  epochs: 1\n  batch_size: 16", "  epochs: 1\n  batch_size: 8"))
    rerun = dvc(["repro", "--dry", target], work).stdout
    # (a dry run lists the stages whose own deps changed; later ones follow if outputs change)
    assert f"Running stage '{pipeline}:train@black-0'" in rerun
    assert f"Running stage '{pipeline}:variant@black'" not in rerun
    assert f"Running stage '{pipeline}:make_synthetic'" not in rerun
    ci.write_text(original)
    # push / pull of data and models through a local remote
    dvc(["remote", "add", "-d", "local", str(tmp_path / "remote")], work)
    dvc(["push", "--with-deps", target], work)
    shutil.rmtree(work / "results" / "ci" / "models")
    shutil.rmtree(work / ".dvc" / "cache")
    dvc(["pull", f"{pipeline}:train@black-0"], work)
    assert train_metrics(local_run) == train_metrics(work, "results/ci")
    assert "Data and pipelines are up to date" in dvc(["status", f"{pipeline}:train@black-0"],
                                                      work).stdout


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("local SLURM needs root and Debian's slurm-wlm + munge "
                    "(apt-get install -y slurm-wlm munge); .ci/run installs them")
    already_running = subprocess.run([str(LOCAL_SLURM), "status"]).returncode == 0
    if not already_running:  # .ci/run starts it; otherwise this test starts and stops it
        started = subprocess.run([str(LOCAL_SLURM), "start"], capture_output=True, text=True)
        if started.returncode != 0:
            pytest.skip(f"could not start a local SLURM cluster: {started.stderr.strip()[-500:]}")
    yield
    if not already_running:
        subprocess.run([str(LOCAL_SLURM), "stop"], capture_output=True)


def test_slurm_profile_runs_the_slice_on_a_local_cluster(slurm_cluster, local_run, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("SLURM_CONF", os.environ.get("XAIPIPE_SLURM_DIR", "/tmp/xaipipe-slurm")
                       + "/slurm.conf")
    work = copy_repo(tmp_path / "repo")
    out = snakemake([*SLICE, "--profile", "profiles/slurm", "--workflow-profile",
                     "tests/e2e/slurm-local", *CI], work, timeout=600)
    assert "has been submitted with SLURM jobid" in out.stdout + out.stderr
    assert_same_key_outputs(local_run, work, SLICE_TABLES)
