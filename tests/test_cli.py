"""The stage-script plumbing: a cancelled job (SIGTERM, as Snakemake cancels) unwinds and
leaves neither its output nor a temporary behind."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from xaipipe.cli import run_stage, stage_parser
from xaipipe.io import atomic_path

def main(args, config):
    with atomic_path(Path(args.where) / "out.txt") as tmp:
        tmp.write_text("half written")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

parser = stage_parser("test")
parser.add_argument("where")
sys.exit(run_stage(main, parser))
"""


def test_sigterm_unwinds_a_stage_without_partial_output(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "--config",
                           str(REPO / "config.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + 15, proc.stderr[-2000:]
    out = tmp_path / "out"
    assert out.is_dir() and list(out.iterdir()) == []  # no out.txt, no .out.txt.*.tmp
