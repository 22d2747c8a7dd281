# xaipipe workflow: every rule runs `python workflow_scripts/<stage>.py --config <files>`.
# The rules in rules/*.smk are written from the stage table in xaipipe/pipeline.py (the same
# table dvc.yaml is generated from), so both runners run the same commands on the same files.
# How to run: docs/orchestration.md.
from snakemake.utils import min_version, validate

from xaipipe import pipeline, registry
from xaipipe.config import SCHEMA_PATH, validate_config

min_version("9.0")


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
    replicate=r"\d+",


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
        # every output of every job of the stages active under this config
        pipeline.all_targets(config),
