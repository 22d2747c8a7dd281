"""GPU check: training throughput, card sharing, every stage's CUDA path, the device lock.

Run through ``bench/gpu_check.sh`` (it adds a hard time limit). Prints one table, one row per
check, columns check / setting / result / unit; progress goes to stderr as rows finish.

- ``device lock``: two processes on the real card: with one slot the second is refused
  while the first holds it; with two slots both run on cuda:0 at once; a SIGKILLed holder's
  slot goes to the waiting process. Each process really allocates on the card it claimed.
- ``stage <name>``: the tiny DAG of ``config/ci.yaml`` with ``device: cuda`` (and
  ``gpu.jobs_per_device`` 4, ``--resources gpu=4`` per card) run by Snakemake in a temporary
  copy of the repository. Per stage: jobs whose benchmark file exists (Snakemake writes it only
  for a job that succeeded) out of the jobs of its dry run, and how many of them logged a
  claim of a CUDA device. AMP and channels_last are on (the defaults); torch.compile is
  exercised by the throughput rows.
- ``train 224 px``: images/s of :func:`xaipipe.train.train_classifier` (the pipeline's own
  loop) on random 224 px images, batch 64 and 256, fp32 / AMP / AMP + channels_last /
  AMP + channels_last + torch.compile; the best of the warm epochs (epoch 1 pays cuDNN's
  autotuning and the compile).
- ``concurrent jobs``: 1, 2 and 4 training processes on one card, started together with
  ``gpu.jobs_per_device`` = their number (so they share it through the lock's slots), timed
  from a common start signal after their warm-up: all images trained / wall time.
- ``road 224 px``: ROAD's imputation (``bench/bench_road.py``'s random images and maps, every
  (order, fraction) point of ``config.yaml``'s ``roar.fractions``): images/s of the exact
  solve (SciPy LU, on the CPU as always) and of the iterative solver on the card (256 systems
  a solve, after a warm-up solve), their ratio, and the largest deviation between the two
  (passes below 1e-4 in [0, 1] pixel units).

Time on one H200 (the budget is 450 s; a check that no longer fits is reported as skipped,
never estimated): the lock ~20 s (six Python processes importing torch, 2-3 s each); the
DAG ~120 s (42 jobs, start-up-bound: ~4 s of imports and CUDA context per job, 4 GPU jobs
at a time, on the critical path of ~9 stages); six uncompiled throughput rows ~50 s (4096
images x 4 epochs at 2000-5000 images/s, plus making 0.6 GB of images); concurrency ~60 s
(per run ~10 s of start-up and warm-up, then 4 epochs x 2048 images per process); ROAD ~15 s
(two images through the exact solve on the CPU, ~1.5 s each; 64 through the card); the two
compiled rows ~60 s each (Inductor compiles ResNet18's training step once per model; the
second compile reuses its cache). Sum of the estimates: ~415 s.

    bench/gpu_check.sh              # needs a CUDA device; says so and exits 2 without one
    bench/gpu_check.sh --cpu        # the same code on the CPU at tiny sizes (CPU numbers)
    bench/gpu_check.sh --dry-run    # the rows it would measure and their time estimates
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("lock", "dag", "throughput", "concurrency", "road")
BATCHES = {"gpu": (64, 256), "cpu": (8, 16)}
VARIANTS = (  # (label, amp, channels_last, compile)
    ("fp32", False, False, False),
    ("AMP", True, False, False),
    ("AMP, channels_last", True, True, False),
    ("AMP, channels_last, torch.compile", True, True, True),
)
SIZES = {  # throughput: images, epochs (the first is warm-up); concurrency: per process
    "gpu": {"images": 4096, "epochs": 4, "size": 224, "job_images": 2048, "job_epochs": 4},
    "cpu": {"images": 32, "epochs": 2, "size": 32, "job_images": 16, "job_epochs": 2},
}
ROAD_SIZES = {"gpu": {"size": 224, "exact_images": 2, "images": 64},
              "cpu": {"size": 32, "exact_images": 2, "images": 8}}
DAG_JOBS_PER_DEVICE = 4
DAG_LIMIT_S = 200  # the estimate is ~120 s: stop it well before it eats the other checks' time
ESTIMATE_S = {"lock": 20, "dag": 120, "train": 8, "compile": 60, "job": 20, "road": 15}


@dataclass
class Row:
    check: str
    setting: str
    result: str
    unit: str
    ok: bool = True
    """False for a failed check (the exit status is then 1); a skipped check is not a failure."""


class Budget:
    """Wall-clock budget of the whole check; a step that no longer fits is skipped."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def allows(self, estimate: float) -> bool:
        return self.left() >= estimate


