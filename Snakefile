# xaipipe workflow: every rule runs `python workflow_scripts/<stage>.py --config <files>`.
# Stages, paths, config dependencies and resources come from xaipipe/pipeline.py (the same
# stage list dvc.yaml is generated from). How to run: docs/orchestration.md.
from snakemake.utils import validate

from xaipipe import pipeline, registry
from xaipipe.config import SCHEMA_PATH, validate_config


configfile: "config.yaml"


if workflow.config_settings.config:
    raise WorkflowError(
        "--config KEY=VALUE overrides are not supported: the stage scripts read the YAML "
        "files only, so they would not see the override. Put the values in a YAML overlay "
        "and pass it with --configfile config.yaml <overlay.yaml>."
    )

validate(config, schema=str(SCHEMA_PATH))
validate_config(config, source="snakemake config")  # cross-field checks, same defaults
pipeline.check_grid(config)


wildcard_constraints:
    variant="|".join(registry.variants(config)),
    method="|".join(registry.methods(config)),
    kind="roar|kar",
    fraction=r"[0-9.e+-]+",
    seed=r"\d+",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/explain.smk"
include: "rules/roar.smk"
include: "rules/metrics.smk"
include: "rules/report.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        pipeline_targets(),
