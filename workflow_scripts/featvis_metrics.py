"""Recognisability (by the other variants' models and the reference model) and
high-frequency share of every variant's class visualisations:
results/evaluate/featvis_metrics.csv (see xaipipe.evaluate.featvis_metrics).

    python workflow_scripts/featvis_metrics.py --config config.yaml [config/demo.yaml]
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.evaluate.featvis_metrics import run_featvis_metrics


def main(args, config):
    run_featvis_metrics(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
