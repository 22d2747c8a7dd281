"""Attribution maps of one (variant, method): float16 N x H x W per split in explain.splits,
written to results/explain/<variant>/attributions/<method>_<split>.npy
(see xaipipe.explain.attribution).

    python workflow_scripts/attribute.py --config config.yaml [config/demo.yaml] --variant black --method gradcam
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import (add_method_argument, add_replicate_argument, add_variant_argument,
                         run_stage, stage_parser)
from xaipipe.explain.attribution import run_attribute_stage


def main(args, config):
    run_attribute_stage(config, args.variant, args.method, replicate=args.replicate)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_method_argument(parser)
    add_replicate_argument(parser)
    sys.exit(run_stage(main, parser))
