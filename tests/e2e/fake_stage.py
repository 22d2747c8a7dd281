"""A stand-in for any workflow script, for orchestration tests that must not train models.

``python fake_stage.py <stage> --config FILES [--variant V ...]`` loads the config the way a
real script does, creates the stage's declared outputs (a file with the job's identity, or a
directory holding one), and appends the job to ``<results>/fake_runs.log``. GPU stages also
record how many GPU jobs run at the same moment (``<results>/gpu_concurrency.log``), holding
for ``XAIPIPE_FAKE_GPU_SECONDS`` so overlaps can happen. ``XAIPIPE_FAKE_FAIL=<stage>`` makes
that stage fail after writing partial files (exit 1), like a crashing job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

from xaipipe import pipeline
from xaipipe.config import load_config


def main(argv: list[str]) -> int:
    stage = pipeline.STAGES[argv[0]]
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=0)
    for name in stage.wildcards:
        parser.add_argument(f"--{name}", required=True,
                            type=float if name == "fraction" else int if name in ("seed", "replicate")
                            else str)
    args = parser.parse_args(argv[1:])
    config = load_config(args.config)
    wildcards = {w: getattr(args, w) for w in stage.wildcards}
    results = Path(config["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    identity = f"{stage.name} {' '.join(f'{k}={v}' for k, v in wildcards.items())}".strip()
    with open(results / "fake_runs.log", "a") as log:
        log.write(identity + "\n")
    if stage.gpu:
        _hold_gpu(results)
    for name, outputs in pipeline.job_files(stage, config, wildcards).items():
        for path in outputs:
            if stage.outputs[name].directory:
                path.mkdir(parents=True, exist_ok=True)
                (path / "content.txt").write_text(identity + "\n")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(identity + "\n")
            if os.environ.get("XAIPIPE_FAKE_FAIL") == stage.name:
                print(f"injected failure in {identity}", file=sys.stderr)
                return 1
    return 0


def _hold_gpu(results: Path) -> None:
    running = results / "gpu_running"
    running.mkdir(exist_ok=True)
    marker = running / uuid.uuid4().hex
    marker.touch()
    try:
        with open(results / "gpu_concurrency.log", "a") as log:
            log.write(f"{len(list(running.iterdir()))}\n")
        time.sleep(float(os.environ.get("XAIPIPE_FAKE_GPU_SECONDS", "0")))
        with open(results / "gpu_concurrency.log", "a") as log:
            log.write(f"{len(list(running.iterdir()))}\n")
    finally:
        marker.unlink()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
