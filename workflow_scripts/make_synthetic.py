"""Stage make_synthetic: generate the synthetic dataset in PASCAL VOC 2012 on-disk format.

Writes results/data/synthetic/VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png,
ImageSets/Segmentation/{train,val,trainval}.txt} (atomically: all or nothing), then
results/data/synthetic/manifest.json with the settings and per-image ground truth (label,
background texture, drawn objects). Needs dataset.name: synthetic; sizes, class count and
the background/class correlation come from the config's synthetic section. Same seed, same
bytes.

    python workflow_scripts/make_synthetic.py --config config.yaml config/demo.yaml
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.data.synthetic import make_synthetic


def main(args, config):
    make_synthetic(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