def progress(message: str, budget: Budget | None = None) -> None:
    elapsed = "" if budget is None else f"[{budget.seconds - budget.left():5.0f} s] "
    print(f"{elapsed}{message}", file=sys.stderr, flush=True)


def child_env(cpu: bool, **extra: str) -> dict:
    """Environment of every process this check starts: this interpreter's directory first on
    PATH (so ``python`` and ``snakemake`` are this environment's), no fake devices on a GPU."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("XAIPIPE_FAKE_CUDA_COUNT", None)
    if cpu:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def helper(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# --- the device lock ----------------------------------------------------------------------

def hold_main(args: argparse.Namespace) -> int:
    """Child process: claim a device, use it, report, hold until ``--release`` appears."""
    import torch

    from xaipipe.device import claim_device
    from xaipipe.errors import XaipipeError

    report = Path(args.report)
    Path(args.started).write_text("")
    try:
        with claim_device("cuda", jobs_per_device=args.jobs_per_device, wait_s=args.wait_s,
                          poll_s=0.1) as device:
            compute = torch.device("cpu") if args.cpu else device
            total = float(torch.ones(1024, device=compute).mul(2).sum())
            report.write_text(json.dumps({"index": device.index, "used": total == 2048.0}))
            deadline = time.monotonic() + 120
            while not Path(args.release).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    except XaipipeError as exc:
        report.write_text(json.dumps({"error": str(exc)}))
    return 0


def _start_holder(work: Path, name: str, env: dict, *, jobs_per_device: int, wait_s: float,
                  cpu: bool) -> tuple[subprocess.Popen, Path]:
    report = work / f"{name}.json"
    args = ["hold", "--report", str(report), "--started", str(work / f"{name}.started"),
            "--release", str(work / "release"),
            "--jobs-per-device", str(jobs_per_device), "--wait-s", str(wait_s)]
    return subprocess.Popen(helper(*args, *(["--cpu"] if cpu else [])), env=env), report


def _read_report(report: Path, proc: subprocess.Popen, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.exists() and report.stat().st_size:
            return json.loads(report.read_text())
        if proc.poll() is not None and not report.exists():
            return {"error": f"exited with {proc.returncode} before claiming"}
        time.sleep(0.05)
    return {"error": f"no claim within {timeout:.0f} s"}


def _wait_started(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def _finish(work: Path, procs: list[subprocess.Popen]) -> None:
    (work / "release").write_text("")
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    (work / "release").unlink()


def lock_scenario(work: Path, env: dict, cpu: bool, scenario: str) -> tuple[bool, str]:
    """One two-process scenario of the device lock: (passed, what was seen)."""
    for leftover in [*work.glob("*.json"), *work.glob("*.started")]:
        leftover.unlink()
    slots = 2 if scenario == "shared" else 1
    first, first_report = _start_holder(work, "first", env, jobs_per_device=slots, wait_s=60, cpu=cpu)
    procs = [first]
    try:
        got_first = _read_report(first_report, first)
        wait_s = {"exclusive": 2, "shared": 60, "killed": 60}[scenario]
        second, second_report = _start_holder(work, "second", env, jobs_per_device=slots,
                                               wait_s=wait_s, cpu=cpu)
        procs.append(second)
        if scenario == "killed":
            _wait_started(work / "second.started", second)
            time.sleep(1.0)  # the second is polling the held slot
            if second_report.exists():
                return False, f"second claimed the held slot: {second_report.read_text()}"
            first.send_signal(signal.SIGKILL)
            first.wait()
        got_second = _read_report(second_report, second)
    finally:
        _finish(work, procs)
    seen = f"first {got_first}, second {got_second}"
    used = got_first.get("used") is True
    if scenario == "exclusive":
        return used and "stayed busy" in got_second.get("error", ""), seen
    return used and got_second.get("used") is True and got_first["index"] == got_second["index"] == 0, seen


def lock_rows(work: Path, cpu: bool, budget: Budget) -> list[Row]:
    env = child_env(cpu, XAIPIPE_LOCK_DIR=str(work / "locks"),
                    **({"XAIPIPE_FAKE_CUDA_COUNT": "1"} if cpu else {}))
    settings = {
        "exclusive": "2 processes, 1 slot: the second is refused while the first holds cuda:0",
        "shared": "2 processes, 2 slots: both on cuda:0 at once",
        "killed": "1 slot, holder SIGKILLed: the waiting process gets cuda:0",
    }
    rows = []
    for scenario, setting in settings.items():
        passed, seen = lock_scenario(work, env, cpu, scenario)
        progress(f"device lock {scenario}: {'pass' if passed else 'FAIL'} ({seen})", budget)
        rows.append(Row("device lock", setting, "pass" if passed else "FAIL", "pass/fail", passed))
    return rows


# --- every stage on a tiny DAG ------------------------------------------------------------

def copy_tree(dest: Path) -> Path:
    """The repository without outputs, environments or caches (git may not be there)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "results", ".snakemake", ".dvc", "__pycache__",
                                    "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


