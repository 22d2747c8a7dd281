"""Write the self-contained HTML report results/report/index.html from the aggregate tables
and the stages' figures (figures the report draws go to results/report/figures/); see
xaipipe.report.build.

    python workflow_scripts/report.py --config config.yaml [config/demo.yaml]
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.report.build import run_report


def main(args, config):
    run_report(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
