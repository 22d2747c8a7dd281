"""index stage: label, split and foreground fraction of every segmentation image.

Reads ``paths.dataset_root(config)`` (real VOC 2012 or the synthetic VOC-format dataset) and
writes ``paths.index_table`` (parquet) and ``paths.index_log`` (JSON counts)."""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.data.index import write_index


def build_parser():
    return stage_parser(__doc__)


def main(args, config):
    write_index(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, build_parser()))