def planned_jobs(dry_run: str) -> list[dict]:
    """Jobs of a ``snakemake -n`` listing: rule, benchmark and log path, in order (rules
    without a benchmark, such as ``all``, are left out: they do no work)."""
    jobs, job = [], None
    for line in dry_run.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            job = {"rule": match.group(1)}
            jobs.append(job)
        elif job is not None and (match := re.match(r"^(benchmark|log): (\S+)$", line.strip())):
            job[match.group(1)] = match.group(2)
    return [j for j in jobs if "benchmark" in j]


def stage_rows(jobs: list[dict], workdir: Path, device: str) -> list[Row]:
    """Per rule: jobs whose benchmark exists / planned, CUDA claims in the logs, wall time."""
    rows = []
    for rule in dict.fromkeys(j["rule"] for j in jobs):
        mine = [j for j in jobs if j["rule"] == rule]
        done = [j for j in mine if (workdir / j["benchmark"]).is_file()]
        seconds = sum(_benchmark_seconds(workdir / j["benchmark"]) for j in done)
        claims = sum("claimed cuda:" in _text(workdir / j.get("log", "")) for j in mine)
        rows.append(Row(f"stage {rule}", f"device {device}; {claims} of {len(mine)} job(s) "
                        f"claimed CUDA; {seconds:.1f} s of job time", f"{len(done)}/{len(mine)}",
                        "jobs ok", len(done) == len(mine)))
    return rows


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _benchmark_seconds(path: Path) -> float:
    lines = path.read_text().splitlines()
    return float(lines[1].split("\t")[0]) if len(lines) > 1 else 0.0


