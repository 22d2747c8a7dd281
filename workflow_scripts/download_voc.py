"""Stage download_voc: make PASCAL VOC 2012 available as a VOCdevkit and write its manifest.

Downloads the official trainval tar (dataset.url, ~2 GB) into results/downloads/, resuming
an interrupted download, verifies dataset.md5, extracts it once into
results/data/voc2012/VOCdevkit and writes results/data/voc2012/manifest.json last.
With dataset.voc_root set, only checks that directory and writes the manifest.

    python workflow_scripts/download_voc.py --config config.yaml
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.data.download import prepare_voc


def main(args, config):
    prepare_voc(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
