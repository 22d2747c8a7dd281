#!/usr/bin/env bash
# GPU check, one table: training images/s at 224 px (fp32 / AMP / channels_last /
# torch.compile, batch 64 and 256), 1, 2 and 4 concurrent jobs on one card, every stage of the
# tiny DAG (config/ci.yaml) on CUDA, the device lock with two processes, and ROAD's
# imputation at 224 px: the exact solve (CPU) against the iterative solver on the card.
# Under 8 minutes on one H200 (estimates in bench/_gpu_check.py); the hard limit below stops it
# at 8 minutes and it still prints the rows it measured.
#
#   bench/gpu_check.sh              # needs a CUDA device; says so and exits 2 without one
#   bench/gpu_check.sh --cpu        # the same code on the CPU at tiny sizes (CPU numbers)
#   bench/gpu_check.sh --dry-run    # the rows it would measure, nothing run
#   bench/gpu_check.sh --help       # all options (--only, --jobs, --budget-s)
#
# Python: $PYTHON, else the repository's .venv, else python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [ ! -x "$PYTHON" ]; then PYTHON=python3; fi
exec timeout --signal=INT --kill-after=20 480 "$PYTHON" bench/_gpu_check.py "$@"