def run_group(cmd: list[str], *, cwd: Path, env: dict, timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in a process group of its own; on timeout or interruption stop the whole
    group, so none of Snakemake's jobs outlives it. (exit code, or None on timeout; output)"""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return None, proc.communicate()[0]
    finally:
        if proc.poll() is None:  # interrupted
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group (Snakemake then stops its jobs), SIGKILL whatever is left 5 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def dag_rows(work: Path, cpu: bool, budget: Budget, cards: int) -> list[Row]:
    if not budget.allows(ESTIMATE_S["dag"]):
        return [Row("tiny DAG", "config/ci.yaml", "skipped", "time budget")]
    workdir = copy_tree(work / "repo")
    slots = 1 if cpu else DAG_JOBS_PER_DEVICE
    device = "cpu" if cpu else "cuda"
    (workdir / "gpu_check.yaml").write_text(f"device: {device}\ngpu:\n  jobs_per_device: {slots}\n")
    env = child_env(cpu, XAIPIPE_LOCK_DIR=str(work / "dag-locks"), PYTHONPATH=str(workdir),
                    **({"XAIPIPE_FAKE_CUDA_COUNT": "0"} if cpu else {}))
    cores = os.cpu_count() or 1
    base = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources",
            f"gpu={max(cards, 1) * slots}", "--configfile", "config/ci.yaml", "gpu_check.yaml"]
    plan = subprocess.run(base + ["-n"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120)
    jobs = planned_jobs(plan.stdout)
    if plan.returncode != 0 or not jobs:
        tail = (plan.stdout + plan.stderr)[-2000:]
        progress(f"tiny DAG: the dry run failed:\n{tail}", budget)
        return [Row("tiny DAG", "snakemake -n on config/ci.yaml", "FAIL", "dry run", False)]
    timeout = max(min(budget.left() - 5, DAG_LIMIT_S), 10)
    progress(f"tiny DAG: {len(jobs)} jobs on {device}, {cores} cores, gpu={max(cards, 1) * slots}, "
             f"time limit {timeout:.0f} s", budget)
    tic = time.monotonic()
    code, output = run_group(base + ["--scheduler", "greedy", "--keep-going"], cwd=workdir, env=env,
                             timeout=timeout)
    wall = time.monotonic() - tic
    status = {None: f"timed out after {timeout:.0f} s", 0: "done"}.get(code, f"exit {code}")
    if code != 0:
        progress(f"tiny DAG: snakemake {status}:\n{output[-3000:]}", budget)
    rows = stage_rows(jobs, workdir, device)
    ok = sum(int(r.result.split("/")[0]) for r in rows)
    rows.append(Row("tiny DAG", f"config/ci.yaml + device {device}, gpu.jobs_per_device {slots}: "
                    f"{ok}/{len(jobs)} jobs ok, snakemake {status}", f"{wall:.0f}", "s wall", code == 0))
    for row in rows:
        progress(f"{row.check}: {row.result} {row.unit} ({row.setting})", budget)
    return rows


# --- training throughput ------------------------------------------------------------------

def random_split(n: int, size: int, num_classes: int = 20):
    """Random uint8 images and labels: throughput does not depend on the pixel values."""
    import numpy as np

    from xaipipe.data.store import Split

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return Split(images=images, masks=np.ones((n, size, size), np.uint8),
                 labels=rng.integers(0, num_classes, n).astype(np.int64),
                 meta={"class_names": [str(c) for c in range(num_classes)]})


def train_settings(*, epochs: int, batch: int, amp: bool, channels_last: bool, compile_: bool) -> dict:
    """The pipeline's default ``train`` section (schema defaults) with the knobs under test."""
    from xaipipe.config import validate_config

    settings = validate_config({})["train"]
    settings.update(epochs=epochs, batch_size=batch, amp=amp, channels_last=channels_last,
                    compile=compile_, pretrained="none", recalibrate_bn_images=0)
    return settings


def warm_rate(split, settings: dict, device) -> float:
    """Best images/s over the warm epochs (all but the first) of the pipeline's training loop."""
    from xaipipe.train import train_classifier

    result = train_classifier(split, settings, num_classes=split.num_classes, seed=0, device=device)
    return max(row["images_per_s"] for row in result.history[1:])


def precision_label(label: str, device) -> str:
    """``label`` with what it means on ``device``: the AMP dtype, TF32 in fp32 convolutions."""
    import torch

    if device.type != "cuda":
        return label.replace("AMP", "AMP (no effect on CPU)")
    if label == "fp32":
        return f"fp32 (cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'})"
    return label.replace("AMP", "AMP (bf16)" if torch.cuda.is_bf16_supported() else "AMP (fp16)")


def throughput_rows(cpu: bool, budget: Budget, compiled: bool) -> list[Row]:
    """The uncompiled rows (``compiled`` False) or the torch.compile rows (True)."""
    import torch

    from xaipipe.device import claim_device

    mode = "cpu" if cpu else "gpu"
    sizes = SIZES[mode]
    split = random_split(sizes["images"], sizes["size"])
    rows = []
    with claim_device("cpu" if cpu else "cuda") as device:
        for batch in BATCHES[mode]:
            for label, amp, channels_last, compile_ in VARIANTS:
                if compile_ != compiled:
                    continue
                setting = (f"batch {batch}, {precision_label(label, device)}, "
                           f"{sizes['images']} images x {sizes['epochs']} epochs, best warm epoch")
                if cpu and (channels_last or compile_):
                    rows.append(Row(f"train {sizes['size']} px", setting, "n/a", "CUDA only"))
                    continue
                if not budget.allows(ESTIMATE_S["compile" if compile_ else "train"]):
                    rows.append(Row(f"train {sizes['size']} px", setting, "skipped", "time budget"))
                    continue
                settings = train_settings(epochs=sizes["epochs"], batch=batch, amp=amp,
                                          channels_last=channels_last, compile_=compile_)
                try:
                    rate = warm_rate(split, settings, device)
                except Exception as exc:  # e.g. no compiler for torch.compile: the next rows still run
                    progress(f"train, {setting} failed:\n{traceback.format_exc()}", budget)
                    rows.append(Row(f"train {sizes['size']} px", setting, "FAIL", type(exc).__name__, False))
                    continue
                rows.append(Row(f"train {sizes['size']} px", setting, f"{rate:.0f}", "images/s"))
                progress(f"train {sizes['size']} px, {setting}: {rate:.0f} images/s", budget)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --- concurrent jobs on one card ----------------------------------------------------------

def train_job_main(args: argparse.Namespace) -> int:
    """Child process: claim a slot, warm up, wait for the common start, train, report."""
    import torch

    from xaipipe.device import claim_device
    from xaipipe.train import train_classifier

    if args.cpu:
        torch.set_num_threads(1)
    split = random_split(args.images, args.size)
    with claim_device("cuda", jobs_per_device=args.jobs_per_device, wait_s=60, poll_s=0.1) as device:
        compute = torch.device("cpu") if args.cpu else device
        warm = train_settings(epochs=1, batch=args.batch, amp=True, channels_last=True, compile_=False)
        train_classifier(split, warm, num_classes=split.num_classes, seed=0, device=compute)
        Path(args.ready).write_text(str(device.index))
        while not Path(args.go).exists():
            time.sleep(0.01)
        tic = time.time()
        timed = dict(warm, epochs=args.epochs)
        result = train_classifier(split, timed, num_classes=split.num_classes, seed=1, device=compute)
        toc = time.time()
    images = sum(round(row["images_per_s"] * row["seconds"]) for row in result.history)
    Path(args.report).write_text(json.dumps({"index": device.index, "start": tic, "end": toc,
                                             "images": images}))
    return 0


def concurrent_rate(work: Path, jobs: int, cpu: bool) -> tuple[float, str]:
    """Aggregate images/s of ``jobs`` training processes sharing one card, and a note."""
    mode = "cpu" if cpu else "gpu"
    sizes = SIZES[mode]
    run_dir = work / f"jobs{jobs}"
    run_dir.mkdir()
    env = child_env(cpu, XAIPIPE_LOCK_DIR=str(run_dir / "locks"),
                    **({"XAIPIPE_FAKE_CUDA_COUNT": "1"} if cpu else
                       {"CUDA_VISIBLE_DEVICES": first_visible_card()}))
    go = run_dir / "go"
    procs = []
    for i in range(jobs):
        args = ["train-job", "--jobs-per-device", str(jobs), "--images", str(sizes["job_images"]),
                "--size", str(sizes["size"]), "--batch", str(BATCHES[mode][0]),
                "--epochs", str(sizes["job_epochs"]), "--ready", str(run_dir / f"{i}.ready"),
                "--go", str(go), "--report", str(run_dir / f"{i}.json")]
        procs.append(subprocess.Popen(helper(*args, *(["--cpu"] if cpu else [])), env=env))
    try:
        deadline = time.monotonic() + 180
        while not all((run_dir / f"{i}.ready").exists() for i in range(jobs)):
            failed = [p.returncode for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                return float("nan"), f"a job failed or never got ready (exit codes {failed})"
            time.sleep(0.05)
        go.write_text("")
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(codes):
        return float("nan"), f"exit codes {codes}"
    reports = [json.loads((run_dir / f"{i}.json").read_text()) for i in range(jobs)]
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    cards = sorted({r["index"] for r in reports})
    per_job = ", ".join(f"{r['images'] / (r['end'] - r['start']):.0f}" for r in reports)
    return sum(r["images"] for r in reports) / span, f"cuda{cards}; per job {per_job} images/s"


def first_visible_card() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def concurrency_rows(work: Path, cpu: bool, budget: Budget, counts: list[int]) -> list[Row]:
    mode = "cpu" if cpu else "gpu"
    sizes = SIZES[mode]
    rows = []
    for jobs in counts:
        setting = (f"{jobs} job(s), gpu.jobs_per_device {jobs}, batch {BATCHES[mode][0]}, AMP, "
                   f"channels_last, {sizes['size']} px, {sizes['job_epochs']} x "
                   f"{sizes['job_images']} images each")
        if not budget.allows(ESTIMATE_S["job"] * (1 + jobs / 4)):
            rows.append(Row("concurrent jobs", setting, "skipped", "time budget"))
            continue
        rate, note = concurrent_rate(work, jobs, cpu)
        result = "FAIL" if rate != rate else f"{rate:.0f}"
        rows.append(Row("concurrent jobs", f"{setting}; {note}", result, "images/s, all jobs",
                        ok=result != "FAIL"))
        progress(f"concurrent jobs {jobs}: {result} images/s ({note})", budget)
    return rows


# --- ROAD's imputation: the exact solve against the iterative solver on the card ------------

def road_rows(cpu: bool, budget: Budget) -> list[Row]:
    """Images/s of both ROAD solvers on the same masks, their ratio and largest deviation."""
    import numpy as np

    from xaipipe.config import load_config
    from xaipipe.device import claim_device
    from xaipipe.evaluate.road import batch_linear_imputation

    sys.path.insert(0, str(REPO / "bench"))
    from bench_road import MAX_DEVIATION, road_case, timed

    sizes = ROAD_SIZES["cpu" if cpu else "gpu"]
    size, n, n_exact = sizes["size"], sizes["images"], sizes["exact_images"]
    check = f"road {size} px"
    if not budget.allows(ESTIMATE_S["road"]):
        return [Row(check, "exact vs iterative", "skipped", "time budget")]
    config = load_config([REPO / "config.yaml"])
    images, removed = road_case("random", n, size, list(config["roar"]["fractions"]),
                                config["seed"])
    points = removed.shape[0]
    exact, exact_s = timed(images[:n_exact], removed[:, :n_exact], solver="exact")
    exact_rate = n_exact / exact_s
    tolerance = config["roar"]["road_tolerance"]
    with claim_device("cpu" if cpu else "cuda") as device:
        # warm-up (CUDA context); its result comes back to the CPU, so the card is idle after it
        batch_linear_imputation(images[:1], removed[:1, :1], solver="iterative",
                                tolerance=tolerance, device=device)
        iterative, iterative_s = timed(images, removed, solver="iterative", tolerance=tolerance,
                                       device=device)
        iterative_rate = n / iterative_s
    deviation = float(np.abs(iterative[:, :n_exact] - exact).max())
    rows = [
        Row(check, f"exact (SciPy LU, CPU), {n_exact} images x {points} points", f"{exact_rate:.2f}",
            "images/s"),
        Row(check, f"iterative ({device}), {n} images x {points} points, tolerance {tolerance:g}",
            f"{iterative_rate:.2f}", "images/s"),
        Row(check, f"iterative / exact; max deviation {deviation:.1e} (limit {MAX_DEVIATION:g})",
            f"{iterative_rate / exact_rate:.1f}", "x", deviation < MAX_DEVIATION),
    ]
    for row in rows:
        progress(f"{row.check}: {row.result} {row.unit} ({row.setting})", budget)
    return rows


# --- the table and the driver -------------------------------------------------------------

ORDER = ("device lock", "stage", "tiny DAG", "train", "concurrent jobs", "road")


def table(rows: list[Row]) -> str:
    """Aligned columns, rows grouped by kind of check (in the order they ran within a kind)."""
    header = Row("check", "setting", "result", "unit")
    rank = {kind: i for i, kind in enumerate(ORDER)}
    rows = sorted(rows, key=lambda r: next((rank[k] for k in ORDER if r.check.startswith(k)), len(ORDER)))
    cells = [[r.check, r.setting, r.result, r.unit] for r in [header, *rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [" | ".join(c[i].ljust(widths[i]) if i != 2 else c[i].rjust(widths[i]) for i in range(4))
             for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def plan_rows(cpu: bool, checks: list[str], counts: list[int]) -> list[Row]:
    """The rows a run would produce, with the time each is estimated to take (--dry-run)."""
    mode = "cpu" if cpu else "gpu"
    rows = []
    if "lock" in checks:
        rows.append(Row("device lock", "3 two-process scenarios", f"~{ESTIMATE_S['lock']}", "s (estimate)"))
    if "dag" in checks:
        rows.append(Row("stage <each>", "config/ci.yaml, device cuda, one row per stage",
                        f"~{ESTIMATE_S['dag']}", "s (estimate)"))
    if "throughput" in checks:
        for batch in BATCHES[mode]:
            for label, _, _, compile_ in VARIANTS:
                rows.append(Row(f"train {SIZES[mode]['size']} px", f"batch {batch}, {label}",
                                f"~{ESTIMATE_S['compile' if compile_ else 'train']}", "s (estimate)"))
    if "concurrency" in checks:
        for jobs in counts:
            rows.append(Row("concurrent jobs", f"{jobs} job(s) on one card",
                            f"~{ESTIMATE_S['job'] * (1 + jobs / 4):.0f}", "s (estimate)"))
    if "road" in checks:
        rows.append(Row(f"road {ROAD_SIZES[mode]['size']} px", "exact (CPU) vs iterative (card)",
                        f"~{ESTIMATE_S['road']}", "s (estimate)"))
    total = sum(float(r.result.lstrip("~")) for r in rows)
    return rows + [Row("total", "sum of the estimates", f"~{total:.0f}", "s (estimate)")]


def environment_line(cpu: bool) -> str:
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    if cpu:
        where = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    else:
        where = f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, CUDA {torch.version.cuda}"
    return f"# {where}; torch {torch.__version__}; load average {load}"


NO_CUDA = """gpu_check: no CUDA device is visible (torch {torch}: torch.cuda.is_available() is False;
CUDA_VISIBLE_DEVICES={visible!r}). This check measures a GPU and reports no numbers without
one. Run it on a machine with a CUDA device, or:
  bench/gpu_check.sh --cpu       the same code on the CPU at tiny sizes (CPU numbers)
  bench/gpu_check.sh --dry-run   the rows it would measure and their time estimates"""


def run_checks(args: argparse.Namespace, checks: list[str], counts: list[int]) -> list[Row]:
    import torch

    budget = Budget(args.budget_s)
    cards = 0 if args.cpu else torch.cuda.device_count()
    if args.cpu:
        torch.set_num_threads(1)  # as each job of the concurrency rows
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="xaipipe-gpu-check-") as tmp:
        work = Path(tmp)
        os.environ["XAIPIPE_LOCK_DIR"] = str(work / "locks")  # measure the card, not other jobs' locks
        # most telling first: a later check that no longer fits the budget is skipped
        steps = [
            ("lock", lambda: lock_rows(work, args.cpu, budget)),
            ("dag", lambda: dag_rows(work, args.cpu, budget, cards)),
            ("throughput", lambda: throughput_rows(args.cpu, budget, compiled=False)),
            ("concurrency", lambda: concurrency_rows(work, args.cpu, budget, counts)),
            ("road", lambda: road_rows(args.cpu, budget)),
            ("throughput", lambda: throughput_rows(args.cpu, budget, compiled=True)),
        ]
        for check, step in steps:
            if check not in checks:
                continue
            try:
                rows += step()
            except KeyboardInterrupt:  # gpu_check.sh's time limit: print what was measured
                rows.append(Row("(interrupted)", "the time limit of gpu_check.sh", "-", "-", False))
                break
            except Exception as exc:  # one broken check must not hide the others' rows
                progress(f"{check} failed:\n{traceback.format_exc()}", budget)
                rows.append(Row(check, f"raised {type(exc).__name__}: {exc}"[:120], "FAIL", "error", False))
    rows.append(Row("total", "wall time of this check", f"{budget.seconds - budget.left():.0f}", "s"))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/gpu_check.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true",
                        help="run on the CPU at tiny sizes (fake device count for the lock)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--only", default=",".join(CHECKS),
                        help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--jobs", default="1,2,4", help="concurrent job counts (default 1,2,4)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="skip checks that would not finish within this many seconds")
    sub = parser.add_subparsers(dest="child", help=argparse.SUPPRESS)
    hold = sub.add_parser("hold")
    hold.add_argument("--report", required=True)
    hold.add_argument("--started", required=True)
    hold.add_argument("--release", required=True)
    hold.add_argument("--jobs-per-device", type=int, required=True)
    hold.add_argument("--wait-s", type=float, required=True)
    hold.add_argument("--cpu", action="store_true")
    job = sub.add_parser("train-job")
    for name in ("--jobs-per-device", "--images", "--size", "--batch", "--epochs"):
        job.add_argument(name, type=int, required=True)
    for name in ("--ready", "--go", "--report"):
        job.add_argument(name, required=True)
    job.add_argument("--cpu", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))  # xaipipe, installed or not
    args = build_parser().parse_args(argv)
    if args.child == "hold":
        return hold_main(args)
    if args.child == "train-job":
        return train_job_main(args)
    os.environ["TQDM_DISABLE"] = "1"  # progress bars of the training loop, here and in children
    checks = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        build_parser().error(f"--only: unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    counts = [int(n) for n in args.jobs.split(",")]
    if args.dry_run:
        print(f"# plan ({'CPU smoke run' if args.cpu else 'GPU'}), budget {args.budget_s:.0f} s; nothing run")
        print(table(plan_rows(args.cpu, checks, counts)))
        return 0
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__, visible=os.environ.get("CUDA_VISIBLE_DEVICES")),
              file=sys.stderr)
        return 2
    rows = run_checks(args, checks, counts)
    print(environment_line(args.cpu))
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
