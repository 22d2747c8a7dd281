"""Stage ``featvis``: activation-maximisation feature visualisations of one variant's model.

    python workflow_scripts/featvis.py --config config.yaml [overlay.yaml ...] --variant black

Reads the model (``paths.model_weights``) and the variant store's ``val`` split; writes
``paths.featvis_dir`` (one PNG per class, ``featvis.npy``, ``summary.json``,
``top_images.png``). See docs/featvis-undesirable.md.
"""

from __future__ import annotations

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import add_replicate_argument, add_variant_argument, run_stage, stage_parser
from xaipipe.explain.featvis import run_featvis_stage


def build_parser():
    parser = stage_parser(__doc__)
    add_variant_argument(parser)
    add_replicate_argument(parser)
    return parser


def main(args, config) -> None:
    run_featvis_stage(config, args.variant, replicate=args.replicate)


if __name__ == "__main__":
    sys.exit(run_stage(main, build_parser()))
