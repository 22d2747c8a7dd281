"""The stage list: one table that both runners are built from.

Every stage of the DAG (``DESIGN.md``) is a :class:`Stage`: the script it runs, its wildcard
arguments, its input and output paths (from :mod:`xaipipe.paths`), the config keys whose
values it depends on, and its compute needs. ``rules/*.smk`` turn each stage into a Snakemake
rule through :func:`snakemake_outputs`, :func:`snakemake_inputs`, :func:`shell_command` and
:func:`params_slice`; :func:`dvc_yaml` turns the same table into ``dvc.yaml``::

    python -m xaipipe.pipeline dvc --config config.yaml > dvc.yaml

``tests/test_workflow_dvc.py`` checks that the committed ``dvc.yaml`` is current and that
Snakemake's dry-run plans the same commands and outputs as DVC.

Path templates: a stage's path functions are called with :class:`Placeholder` wildcards, a
``str`` whose ``format()`` ignores the format spec and renders ``{name}`` (Snakemake) or
``${item.name}`` (DVC matrix). So ``f"fraction{fraction:g}"`` in :mod:`xaipipe.paths` becomes
``fraction{fraction}``, and one path function serves concrete runs and both templates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from xaipipe import paths
from xaipipe.config import load_config, validation_variants
from xaipipe.errors import ConfigError
from xaipipe.explain.oracle import ORACLE_METHODS
from xaipipe.io import write_text
from xaipipe.report.aggregate import TABLES as REPORT_TABLES

SCRIPTS_DIR = "workflow_scripts"
LOG_DIR = "logs"
BENCHMARK_DIR = "benchmarks"


class Placeholder(str):
    """A wildcard stand-in for path templates (see module docstring)."""

    def __new__(cls, name: str, template: str = "{{{name}}}"):
        obj = super().__new__(cls, template.format(name=name))
        obj.wildcard = name
        return obj

    def __format__(self, spec: str) -> str:
        return str(self)


PathMap = Mapping[str, "Path | list[Path]"]


@dataclass(frozen=True)
class Stage:
    """One DAG node.

    ``wildcards``: the script's wildcard arguments, in order (``--variant V`` ...).
    ``outputs`` / ``inputs``: ``(config, **wildcards) -> {name: path or list of paths}``.
    ``dir_outputs``: output names that are directories. ``params``: dotted config keys the
    results depend on (``{variant}`` is replaced by the wildcard); the merged values are the
    rule's ``params`` (Snakemake's params rerun trigger) and the stage's DVC ``params``.
    ``metrics`` / ``plots`` / ``report``: output names shown as DVC metrics, DVC plots and in
    Snakemake's HTML report. ``runtime`` is in minutes. ``threads``: the job's CPU cores,
    passed to the script as ``--threads`` (torch's thread count); GPU stages other than
    training take one, so CPU-only runs execute two of them side by side. ``priority``:
    Snakemake's rule priority; training goes first because it unblocks everything after it
    (otherwise a two-thread job waits until no one-thread job is left).
    """

    name: str
    group: str
    env: str
    wildcards: tuple[str, ...]
    outputs: Callable[..., PathMap]
    inputs: Callable[..., PathMap]
    params: tuple[str, ...]
    gpu: bool = False
    threads: int = 1
    priority: int = 0
    mem_mb: int = 4000
    runtime: int = 60
    dir_outputs: frozenset[str] = frozenset()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    report: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        return f"{SCRIPTS_DIR}/{self.name}.py"


# --- wildcard grids ----------------------------------------------------------------------

def store_variants(config: Mapping) -> list[str]:
    """Variants whose tensor store is built: the configured ones plus ``standard``, which the
    reference model of the feature-visualisation metrics trains on."""
    return list(config["variants"]) + [v for v in ("standard",) if v not in config["variants"]]


def attribution_methods(config: Mapping) -> list[str]:
    """Every method whose maps some stage reads: explain.methods plus roar.methods."""
    methods = list(config["explain"]["methods"])
    return methods + [m for m in config["roar"]["methods"] if m not in methods]


def roar_kinds(config: Mapping) -> list[str]:
    return ["roar", "kar"] if config["roar"]["kar"] else ["roar"]


def road_methods(config: Mapping) -> list[str]:
    return list(config["roar"]["methods"]) if config["roar"]["road"] else []


def _stage_methods(stage_name: str, config: Mapping) -> list[str]:
    if stage_name == "attribute":
        return attribution_methods(config)
    if stage_name == "road":
        return road_methods(config)
    return list(config["roar"]["methods"])


ORACLE_GRID = "oracle"
"""Name of the extra grid that runs the oracle methods on the validation variants only."""


def grids(stage: Stage, config: Mapping) -> dict[str, dict[str, list]]:
    """The wildcard grids of ``stage`` under ``config``: ``{"": main grid}`` plus, for the
    stages with a ``method`` wildcard, ``{"oracle": ...}``: the oracle methods (those not
    already in the method list) on the ``metric_validation`` variants only, so validating
    the metrics does not multiply the whole ROAR grid. Each grid maps a wildcard to its
    values (empty dict: one job); the jobs are the union of the grids' products."""
    methods = _stage_methods(stage.name, config)
    values = {
        "variant": (store_variants(config) if stage.name == "variant" else
                    validation_variants(config) if stage.name == "metric_validation" else
                    list(config["variants"])),
        "method": methods,
        "kind": roar_kinds(config),
        "fraction": list(config["roar"]["fractions"]),
        "seed": list(range(config["roar"]["seeds"])),
    }
    out = {"": {name: values[name] for name in stage.wildcards}}
    oracles = [m for m in ORACLE_METHODS if m not in methods]
    if "method" in stage.wildcards and methods and oracles and validation_variants(config):
        out[ORACLE_GRID] = {**{k: list(v) for k, v in out[""].items()},
                            "variant": validation_variants(config), "method": oracles}
    return out


def jobs(stage: Stage, config: Mapping) -> list[dict]:
    """All wildcard combinations of ``stage`` (one dict per job), over all its :func:`grids`."""
    if stage.name not in active_stage_names(config):
        return []
    return [dict(zip(axes, combo)) for axes in grids(stage, config).values()
            for combo in itertools.product(*axes.values())]


# --- inputs -------------------------------------------------------------------------------

def _store(config, variant) -> dict:
    return {"store": paths.variant_dir(config, variant),
            "store_done": paths.variant_summary(config, variant)}


def _model_and_store(config, variant, **_other_wildcards) -> dict:
    return {"model": paths.model_weights(config, variant), **_store(config, variant)}


def _val_maps(config, variant) -> dict:
    return {"maps": [paths.attribution_map(config, variant, m, "val")
                     for m in config["explain"]["methods"]]}


def _oracle_val_maps(config, variant) -> dict:
    """The maps the metric validation scores: the oracles and random, on val."""
    return {"maps": [paths.attribution_map(config, variant, m, "val")
                     for m in (*ORACLE_METHODS, "random")]}


def _aggregate_inputs(config) -> dict:
    """Every per-stage number the aggregate stage joins into the report tables."""
    variants = config["variants"]
    return {
        "metrics": [paths.model_metrics(config, v) for v in [*variants, paths.REFERENCE_MODEL]],
        "store_summaries": [paths.variant_summary(config, v) for v in variants],
        "undesirable": [paths.undesirable_dir(config, v) for v in variants],
        "sanity": [paths.sanity_dir(config, v) for v in variants],
        "confidence_gain": [paths.confidence_gain_table(config, v) for v in variants],
        "localisation": [paths.localisation_table(config, v) for v in variants],
        "untrained_localisation": paths.untrained_localisation_table(config),
        "roar_summary": paths.roar_summary_dir(config),
        "featvis_metrics": paths.featvis_metrics_table(config),
        "metric_validation": [paths.metric_validation_table(config, v)
                              for v in validation_variants(config)],
    }


def _report_inputs(config) -> dict:
    """The aggregate tables plus the figures and arrays the report draws from."""
    variants = config["variants"]
    return {
        "tables": [paths.report_table(config, name) for name in REPORT_TABLES],
        "index": paths.index_table(config),
        "curves": [paths.model_curve(config, v) for v in variants],
        "predictions": [paths.model_predictions(config, v) for v in variants],
        "featvis": [paths.featvis_dir(config, v) for v in variants],
        "maps": [paths.attribution_map(config, v, m, "val")
                 for v in variants for m in config["explain"]["methods"]],
        **{f"store_{v}": paths.variant_dir(config, v) for v in variants},
    }


def _all_jobs_outputs(config, stage_name: str) -> list[Path]:
    stage = STAGES[stage_name]
    return [p for wc in jobs(stage, config) for p in _flat(stage.outputs(config, **wc).values())]


def _flat(values: Iterable) -> list:
    out = []
    for v in values:
        out.extend(v if isinstance(v, list) else [v])
    return out


STAGE_LIST: tuple[Stage, ...] = (
    Stage("download_voc", "data", "data", (),
          outputs=lambda c: ({"manifest": paths.dataset_manifest(c)} if c["dataset"]["voc_root"]
                             else {"manifest": paths.dataset_manifest(c),
                                   "root": paths.dataset_root(c)}),
          inputs=lambda c: {}, params=("dataset.voc_root", "dataset.url", "dataset.md5"),
          dir_outputs=frozenset({"root"}), runtime=240),
    Stage("make_synthetic", "data", "data", (),
          outputs=lambda c: {"manifest": paths.dataset_manifest(c), "root": paths.dataset_root(c)},
          inputs=lambda c: {}, params=("seed", "synthetic"), dir_outputs=frozenset({"root"})),
    Stage("index", "data", "data", (),
          outputs=lambda c: {"table": paths.index_table(c), "log": paths.index_log(c)},
          inputs=lambda c: {"manifest": paths.dataset_manifest(c)},
          params=("dataset.name", "dataset.voc_root", "synthetic.num_classes",
                  "dataset.min_fg_fraction", "dataset.on_bad_file"), metrics=("log",)),
    Stage("variant", "data", "data", ("variant",),
          outputs=lambda c, variant: {"store": paths.variant_dir(c, variant),
                                      "summary": paths.variant_summary(c, variant)},
          inputs=lambda c, variant: {"index": paths.index_table(c)},
          params=("seed", "resolution", "dataset.resize", "dataset.on_bad_file", "variant"),
          dir_outputs=frozenset({"store"}), mem_mb=8000),
    Stage("train", "train", "torch", ("variant",),
          outputs=lambda c, variant: {"weights": paths.model_weights(c, variant),
                                      "metrics": paths.model_metrics(c, variant),
                                      "history": paths.model_history(c, variant),
                                      "curve": paths.model_curve(c, variant),
                                      "predictions": paths.model_predictions(c, variant)},
          inputs=lambda c, variant: _store(c, variant),
          params=("seed", "train", "train_overrides.{variant}"), gpu=True, threads=2, priority=1,
          mem_mb=16000, runtime=720, metrics=("metrics",), plots=("history", "curve"),
          report=("curve",)),
    Stage("train_reference", "train", "torch", (),
          outputs=lambda c: {"weights": paths.model_weights(c, paths.REFERENCE_MODEL),
                             "metrics": paths.model_metrics(c, paths.REFERENCE_MODEL),
                             "history": paths.model_history(c, paths.REFERENCE_MODEL),
                             "curve": paths.model_curve(c, paths.REFERENCE_MODEL),
                             "predictions": paths.model_predictions(c, paths.REFERENCE_MODEL)},
          inputs=lambda c: _store(c, "standard"),
          params=("seed", "train", "train_overrides.standard"), gpu=True, threads=2, priority=1,
          mem_mb=16000, runtime=720),
    Stage("attribute", "explain", "torch", ("variant", "method"),
          outputs=lambda c, variant, method: {
              "maps": [paths.attribution_map(c, variant, method, s) for s in c["explain"]["splits"]]},
          inputs=_model_and_store,
          params=("seed", "explain.channel_reduce", "explain.ig_steps",
                  "explain.noise_tunnel_samples", "explain.noise_tunnel_stdev",
                  "explain.occlusion_patch", "explain.target", "explain.cmwp_layer"),
          gpu=True, mem_mb=16000, runtime=240),
    Stage("featvis", "explain", "torch", ("variant",),
          outputs=lambda c, variant: {"dir": paths.featvis_dir(c, variant)},
          inputs=_model_and_store, params=("seed", "featvis"), gpu=True,
          mem_mb=8000, runtime=240, dir_outputs=frozenset({"dir"})),
    Stage("undesirable", "explain", "torch", ("variant",),
          outputs=lambda c, variant: {"dir": paths.undesirable_dir(c, variant)},
          inputs=_model_and_store, params=("seed", "undesirable"), gpu=True,
          mem_mb=8000, runtime=240, dir_outputs=frozenset({"dir"})),
    Stage("sanity", "explain", "torch", ("variant",),
          outputs=lambda c, variant: {"dir": paths.sanity_dir(c, variant)},
          inputs=_model_and_store,
          params=("seed", "sanity", "explain.channel_reduce", "explain.ig_steps",
                  "explain.noise_tunnel_samples", "explain.noise_tunnel_stdev", "explain.target"),
          gpu=True, mem_mb=8000, runtime=240, dir_outputs=frozenset({"dir"})),
    Stage("roar", "roar", "torch", ("kind", "variant", "method", "fraction", "seed"),
          outputs=lambda c, kind, variant, method, fraction, seed: {
              "result": paths.roar_result(c, kind, variant, method, fraction, seed)},
          inputs=lambda c, kind, variant, method, fraction, seed: {
              **_store(c, variant),
              "maps": [paths.attribution_map(c, variant, method, s)
                       for s in ("train", c["roar"]["eval_split"])]},
          params=("seed", "roar.epochs", "roar.eval_split", "roar.kar_fraction", "train",
                  "train_overrides.{variant}"),
          gpu=True, mem_mb=16000, runtime=720),
    Stage("road", "roar", "torch", ("variant", "method"),
          outputs=lambda c, variant, method: {"result": paths.road_result(c, variant, method)},
          inputs=lambda c, variant, method: {
              **_model_and_store(c, variant),
              "map": paths.attribution_map(c, variant, method, c["roar"]["eval_split"])},
          params=("seed", "roar.fractions", "roar.road_noise_std", "roar.eval_split"), gpu=True,
          mem_mb=8000, runtime=120),
    Stage("roar_summary", "roar", "data", (),
          outputs=lambda c: {"dir": paths.roar_summary_dir(c)},
          inputs=lambda c: {"roar": _all_jobs_outputs(c, "roar"),
                            "road": _all_jobs_outputs(c, "road")},
          params=("roar.methods", "roar.fractions", "roar.seeds", "roar.kar", "roar.road"),
          dir_outputs=frozenset({"dir"}), report=("dir",)),
    Stage("confidence_gain", "metrics", "torch", ("variant",),
          outputs=lambda c, variant: {"table": paths.confidence_gain_table(c, variant)},
          inputs=lambda c, variant: {**_model_and_store(c, variant), **_val_maps(c, variant)},
          params=("seed", "resolution", "confidence_gain", "explain.methods"), gpu=True,
          mem_mb=8000, runtime=240, report=("table",)),
    Stage("localisation", "metrics", "torch", ("variant",),
          outputs=lambda c, variant: {"table": paths.localisation_table(c, variant)},
          inputs=lambda c, variant: {**_model_and_store(c, variant), **_val_maps(c, variant)},
          params=("seed", "explain.methods", "localisation", "train.bg_only_fill",
                  "train_overrides.{variant}"), report=("table",)),
    Stage("localisation_untrained", "metrics", "torch", (),
          outputs=lambda c: {"table": paths.untrained_localisation_table(c)},
          inputs=lambda c: _store(c, "standard"),
          params=("seed", "explain", "localisation"), gpu=True, mem_mb=8000, runtime=240,
          report=("table",)),
    Stage("metric_validation", "metrics", "torch", ("variant",),
          outputs=lambda c, variant: {"table": paths.metric_validation_table(c, variant)},
          inputs=lambda c, variant: {**_model_and_store(c, variant),
                                     **_oracle_val_maps(c, variant)},
          params=("seed", "resolution", "confidence_gain", "localisation"), gpu=True,
          mem_mb=8000, runtime=240, report=("table",)),
    Stage("featvis_metrics", "metrics", "torch", (),
          outputs=lambda c: {"table": paths.featvis_metrics_table(c)},
          inputs=lambda c: {
              "featvis": [paths.featvis_dir(c, v) for v in c["variants"]],
              "models": [paths.model_weights(c, v) for v in c["variants"]],
              "reference": paths.model_weights(c, paths.REFERENCE_MODEL),
              **_store(c, c["variants"][0])},
          params=("variants", "featvis_metrics"), report=("table",)),
    Stage("aggregate", "report", "data", (),
          outputs=lambda c: {"tables": [paths.report_table(c, name) for name in REPORT_TABLES]},
          inputs=lambda c: _aggregate_inputs(c),
          params=("variants", "seed", "resolution", "dataset", "train.epochs", "train.pretrained",
                  "train_overrides", "roar", "metric_validation", "report.quality_alpha")),
    Stage("report", "report", "data", (),
          outputs=lambda c: {"html": paths.report_html(c), "figures": paths.report_figures_dir(c)},
          inputs=lambda c: _report_inputs(c),
          params=("seed", "resolution", "variants", "variant", "explain.methods", "report"),
          dir_outputs=frozenset({"figures"}), report=("html", "figures")),
)

STAGES: dict[str, Stage] = {s.name: s for s in STAGE_LIST}


def active_stage_names(config: Mapping) -> list[str]:
    """The stages in the DAG under ``config`` (the dataset picks its source stage; ROAD and
    KAR are switched by ``roar.road`` / ``roar.kar``, the metric validation by
    ``metric_validation.variants``)."""
    skip = {"make_synthetic" if config["dataset"]["name"] == "voc2012" else "download_voc"}
    if not config["roar"]["road"]:
        skip.add("road")
    if not validation_variants(config):
        skip.add("metric_validation")
    return [s.name for s in STAGE_LIST if s.name not in skip]


def check_grid(config: Mapping) -> None:
    """Cross-stage config checks the schema cannot express."""
    splits, eval_split = config["explain"]["splits"], config["roar"]["eval_split"]
    needed = ["val"] + (["train", eval_split] if config["roar"]["methods"] else [])
    missing = [s for s in dict.fromkeys(needed) if s not in splits]
    if missing:
        raise ConfigError(f"explain.splits must contain {', '.join(missing)}: SCG/CCG and "
                          "localisation read the val maps, ROAR/KAR retrain on the train maps "
                          f"of roar.methods and test on the {eval_split} maps "
                          f"(roar.eval_split); got {splits}")
    outside = [v for v in config["metric_validation"]["variants"] if v not in config["variants"]]
    if outside:
        raise ConfigError(f"metric_validation.variants lists {outside}, which are not in "
                          f"variants {config['variants']}: add them to variants or remove them "
                          "from metric_validation.variants ([] switches the validation off)")
    if validation_variants(config) and "random" not in attribution_methods(config):
        raise ConfigError("metric_validation compares the oracle maps with random: add random "
                          "to explain.methods (or set metric_validation.variants: [])")


# --- config slices (params) ------------------------------------------------------------------

_MISSING = object()


def _lookup(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def params_slice(stage: Stage, config: Mapping, **wildcards) -> str:
    """The merged config values ``stage`` depends on, as canonical JSON (the Snakemake rule's
    ``params``: a changed value reruns exactly the jobs whose slice changed)."""
    values = {}
    for key in stage.params:
        key = key.format(**wildcards)
        value = _lookup(config, key)
        values[key] = None if value is _MISSING else value
    return json.dumps(values, sort_keys=True)


# --- commands ---------------------------------------------------------------------------

def shell_command(stage: Stage, configfiles: Sequence[str], threads: int | str,
                  **wildcards) -> str:
    """``python workflow_scripts/<stage>.py --config FILES [--wildcard VALUE ...] --threads N``;
    wildcard values may be Placeholders (``{wildcards.variant}`` for Snakemake,
    ``${item.variant}`` for DVC), ``threads`` Snakemake's ``{threads}``.

    Both runners pass the thread count: CPU training is deterministic for a fixed torch thread
    count only (1 vs 2 threads moved ResNet18 weights by up to 1.8e-6 after one epoch, which
    shifted SCG in the third decimal), so DVC's ``--threads`` is the rule's ``threads``, what
    Snakemake gives the job when it has that many cores."""
    args = [f"python {stage.script}", "--config", *configfiles]
    for name in stage.wildcards:
        args += [f"--{name}", str(wildcards[name])]
    return " ".join(args + ["--threads", str(threads)])


def log_path(config: Mapping, stage: Stage, ext: str, base: str, **wildcards) -> Path:
    """``results/<logs|benchmarks>/<stage>/<wildcard values joined by _>.<ext>``."""
    stem = "_".join(str(wildcards[w]) for w in stage.wildcards) or stage.name
    return paths.results(config) / base / stage.name / f"{stem}.{ext}"


def snakemake_wildcards(stage: Stage) -> dict[str, Placeholder]:
    return {w: Placeholder(w) for w in stage.wildcards}


def snakemake_outputs(stage: Stage, config: Mapping) -> dict[str, Any]:
    """Output patterns (``{variant}`` wildcards) with directories/report items marked by
    the caller-supplied Snakemake wrappers (see ``rules/common.smk``)."""
    return {k: [str(p) for p in v] if isinstance(v, list) else str(v)
            for k, v in stage.outputs(config, **snakemake_wildcards(stage)).items()}


def snakemake_inputs(stage: Stage, config: Mapping) -> dict[str, Any]:
    ins = stage.inputs(config, **snakemake_wildcards(stage))
    ins = {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in ins.items()}
    ins["script"] = stage.script
    return ins


# --- dvc.yaml -----------------------------------------------------------------------------

def _dvc_params(stage: Stage, configfiles: Sequence[str]) -> list:
    """Per config file, the keys DVC should track: each of the stage's keys if the file
    sets it, else its nearest ancestor the file sets (over-tracking is safe; a key no file
    sets takes the schema default, which DVC cannot see -- see docs/orchestration.md)."""
    out = []
    for path in configfiles:
        data = yaml.safe_load(Path(path).read_text()) or {}
        keys: list[str] = []
        for key in stage.params:
            key = key.split(".{")[0]  # per-variant keys are tracked as their section
            parts = key.split(".")
            for depth in range(len(parts), 0, -1):
                candidate = ".".join(parts[:depth])
                if _lookup(data, candidate) is not _MISSING:
                    if candidate not in keys:
                        keys.append(candidate)
                    break
        keys = [k for k in keys if not any(k.startswith(other + ".") for other in keys)]
        if keys:
            out.append({path: keys})
    return out


def _dvc_stage(stage: Stage, config: Mapping, configfiles: Sequence[str],
               matrix: Mapping[str, list], wdir: str | None = None) -> dict:
    wc = {w: Placeholder(w, "${{item.{name}}}") for w in stage.wildcards}
    outs = stage.outputs(config, **wc)
    ins = stage.inputs(config, **wc)
    entry: dict[str, Any] = {"wdir": wdir} if wdir else {}
    if stage.wildcards:
        entry["matrix"] = dict(matrix)
    entry["cmd"] = shell_command(stage, configfiles, stage.threads, **wc)
    entry["deps"] = [stage.script] + [str(p) for p in _flat(ins.values())]
    params = _dvc_params(stage, configfiles)
    if params:
        entry["params"] = params
    sections: dict[str, list] = {"outs": [], "metrics": [], "plots": []}
    for name, value in outs.items():
        section = "metrics" if name in stage.metrics else "plots" if name in stage.plots else "outs"
        sections[section] += [str(p) for p in (value if isinstance(value, list) else [value])]
    entry.update({k: v for k, v in sections.items() if v})
    return entry


def dvc_yaml(configfiles: Sequence[str], wdir: str | None = None) -> str:
    """``dvc.yaml`` for the merged ``configfiles``: every active stage, wildcards as a
    ``matrix``, the same command line as the Snakemake rule (without log redirection). A
    stage with several :func:`grids` (a DVC matrix is one product) becomes one DVC stage per
    grid, ``<stage>_<grid>`` after the first, all running the same script. ``wdir`` (the
    repository root, relative to where the file will live) is set on every stage when the
    file is not written at the root."""
    config = load_config(configfiles)
    check_grid(config)
    stages = {}
    for name in active_stage_names(config):
        for suffix, matrix in grids(STAGES[name], config).items():
            stages[f"{name}_{suffix}" if suffix else name] = _dvc_stage(
                STAGES[name], config, configfiles, matrix, wdir)
    command = "python -m xaipipe.pipeline dvc --config " + " ".join(configfiles)
    header = ("# Generated by `" + command + (" --out <this directory>`" if wdir else " > dvc.yaml`")
              + " from the stage list in\n"
              "# xaipipe/pipeline.py (the same one rules/*.smk use). Do not edit by hand;\n"
              "# tests/test_workflow_dvc.py fails when the committed dvc.yaml is out of date.\n")
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=100)


DESCRIPTION = """Print dvc.yaml generated from the stage list, or write it for a preset.

  python -m xaipipe.pipeline dvc --config config.yaml > dvc.yaml      # the committed file
  python -m xaipipe.pipeline dvc --config config.yaml config/demo.yaml --out config/dvc/demo
  dvc repro config/dvc/demo/dvc.yaml                                   # run the preset

With --out the file goes to DIR/dvc.yaml (its dvc.lock beside it), every stage runs in the
repository root (wdir), and DIR/results_dir.yaml, merged last, sends the preset's outputs to
<results_dir>/<name of DIR>: DVC refuses two dvc.yaml files that declare the same output, so
the preset must not write where the committed dvc.yaml does. DIR must not be git-ignored
(DVC refuses such files; results/ is). Run the commands from the repository root, and give
`dvc repro` the file: without a target DVC reproduces every dvc.yaml in the repository."""


def write_preset(configfiles: Sequence[str], out: Path) -> Path:
    """Write ``out/dvc.yaml`` and ``out/results_dir.yaml`` (see :data:`DESCRIPTION`)."""
    results_dir = f"{load_config(configfiles)['results_dir']}/{out.resolve().name}"
    overlay = out / "results_dir.yaml"
    write_text(overlay, "# Generated with dvc.yaml beside it: this preset's outputs stay apart "
               "from the committed dvc.yaml's.\n" + yaml.safe_dump({"results_dir": results_dir}))
    files = [*configfiles, os.path.relpath(overlay)]
    write_text(out / "dvc.yaml", dvc_yaml(files, wdir=os.path.relpath(".", out)))
    print(f"wrote {out / 'dvc.yaml'} (outputs under {results_dir}/); "
          f"run: dvc repro {out / 'dvc.yaml'}")
    return out / "dvc.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["dvc"])
    parser.add_argument("--config", nargs="+", default=["config.yaml"], metavar="YAML",
                        help="config files, merged in order (as --configfile)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/dvc.yaml instead of printing")
    args = parser.parse_args(argv)
    try:
        if args.out is None:
            sys.stdout.write(dvc_yaml(args.config))
        else:
            write_preset(args.config, Path(args.out))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
