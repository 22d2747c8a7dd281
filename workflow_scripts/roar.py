"""roar stage: one ROAR or KAR remove-and-retrain run (Hooker et al. 2019).

Reads the variant's train/val tensor store and the method's attribution maps of both splits,
replaces the top (ROAR) or all but the top (KAR) ``--fraction`` of each image's pixels by the
training-set channel mean, retrains a fresh model (model.arch) and writes
``paths.roar_result(config, kind, variant, method, fraction, seed)`` (JSON)."""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe import paths
from xaipipe.cli import add_method_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.device import claim_job_device
from xaipipe.evaluate.roar import KINDS, run_roar
from xaipipe.io import write_json


def main(args, config):
    with claim_job_device(config) as device:
        result = run_roar(config, args.kind, args.variant, args.method, args.fraction,
                          args.seed, device)
    write_json(paths.roar_result(config, args.kind, args.variant, args.method, args.fraction,
                                 args.seed), result)


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="roar removes the top fraction, kar keeps only it")
    add_variant_argument(parser)
    add_method_argument(parser)
    parser.add_argument("--fraction", required=True, type=float, help="fraction of pixels, e.g. 0.3")
    parser.add_argument("--seed", required=True, type=int,
                        help="retraining seed index (trains with config seed + this)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage(main, build_parser()))
