"""Join every stage's JSON/CSV into the report tables results/report/<name>.csv (Table I
reproduction, model quality, SCG/CCG, phi, metric validation, localisation, sanity,
ROAR/KAR/ROAD scores, featvis metrics, sources and run settings); see
xaipipe.report.aggregate. Missing optional inputs are "not available".

    python workflow_scripts/aggregate.py --config config.yaml [config/demo.yaml]
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.report.aggregate import run_aggregate


def main(args, config):
    run_aggregate(config, args.config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
