"""roar_summary stage: aggregate every ROAR/KAR run (and ROAD curve) of the configured grid.

Writes the directory ``paths.roar_summary_dir(config)`` atomically: accuracy table over
seeds, curves per variant, area-vs-random scores, ROAD table, ROAR-vs-ROAD agreement and a
short verdict per variant (``summary.md``)."""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.evaluate.roar_summary import write_summary


def main(args, config):
    write_summary(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
