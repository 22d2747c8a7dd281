"""Attribution localisation against the ground-truth masks (energy in mask, pointing game,
chance level) and the model's background reliance, for one variant:
results/evaluate/metrics/<variant>/localisation.csv (see xaipipe.evaluate.localisation).

    python workflow_scripts/localisation.py --config config.yaml [config/demo.yaml] --variant black
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_replicate_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.evaluate.localisation import run_localisation


def main(args, config):
    run_localisation(config, args.variant, replicate=args.replicate)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_replicate_argument(parser)
    sys.exit(run_stage(main, parser))
