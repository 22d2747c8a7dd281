"""SCG/CCG, energy in mask and pointing game of the oracle maps (oracle_object,
oracle_background) and random on one validation variant's model:
results/evaluate/metrics/<variant>/metric_validation.csv
(see xaipipe.evaluate.metric_validation and docs/metrics.md, "Metric validation").

    python workflow_scripts/metric_validation.py --config config.yaml [config/demo.yaml] --variant black
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_replicate_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.evaluate.metric_validation import run_metric_validation


def main(args, config):
    run_metric_validation(config, args.variant, replicate=args.replicate)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_replicate_argument(parser)
    sys.exit(run_stage(main, parser))
