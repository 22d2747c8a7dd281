"""Train the reference judge for feature-visualisation recognisability: a second `standard`
model (model.arch) with seed + 1, written to results/models/standard_reference/{model.pt,metrics.json}
(see xaipipe.evaluate.featvis_metrics.run_train_reference).

    python workflow_scripts/train_reference.py --config config.yaml [config/demo.yaml]
"""

from xaipipe.forkserver import hand_off; hand_off(__file__)  # warm start (docs/orchestration.md)

import sys

from xaipipe.cli import run_stage, stage_parser
from xaipipe.evaluate.featvis_metrics import run_train_reference


def main(args, config):
    run_train_reference(config)


if __name__ == "__main__":
    sys.exit(run_stage(main, stage_parser(__doc__)))
