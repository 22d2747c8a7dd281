"""Attribution localisation against the ground-truth masks (energy in mask, pointing game,
chance level) and the model's background reliance, for one variant:
results/evaluate/metrics/<variant>/localisation.csv (see xaipipe.evaluate.localisation).

    python workflow_scripts/localisation.py --config config.yaml [config/demo.yaml] --variant black
"""

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.data.variants import VARIANTS
from xaipipe.evaluate.localisation import run_localisation


def main(args, config):
    run_localisation(config, args.variant)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--variant", required=True, choices=VARIANTS,
                        help="training variant (paper section IV)")
    sys.exit(run_stage(main, parser))
