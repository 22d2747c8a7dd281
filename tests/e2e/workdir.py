"""A fresh, disposable copy of the repository per end-to-end test.

Snakemake locks its working directory and DVC needs its own git repository, so every
workflow test runs in a copy: the files git would commit (tracked plus untracked, not
ignored), without results/ or .venv/. The copy's commands use the repository's
virtualenv through PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def copy_repo(dest: Path) -> Path:
    """Copy the committed-or-committable files of the repository to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def env() -> dict:
    """Environment for workflow commands: the venv first on PATH, no DVC analytics, one
    torch thread per job (2 shared cores), pretend-no-GPU devices."""
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
             XAIPIPE_FAKE_CUDA_COUNT="0", PYTHONUNBUFFERED="1")
    return e


def run(args: list[str], cwd: Path, timeout: int = 300, check: bool = True,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in ``cwd``; on failure the assertion shows its output."""
    proc = subprocess.run(args, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def warm(command: list[str]) -> list[str]:
    """``command`` run under the warm fork server (xaipipe/forkserver.py): the jobs skip the
    3-4 s of imports each, as in ``make demo``. The tests of the plain start-up path run
    without it (the audited run, the SLURM slice)."""
    return [str(VENV_BIN / "python"), "-m", "xaipipe.forkserver", "run", "--", *command]


def snakemake(args: list[str], cwd: Path, *, warm_start: bool = False,
              **kw) -> subprocess.CompletedProcess:
    command = [str(VENV_BIN / "snakemake"), *args]
    return run(warm(command) if warm_start else command, cwd, **kw)


def missing_scripts(stage_names) -> list[str]:
    """Stage scripts not yet present in workflow_scripts/."""
    return [n for n in stage_names if not (REPO / "workflow_scripts" / f"{n}.py").is_file()]


def stub_scripts(dest: Path, stage_names) -> None:
    """Give every missing stage script a placeholder, so a dry run (which only needs the
    files to exist, being rule inputs) can plan the whole DAG."""
    for name in stage_names:
        script = dest / "workflow_scripts" / f"{name}.py"
        if not script.exists():
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text("raise SystemExit('placeholder for a dry run')\n")


def fake_scripts(dest: Path, stage_names) -> None:
    """Replace every stage script of the copy by tests/e2e/fake_stage.py (same arguments)."""
    fake = Path(__file__).with_name("fake_stage.py")
    for name in stage_names:
        script = dest / "workflow_scripts" / f"{name}.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f"import runpy, sys\nsys.argv = [sys.argv[0], {name!r}, *sys.argv[1:]]\n"
                          f"runpy.run_path({str(fake)!r}, run_name='__main__')\n")
