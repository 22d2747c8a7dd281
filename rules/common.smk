# Helpers that turn a stage of xaipipe/pipeline.py into the directives of its rule.
import os


def _configfiles():
    """The config files in use, in merge order: config.yaml, then each --configfile
    (Snakemake merges CLI files over the configfile directive; the scripts get the same
    order). Paths inside the working directory are made relative, as in dvc.yaml."""
    files = []
    for path in ["config.yaml", *workflow.overwrite_configfiles]:
        path = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
        if path not in files:
            files.append(path)
    return files


CONFIGFILES = _configfiles()


def stage_inputs(name):
    return pipeline.snakemake_inputs(pipeline.STAGES[name], config)


def stage_outputs(name):
    """Output patterns; directories wrapped in directory(), figures/tables in report()."""
    stage = pipeline.STAGES[name]
    outputs = pipeline.snakemake_outputs(stage, config)
    for key in stage.dir_outputs & outputs.keys():
        outputs[key] = directory(outputs[key])
    for key in set(stage.report) & outputs.keys():
        # a directory contributes its figures and tables, one report entry per file
        patterns = ["{name}.png", "{name}.csv"] if key in stage.dir_outputs else []
        outputs[key] = report(outputs[key], category=stage.group, subcategory=stage.name,
                              patterns=patterns)
    return outputs


def stage_params(name):
    stage = pipeline.STAGES[name]
    return lambda wildcards: pipeline.params_slice(stage, config, **dict(wildcards.items()))


def stage_log(name, base=pipeline.LOG_DIR, ext="log"):
    stage = pipeline.STAGES[name]
    return str(pipeline.log_path(config, stage, ext, base, **pipeline.snakemake_wildcards(stage)))


def stage_benchmark(name):
    return stage_log(name, base=pipeline.BENCHMARK_DIR, ext="tsv")


def stage_resources(name):
    stage = pipeline.STAGES[name]
    resources = {"mem_mb": stage.mem_mb, "runtime": stage.runtime}
    if stage.gpu:
        resources["gpu"] = 1
    return resources


def stage_threads(name):
    return pipeline.STAGES[name].threads


def stage_priority(name):
    return pipeline.STAGES[name].priority


def stage_shell(name):
    stage = pipeline.STAGES[name]
    wildcards = {w: "{wildcards.%s}" % w for w in stage.wildcards}
    # --threads: torch uses the cores Snakemake gave the job (dvc.yaml passes the rule's
    # threads, so both runners compute with the same thread count).
    return pipeline.shell_command(stage, CONFIGFILES, "{threads}", **wildcards) + " > {log} 2>&1"


def pipeline_targets():
    """Every output of every job of the active stages."""
    targets = []
    for name in pipeline.active_stage_names(config):
        stage = pipeline.STAGES[name]
        for wildcards in pipeline.jobs(stage, config):
            for value in stage.outputs(config, **wildcards).values():
                targets += [str(p) for p in (value if isinstance(value, list) else [value])]
    return targets


def stage_rule(name):
    """Define the rule of stage ``name`` if the stage is in the DAG under this config
    (e.g. make_synthetic only for dataset.name: synthetic)."""
    if name not in pipeline.active_stage_names(config):
        return

    rule:
        name:
            name
        input:
            **stage_inputs(name),
        output:
            **stage_outputs(name),
        params:
            config_slice=stage_params(name),
        log:
            stage_log(name),
        benchmark:
            stage_benchmark(name)
        threads: stage_threads(name)
        priority: stage_priority(name)
        resources:
            **stage_resources(name),
        conda:
            f"../envs/{pipeline.STAGES[name].env}.yaml"
        shell:
            stage_shell(name)
