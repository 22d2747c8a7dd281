"""The benchmarks stay runnable: every bench script imports and answers --help, and
``python -m bench`` (what ``make bench`` runs) lists them. Timing itself is never tested."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_imports_and_explains_itself(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "bench" / f"{name}.py"), run_name="__main__")
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_python_m_bench_lists_every_script():
    out = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == SCRIPTS and len(out) >= 7
