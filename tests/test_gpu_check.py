"""bench/gpu_check.sh stays ready for a GPU: its plan fits the 8 minutes, it refuses to run
without a CUDA device (no numbers), it reads a Snakemake dry run and the benchmark files right,
and its CPU mode runs the same code end to end (lock, throughput, concurrency, ROAD) at tiny
sizes.
The GPU numbers themselves can only come from a GPU run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run([str(SCRIPT), *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=900)


def _table(stdout: str) -> list[list[str]]:
    """Rows of the printed table (below the header rule), as stripped cells."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    return [[cell.strip() for cell in line.split(" | ")] for line in lines[start:]]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "_gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_dry_run_plans_every_check_within_eight_minutes():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    rows = _table(proc.stdout)
    checks = [row[0] for row in rows]
    assert checks.count("train 224 px") == 8  # 2 batch sizes x fp32 / AMP / +channels_last / +compile
    assert checks.count("concurrent jobs") == 3 and "device lock" in checks and "stage <each>" in checks
    assert checks.count("road 224 px") == 1  # ROAD: exact (CPU) vs iterative (card)
    total = float(rows[-1][2].lstrip("~"))
    assert rows[-1][0] == "total" and total < 450  # the budget; gpu_check.sh stops at 480 s


def test_without_a_cuda_device_it_says_so_and_prints_no_numbers():
    proc = _run(CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2
    assert "no CUDA device is visible" in proc.stderr and "--cpu" in proc.stderr
    assert proc.stdout == ""


def test_unknown_check_is_rejected():
    proc = _run("--only", "lock,gpus", "--dry-run")
    assert proc.returncode == 2 and "unknown check(s) ['gpus']" in proc.stderr


DRY_RUN = """Building DAG of jobs...
Job stats:
job               count
--------------  -------
make_synthetic        1
train                 2
all                   1
total                 4

[Thu Dec  3 16:48:57 2026]
rule make_synthetic:
    input: workflow_scripts/make_synthetic.py
    output: results/data/synthetic/manifest.json
    log: results/logs/make_synthetic/make_synthetic.log
    jobid: 1
    benchmark: results/benchmarks/make_synthetic/make_synthetic.tsv
    resources: tmpdir=/tmp, runtime=60

rule train:
    log: results/logs/train/black.log
    benchmark: results/benchmarks/train/black.tsv
    wildcards: variant=black

rule train:
    log: results/logs/train/standard.log
    benchmark: results/benchmarks/train/standard.tsv
    wildcards: variant=standard

localrule all:
    input: results/report/report.html
    jobid: 0
"""


def test_stage_rows_count_benchmarked_jobs_and_cuda_claims(gpu_check, tmp_path):
    jobs = gpu_check.planned_jobs(DRY_RUN)
    assert [j["rule"] for j in jobs] == ["make_synthetic", "train", "train"]  # `all` does no work
    assert jobs[1] == {"rule": "train", "log": "results/logs/train/black.log",
                       "benchmark": "results/benchmarks/train/black.tsv"}
    header = "s\th:m:s\tmax_rss\n"
    for job, seconds in ((jobs[0], 1.5), (jobs[1], 12.25)):  # standard's training failed
        path = tmp_path / job["benchmark"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{header}{seconds}\t0:00:01\t100\n")
    for job in jobs[1:]:
        log = tmp_path / job["log"]
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("INFO xaipipe.device: claimed cuda:0, slot 1 of 4 (lock /tmp/x)\n")
    rows = gpu_check.stage_rows(jobs, tmp_path, "cuda")
    assert [(r.check, r.result, r.unit) for r in rows] == [
        ("stage make_synthetic", "1/1", "jobs ok"), ("stage train", "1/2", "jobs ok")]
    assert "0 of 1 job(s) claimed CUDA; 1.5 s" in rows[0].setting
    assert "2 of 2 job(s) claimed CUDA; 12.2 s" in rows[1].setting


@pytest.mark.slow
def test_cpu_mode_runs_lock_throughput_concurrency_and_road_end_to_end():
    """The same code as on a GPU, on the CPU at tiny sizes (the lock on one fake card);
    about 40 s on two idle cores."""
    proc = _run("--cpu", "--only", "lock,throughput,concurrency,road", "--jobs", "2",
                "--budget-s", "850")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = _table(proc.stdout)
    assert [r[2] for r in rows if r[0] == "device lock"] == ["pass"] * 3
    measured = [r for r in rows if r[0] == "train 32 px" and r[3] == "images/s"]
    assert len(measured) == 4 and all(float(r[2]) > 0 for r in measured)  # fp32 and AMP, 2 batches
    assert [r[2] for r in rows if r[0] == "train 32 px" and r[3] == "CUDA only"] == ["n/a"] * 4
    (concurrent,) = [r for r in rows if r[0] == "concurrent jobs"]
    assert float(concurrent[2]) > 0 and "2 job(s), gpu.jobs_per_device 2" in concurrent[1]
    road = [r for r in rows if r[0] == "road 32 px"]
    assert [r[3] for r in road] == ["images/s", "images/s", "x"]
    assert all(float(r[2]) > 0 for r in road) and "max deviation" in road[2][1]
