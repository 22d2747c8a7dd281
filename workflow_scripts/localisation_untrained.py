"""Energy in mask and pointing game of an untrained model's maps (model.arch; every
model-dependent explain method) on the unmodified val images: the baseline every variant's localisation is
read against. Writes results/evaluate/metrics/untrained/localisation.csv
(see xaipipe.evaluate.localisation.run_untrained_localisation and docs/metrics.md).

    python workflow_scripts/localisation_untrained.py --config config.yaml [config/demo.yaml]
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.evaluate.localisation import run_untrained_localisation


def main(args, config):
    run_untrained_localisation(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
