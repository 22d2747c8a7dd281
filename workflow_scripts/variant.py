"""variant stage: materialise one training variant (paper section IV) as a tensor store.

Writes ``paths.variant_dir(config, variant)`` (splits train, val, val_matched) and then
``paths.variant_summary(config, variant)``, whose presence marks the variant complete."""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_variant_argument, run_stage, stage_parser
from xaipipe.data.variants import materialise_variants


def build_parser():
    parser = stage_parser(__doc__)
    add_variant_argument(parser, many=True)  # several share one decode/resize pass
    return parser


def main(args, config):
    materialise_variants(config, args.variant)


if __name__ == "__main__":
    sys.exit(run_stage(main, build_parser()))
