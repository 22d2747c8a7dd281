"""Train the classifier (model.arch) of one variant: model.pt, metrics.json, history.csv, learning_curve.png
under results/models/<variant>/ (see xaipipe.train_stage).

    python workflow_scripts/train.py --config config.yaml [config/demo.yaml] --variant black
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_replicate_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.train_stage import run_train_stage


def main(args, config):
    run_train_stage(config, args.variant, replicate=args.replicate)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_replicate_argument(parser)
    sys.exit(run_stage(main, parser))
