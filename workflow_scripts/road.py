"""road stage: ROAD (Rong et al. 2022) MoRF/LeRF curves of one trained variant model.

For every fraction in ``roar.fractions`` the ranked val pixels are removed and filled by
noisy linear imputation; no retraining. Writes ``paths.road_result(config, variant, method)``."""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe import paths
from xaipipe.cli import (add_method_argument, add_replicate_argument, add_variant_argument,
                         run_stage, stage_parser)
from xaipipe.device import claim_job_device
from xaipipe.evaluate.road import run_road
from xaipipe.io import write_json


def main(args, config):
    with claim_job_device(config) as device:
        result = run_road(config, args.variant, args.method, device, replicate=args.replicate)
    write_json(paths.road_result(config, args.variant, args.method, replicate=args.replicate),
               result)


def build_parser():
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_method_argument(parser)
    add_replicate_argument(parser)
    return parser


if __name__ == "__main__":
    sys.exit(run_stage(main, build_parser()))
