"""Sanity checks (Adebayo et al. 2018) of one variant's model: cascading parameter
randomisation and the random-label model, into results/explain/<variant>/sanity/
(sanity.csv, cascade_<method>.png, saliency.png; see xaipipe.explain.sanity).

    python workflow_scripts/sanity.py --config config.yaml [config/demo.yaml] --variant black
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_replicate_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.explain.sanity import run_sanity_stage


def main(args, config):
    run_sanity_stage(config, args.variant, replicate=args.replicate)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_replicate_argument(parser)
    sys.exit(run_stage(main, parser))
