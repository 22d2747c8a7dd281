"""SCG / CCG confidence gain of every explain method (and every pair's agreement mask) of one
variant on its val images: results/evaluate/metrics/<variant>/confidence_gain.csv
(see xaipipe.evaluate.confidence_gain and docs/metrics.md).

    python workflow_scripts/confidence_gain.py --config config.yaml [config/demo.yaml] --variant black
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_replicate_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.evaluate.confidence_gain import run_confidence_gain


def main(args, config):
    run_confidence_gain(config, args.variant, replicate=args.replicate)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_replicate_argument(parser)
    sys.exit(run_stage(main, parser))
