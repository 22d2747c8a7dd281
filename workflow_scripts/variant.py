"""variant stage: materialise one training variant (paper section IV) as a tensor store.

Writes ``paths.variant_dir(config, variant)`` (splits train, val, val_matched) and then
``paths.variant_summary(config, variant)``, whose presence marks the variant complete."""

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.data.variants import VARIANTS, materialise_variants


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--variant", nargs="+", required=True, choices=VARIANTS,
                        help="variant(s) to write; several share one decode/resize pass")
    return parser


def main(args, config):
    materialise_variants(config, args.variant)


if __name__ == "__main__":
    sys.exit(run_stage(main, build_parser()))
