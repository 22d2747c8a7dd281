"""The stage table: one declaration of the DAG that both runners are built from.

Every stage of the DAG (``DESIGN.md``) is a :class:`Stage`: the script it runs, the grid of
its wildcards, its inputs and outputs as path templates of :mod:`xaipipe.paths`, the config
keys whose values it depends on, and its compute needs. Two generators turn the table into
the files the runners read, and tests fail when either is out of date:

* :mod:`xaipipe.rulegen` writes ``rules/*.smk``, one readable Snakemake rule per stage
  (input, output, params, log, benchmark, threads, resources, conda and shell in place);
* :mod:`xaipipe.dvcgen` writes ``dvc.yaml``, the same commands as DVC matrix stages, with the
  library modules each script imports as dependencies.

::

    python -m xaipipe.pipeline rules                      # rewrite rules/*.smk
    python -m xaipipe.pipeline dvc --config config.yaml > dvc.yaml

A declared file (:class:`Files`) is a template plus the values of its fields: a literal, or a
:class:`Value` computed from the config (one value, or a list that the rule file spells as
Snakemake's ``expand()``). Every other ``{name}`` of the template is one of the stage's
wildcards. The same declaration gives the concrete paths of a job (:func:`job_files`), the
rule file's text and the DVC template, and ``xaipipe.io_audit`` checks it against what each
stage really reads and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from xaipipe import paths
from xaipipe.config import validation_variants
from xaipipe.errors import ConfigError
from xaipipe.explain.oracle import ORACLE_METHODS
from xaipipe.report.tables import TABLES as REPORT_TABLES

SCRIPTS_DIR = "workflow_scripts"


class Placeholder(str):
    """A wildcard stand-in for rendering templates: ``format()`` ignores the format spec
    (``{fraction:g}`` renders as the placeholder) and the text is ``template`` filled with the
    wildcard's name (``{name}`` for Snakemake, ``${item.name}`` for a DVC matrix)."""

    def __new__(cls, name: str, template: str = "{{{name}}}"):
        obj = super().__new__(cls, template.format(name=name))
        obj.wildcard = name
        return obj

    def __format__(self, spec: str) -> str:
        return str(self)


# --- config-derived values ---------------------------------------------------------------

_MISSING = object()


def _lookup(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class Value:
    """A value the stage table takes from the config: ``source`` is how the rule files spell
    it (they run with ``config`` and the functions of this module in scope), ``of`` computes
    it. Build one with :func:`key` or :func:`derived`, never by hand, so the two agree."""

    source: str
    of: Callable[[Mapping], Any]


def key(dotted: str) -> Value:
    """The config value at ``dotted`` (``"roar.fractions"`` -> ``config["roar"]["fractions"]``)."""
    return Value(source="config" + "".join(f'["{part}"]' for part in dotted.split(".")),
                 of=lambda config: _lookup(config, dotted))


def derived(function: Callable[[Mapping], Any]) -> Value:
    """``function(config)``: a module-level function of this module (or of
    :mod:`xaipipe.paths`), importable by the rule files under its own name."""
    return Value(source=f"{function.__name__}(config)", of=function)


def store_variants(config: Mapping) -> list[str]:
    """Variants whose tensor store is built: the configured ones plus ``standard``, which the
    reference model of the feature-visualisation metrics trains on."""
    return list(config["variants"]) + [v for v in ("standard",) if v not in config["variants"]]


def attribution_methods(config: Mapping) -> list[str]:
    """Every method whose maps some stage reads: explain.methods plus roar.methods."""
    methods = list(config["explain"]["methods"])
    return methods + [m for m in config["roar"]["methods"] if m not in methods]


def replicate_ids(config: Mapping) -> list[int]:
    """Replicate indices ``0 .. replicates - 1``: the independently seeded models per variant."""
    return list(range(config["replicates"]))


def roar_kinds(config: Mapping) -> list[str]:
    """``roar``, plus ``kar`` when ``roar.kar`` is on."""
    return ["roar", "kar"] if config["roar"]["kar"] else ["roar"]


def roar_seeds(config: Mapping) -> list[int]:
    """Retraining seed indices ``0 .. roar.seeds - 1``; seed ``s`` removes by the maps of
    replicate ``s`` (so the ROAR grid does not grow with the replicates)."""
    return list(range(config["roar"]["seeds"]))


def roar_map_splits(config: Mapping) -> list[str]:
    """The map splits a remove-and-retrain run reads: ``train`` and ``roar.eval_split``."""
    return list(dict.fromkeys(["train", config["roar"]["eval_split"]]))


def road_methods(config: Mapping) -> list[str]:
    """roar.methods when ``roar.road`` is on, else none."""
    return list(config["roar"]["methods"]) if config["roar"]["road"] else []


def _oracles(config: Mapping, methods: Sequence[str]) -> list[str]:
    """The oracle methods not already in ``methods``; none without validation variants or
    without a main grid to validate."""
    if not methods or not validation_variants(config):
        return []
    return [m for m in ORACLE_METHODS if m not in methods]


def attribution_oracles(config: Mapping) -> list[str]:
    """Oracle maps computed beside :func:`attribution_methods` for the metric validation."""
    return _oracles(config, attribution_methods(config))


def roar_oracles(config: Mapping) -> list[str]:
    """Oracle maps removed-and-retrained beside roar.methods (validation variants only)."""
    return _oracles(config, config["roar"]["methods"])


def road_oracles(config: Mapping) -> list[str]:
    """Oracle maps evaluated by ROAD beside :func:`road_methods` (validation variants only)."""
    return _oracles(config, road_methods(config))


def first_variant(config: Mapping) -> str:
    """The first configured variant (whose store gives the class names)."""
    return config["variants"][0]


def downloads_voc(config: Mapping) -> bool:
    """True when download_voc fetches and extracts VOC itself (no ``dataset.voc_root``)."""
    return not config["dataset"]["voc_root"]


def uses_voc(config: Mapping) -> bool:
    return config["dataset"]["name"] == "voc2012"


def uses_synthetic(config: Mapping) -> bool:
    return config["dataset"]["name"] == "synthetic"


def runs_road(config: Mapping) -> bool:
    return bool(config["roar"]["road"])


def validates_metrics(config: Mapping) -> bool:
    return bool(validation_variants(config))


@dataclass(frozen=True)
class Wildcard:
    """A template field filled from another wildcard of the job (ROAR seed ``s`` reads the
    maps of replicate ``s``: ``replicate=Wildcard("seed")``)."""

    name: str


# --- declared files ------------------------------------------------------------------------

@dataclass(frozen=True)
class Files:
    """One named input or output: ``template`` (relative to ``results_dir``) with ``fields``
    filled in; a field whose value is a list (a :class:`Value` giving a list) makes it a list
    of files. ``directory``: a directory output. ``caption``: shown in Snakemake's HTML report
    with this caption file of ``rules/report/``. ``when``: declared only if true. ``path``:
    instead of a template, a :class:`Value` giving the path itself (e.g. a user's directory
    outside ``results_dir``)."""

    template: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    directory: bool = False
    caption: str | None = None
    when: Value | None = None
    path: Value | None = None


def files(template: str, *, directory: bool = False, caption: str | None = None,
          when: Value | None = None, **fields: Any) -> Files:
    return Files(template=template, fields=fields, directory=directory, caption=caption,
                 when=when)


def resolve(entry: Files, config: Mapping, wildcards: Mapping[str, Any]) -> list[Path]:
    """The concrete paths of ``entry`` for one job (an empty list when ``when`` is false)."""
    if entry.when is not None and not entry.when.of(config):
        return []
    if entry.path is not None:
        return [Path(entry.path.of(config))]
    fixed, lists = dict(wildcards), {}
    for name, value in entry.fields.items():
        value = (value.of(config) if isinstance(value, Value) else
                 wildcards[value.name] if isinstance(value, Wildcard) else value)
        (lists if isinstance(value, (list, tuple)) else fixed)[name] = value
    return [paths.at(config, entry.template, **fixed, **dict(zip(lists, combo)))
            for combo in itertools.product(*lists.values())]


# --- stages ----------------------------------------------------------------------------------

Grid = Mapping[str, Value]
"""Wildcard name -> its values under the config (a list); a stage's jobs are the product."""


@dataclass(frozen=True)
class Stage:
    """One DAG node.

    ``grid``: wildcard -> values; its keys, in order, are the script's wildcard arguments
    (``--variant V ...``). ``extra_grids``: further grids of the same wildcards (e.g.
    ``oracle``: the oracle maps on the validation variants only, so validating the metrics
    does not multiply the whole grid); the jobs are the union of all grids' products.
    ``params``: dotted config keys the results depend on (``{variant}`` is the
    wildcard); the merged values are the rule's ``params`` (Snakemake's params rerun trigger)
    and the stage's DVC ``params``. ``active``: the stage is in the DAG only when true.
    ``metrics`` / ``plots``: output names shown as DVC metrics and plots. ``runtime`` is in
    minutes. ``threads``: the job's CPU cores, passed to the script as ``--threads`` (torch's
    thread count); GPU stages other than training take one, so CPU-only runs execute two
    side by side. ``priority``: Snakemake's rule priority; training goes first because it
    unblocks everything after it.
    """

    name: str
    doc: str
    group: str
    env: str
    inputs: Mapping[str, Files]
    outputs: Mapping[str, Files]
    params: tuple[str, ...]
    grid: Grid = field(default_factory=dict)
    extra_grids: Mapping[str, Grid] = field(default_factory=dict)
    active: Value | None = None
    gpu: bool = False
    threads: int = 1
    priority: int = 0
    mem_mb: int = 4000
    runtime: int = 60
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        return f"{SCRIPTS_DIR}/{self.name}.py"

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(self.grid)

    def all_grids(self) -> dict[str, Grid]:
        """``{"": grid, **extra_grids}``."""
        return {"": self.grid, **self.extra_grids}


VARIANTS = key("variants")
REPLICATES = derived(replicate_ids)
PER_MODEL: Grid = {"variant": VARIANTS, "replicate": REPLICATES}
"""The grid of the per-model stages: every replicate of every variant."""
STORE = {"store": files(paths.VARIANT_DIR_T), "store_done": files(paths.VARIANT_SUMMARY_T)}
MODEL_AND_STORE = {"model": files(paths.MODEL_WEIGHTS_T), **STORE}
VAL_MAPS = files(paths.ATTRIBUTION_MAP_T, method=key("explain.methods"), split="val")
ROAR_GRID: Grid = {"kind": derived(roar_kinds), "variant": VARIANTS, "method": key("roar.methods"),
                   "fraction": key("roar.fractions"), "seed": derived(roar_seeds)}
ROAR_ORACLE_GRID: Grid = {**ROAR_GRID, "variant": derived(validation_variants),
                          "method": derived(roar_oracles)}
ROAD_GRID: Grid = {"variant": VARIANTS, "method": derived(road_methods), "replicate": REPLICATES}
ROAD_ORACLE_GRID: Grid = {**ROAD_GRID, "variant": derived(validation_variants),
                          "method": derived(road_oracles)}
MODEL_OUTPUTS = {"weights": files(paths.MODEL_WEIGHTS_T),
                 "metrics": files(paths.MODEL_METRICS_T),
                 "history": files(paths.MODEL_HISTORY_T),
                 "curve": files(paths.MODEL_CURVE_T, caption="learning_curve.rst"),
                 "predictions": files(paths.MODEL_PREDICTIONS_T)}
ARCH = ("model.arch", "plugins.models")
"""The params of every stage that builds or loads a model: the architecture (a plug-in
architecture's import path included)."""


def _with(entries: Mapping[str, Files], **fields: Any) -> dict[str, Files]:
    """``entries`` with ``fields`` fixed (e.g. the variant of a stage without that wildcard)."""
    return {name: dataclasses.replace(entry, fields={**entry.fields, **fields})
            for name, entry in entries.items()}


STAGE_LIST: tuple[Stage, ...] = (
    Stage("download_voc", "Download and extract PASCAL VOC 2012 (or check dataset.voc_root).",
          "data", "data", active=derived(uses_voc),
          inputs={},
          outputs={"manifest": files(paths.DATASET_MANIFEST_T, dataset="voc2012"),
                   "root": files(paths.DATASET_ROOT_T, dataset="voc2012", directory=True,
                                 when=derived(downloads_voc))},
          params=("dataset.voc_root", "dataset.url", "dataset.md5"), runtime=240),
    Stage("make_synthetic", "Generate the synthetic VOC-format world (known background cue).",
          "data", "data", active=derived(uses_synthetic),
          inputs={},
          outputs={"manifest": files(paths.DATASET_MANIFEST_T, dataset="synthetic"),
                   "root": files(paths.DATASET_ROOT_T, dataset="synthetic", directory=True)},
          params=("seed", "synthetic")),
    Stage("index", "Labels, splits and foreground fractions of every image.",
          "data", "data",
          inputs={"manifest": files(paths.DATASET_MANIFEST_T, dataset=key("dataset.name")),
                  "root": Files(path=derived(paths.dataset_root))},
          outputs={"table": files(paths.INDEX_TABLE_T), "log": files(paths.INDEX_LOG_T)},
          params=("dataset.name", "dataset.voc_root", "synthetic.num_classes",
                  "dataset.min_fg_fraction", "dataset.on_bad_file"), metrics=("log",)),
    Stage("variant", "The tensor store of one training variant (train, val, val_matched).",
          "data", "data", grid={"variant": derived(store_variants)},
          inputs={"index": files(paths.INDEX_TABLE_T), "index_log": files(paths.INDEX_LOG_T),
                  "root": Files(path=derived(paths.dataset_root))},
          outputs={"store": files(paths.VARIANT_DIR_T, directory=True),
                   "summary": files(paths.VARIANT_SUMMARY_T)},
          params=("seed", "resolution", "dataset.resize", "dataset.on_bad_file", "variant",
                  "plugins.variants.{variant}"),
          mem_mb=8000),
    Stage("train", "Train one classifier per variant (Nielsen et al. section IV, Table I).",
          "train", "torch", grid=PER_MODEL,
          inputs=STORE, outputs=MODEL_OUTPUTS,
          params=("seed", *ARCH, "resolution", "train", "train_overrides.{variant}"), gpu=True,
          threads=2,
          priority=1, mem_mb=16000, runtime=720, metrics=("metrics",), plots=("history", "curve")),
    Stage("train_reference", "The independently seeded standard model that judges featvis.",
          "train", "torch",
          inputs=_with(STORE, variant="standard"),
          outputs=_with(MODEL_OUTPUTS, variant=paths.REFERENCE_MODEL, replicate=0),
          params=("seed", *ARCH, "resolution", "train", "train_overrides.standard"), gpu=True,
          threads=2,
          priority=1, mem_mb=16000, runtime=720),
    Stage("attribute", "Attribution maps of one method on every split of a variant's store.",
          "explain", "torch",
          grid={"variant": VARIANTS, "method": derived(attribution_methods),
                "replicate": REPLICATES},
          extra_grids={"oracle": {"variant": derived(validation_variants),
                                  "method": derived(attribution_oracles),
                                  "replicate": REPLICATES}},
          inputs=MODEL_AND_STORE,
          outputs={"maps": files(paths.ATTRIBUTION_MAP_T, split=key("explain.splits"))},
          params=("seed", *ARCH, "explain.splits", "explain.batch_size", "explain.channel_reduce",
                  "explain.ig_steps", "explain.noise_tunnel_samples", "explain.noise_tunnel_stdev",
                  "explain.occlusion_patch", "explain.target", "explain.cmwp_layer",
                  "plugins.methods.{method}"),
          gpu=True, mem_mb=16000, runtime=240),
    Stage("featvis", "Feature visualisation: activation maximisation with L2 (paper IV-V).",
          "explain", "torch", grid=PER_MODEL,
          inputs=MODEL_AND_STORE,
          outputs={"dir": files(paths.FEATVIS_DIR_T, directory=True)},
          params=("seed", *ARCH, "featvis"), gpu=True, mem_mb=8000, runtime=240),
    Stage("undesirable", "F-TC / F-NTC undesirable pixels and phi (Kang et al.).",
          "explain", "torch", grid=PER_MODEL,
          inputs=MODEL_AND_STORE,
          outputs={"dir": files(paths.UNDESIRABLE_DIR_T, directory=True)},
          params=("seed", *ARCH, "undesirable"), gpu=True, mem_mb=8000, runtime=240),
    Stage("sanity", "Model and data randomisation sanity checks (Adebayo et al.).",
          "explain", "torch", grid=PER_MODEL,
          inputs=MODEL_AND_STORE,
          outputs={"dir": files(paths.SANITY_DIR_T, directory=True, caption="sanity.rst")},
          params=("seed", *ARCH, "sanity", "train", "train_overrides.{variant}", "explain",
                  "plugins.methods"),
          gpu=True, mem_mb=8000, runtime=240),
    Stage("roar", "One ROAR / KAR remove-and-retrain run (Hooker et al. 2019).",
          "roar", "torch", grid=ROAR_GRID, extra_grids={"oracle": ROAR_ORACLE_GRID},
          inputs={**STORE, "maps": files(paths.ATTRIBUTION_MAP_T, split=derived(roar_map_splits),
                                         replicate=Wildcard("seed"))},
          outputs={"result": files(paths.ROAR_RESULT_T)},
          params=("seed", *ARCH, "roar.epochs", "roar.eval_split", "roar.kar_fraction", "train",
                  "train_overrides.{variant}"),
          gpu=True, mem_mb=16000, runtime=720),
    Stage("road", "ROAD: remove by noisy linear imputation, no retraining (Rong et al. 2022).",
          "roar", "torch", grid=ROAD_GRID, extra_grids={"oracle": ROAD_ORACLE_GRID},
          active=derived(runs_road),
          inputs={**MODEL_AND_STORE,
                  "map": files(paths.ATTRIBUTION_MAP_T, split=key("roar.eval_split"))},
          outputs={"result": files(paths.ROAD_RESULT_T)},
          params=("seed", *ARCH, "roar.fractions", "roar.road_noise_std", "roar.road_solver",
                  "roar.road_tolerance", "roar.eval_split", "train", "train_overrides.{variant}"),
          gpu=True, mem_mb=8000, runtime=120),
    Stage("roar_summary", "ROAR/KAR/ROAD tables, curves and scores against random.",
          "roar", "data",
          inputs={"roar": files(paths.ROAR_RESULT_T, **ROAR_GRID),
                  "roar_oracle": files(paths.ROAR_RESULT_T, **ROAR_ORACLE_GRID),
                  "road": files(paths.ROAD_RESULT_T, **ROAD_GRID),
                  "road_oracle": files(paths.ROAD_RESULT_T, **ROAD_ORACLE_GRID)},
          outputs={"dir": files(paths.ROAR_SUMMARY_DIR_T, directory=True,
                                caption="roar_summary.rst")},
          params=("variants", "replicates", "roar.methods", "roar.fractions", "roar.seeds",
                  "roar.kar", "roar.kar_fraction", "roar.road", "metric_validation.variants")),
    Stage("confidence_gain", "Simple and concise confidence gain, SCG / CCG.",
          "metrics", "torch", grid=PER_MODEL,
          inputs={**MODEL_AND_STORE, "maps": VAL_MAPS},
          outputs={"table": files(paths.CONFIDENCE_GAIN_TABLE_T, caption="confidence_gain.rst"),
                   "images": files(paths.CONFIDENCE_GAIN_IMAGES_T)},
          params=("seed", *ARCH, "resolution", "confidence_gain", "explain.methods"), gpu=True,
          mem_mb=8000, runtime=240),
    Stage("localisation", "Energy in mask, pointing game and background reliance.",
          "metrics", "torch", grid=PER_MODEL,
          inputs={**MODEL_AND_STORE, "maps": VAL_MAPS},
          outputs={"table": files(paths.LOCALISATION_TABLE_T, caption="localisation.rst"),
                   "images": files(paths.LOCALISATION_IMAGES_T)},
          params=("seed", *ARCH, "resolution", "explain.methods", "localisation", "train",
                  "train_overrides.{variant}"), gpu=True, mem_mb=8000, runtime=240),
    Stage("localisation_untrained", "Localisation of an untrained model's maps (baseline).",
          "metrics", "torch",
          inputs=_with(STORE, variant="standard"),
          outputs={"table": files(paths.UNTRAINED_LOCALISATION_TABLE_T,
                                  caption="localisation_untrained.rst")},
          params=("seed", *ARCH, "resolution", "explain", "localisation", "plugins.methods"),
          gpu=True, mem_mb=8000, runtime=240),
    Stage("metric_validation", "Every metric on oracle maps: object and background vs random.",
          "metrics", "torch",
          grid={"variant": derived(validation_variants), "replicate": REPLICATES},
          active=derived(validates_metrics),
          inputs={**MODEL_AND_STORE,
                  "maps": files(paths.ATTRIBUTION_MAP_T, split="val",
                                method=["random", *ORACLE_METHODS])},
          outputs={"table": files(paths.METRIC_VALIDATION_TABLE_T,
                                  caption="metric_validation.rst")},
          params=("seed", *ARCH, "resolution", "confidence_gain", "localisation"), gpu=True,
          mem_mb=8000, runtime=240),
    Stage("featvis_metrics", "Recognisability and high-frequency share of the visualisations.",
          "metrics", "torch",
          inputs={"featvis": files(paths.FEATVIS_DIR_T, variant=VARIANTS, replicate=REPLICATES),
                  "models": files(paths.MODEL_WEIGHTS_T, variant=VARIANTS, replicate=REPLICATES),
                  "reference": files(paths.MODEL_WEIGHTS_T, variant=paths.REFERENCE_MODEL,
                                     replicate=0),
                  **_with(STORE, variant=derived(first_variant))},
          outputs={"table": files(paths.FEATVIS_METRICS_TABLE_T, caption="featvis_metrics.rst")},
          params=("variants", "replicates", *ARCH, "featvis_metrics"), gpu=True, mem_mb=8000,
          runtime=240),
    Stage("aggregate", "Join every stage's numbers into the report tables.",
          "report", "data",
          inputs={"metrics": files(paths.MODEL_METRICS_T, **PER_MODEL),
                  "reference_metrics": files(paths.MODEL_METRICS_T,
                                             variant=paths.REFERENCE_MODEL, replicate=0),
                  "store_summaries": files(paths.VARIANT_SUMMARY_T, variant=VARIANTS),
                  "undesirable": files(paths.UNDESIRABLE_DIR_T, **PER_MODEL),
                  "sanity": files(paths.SANITY_DIR_T, **PER_MODEL),
                  "confidence_gain": files(paths.CONFIDENCE_GAIN_TABLE_T, **PER_MODEL),
                  "localisation": files(paths.LOCALISATION_TABLE_T, **PER_MODEL),
                  "localisation_images": files(paths.LOCALISATION_IMAGES_T, **PER_MODEL),
                  "confidence_gain_images": files(paths.CONFIDENCE_GAIN_IMAGES_T, **PER_MODEL),
                  "roar": files(paths.ROAR_RESULT_T, **ROAR_GRID),
                  "road": files(paths.ROAD_RESULT_T, **ROAD_GRID),
                  "untrained_localisation": files(paths.UNTRAINED_LOCALISATION_TABLE_T),
                  "roar_summary": files(paths.ROAR_SUMMARY_DIR_T),
                  "featvis_metrics": files(paths.FEATVIS_METRICS_TABLE_T),
                  "metric_validation": files(paths.METRIC_VALIDATION_TABLE_T,
                                             variant=derived(validation_variants),
                                             replicate=REPLICATES)},
          outputs={"tables": files(paths.REPORT_TABLE_T, name=list(REPORT_TABLES))},
          params=("variants", "replicates", "seed", "resolution", "dataset", *ARCH, "train.epochs",
                  "train.pretrained", "train_overrides", "roar", "metric_validation",
                  "report.quality_alpha", "report.effects_baseline", "report.ci_level",
                  "report.bootstrap_resamples", "report.permutation_resamples",
                  "report.effect_alpha")),
    Stage("report", "The self-contained HTML report.",
          "report", "data",
          inputs={"tables": files(paths.REPORT_TABLE_T, name=list(REPORT_TABLES)),
                  "index": files(paths.INDEX_TABLE_T),
                  "curves": files(paths.MODEL_CURVE_T, variant=VARIANTS, replicate=0),
                  "predictions": files(paths.MODEL_PREDICTIONS_T, variant=VARIANTS, replicate=0),
                  "featvis": files(paths.FEATVIS_DIR_T, variant=VARIANTS, replicate=0),
                  "maps": files(paths.ATTRIBUTION_MAP_T, variant=VARIANTS,
                                method=key("explain.methods"), split="val", replicate=0),
                  "stores": files(paths.VARIANT_DIR_T, variant=VARIANTS),
                  "index_log": files(paths.INDEX_LOG_T),
                  "dataset": Files(path=derived(paths.dataset_root)),
                  "roar_summary": files(paths.ROAR_SUMMARY_DIR_T),
                  "sanity": files(paths.SANITY_DIR_T, variant=VARIANTS, replicate=0),
                  "undesirable": files(paths.UNDESIRABLE_DIR_T, variant=VARIANTS, replicate=0)},
          outputs={"html": files(paths.REPORT_HTML_T, caption="report.rst"),
                   "figures": files(paths.REPORT_FIGURES_DIR_T, directory=True,
                                    caption="report_figures.rst")},
          params=("seed", "resolution", "variants", "replicates", "variant", *ARCH,
                  "dataset.resize",
                  "explain.methods", "report")),
)

STAGES: dict[str, Stage] = {s.name: s for s in STAGE_LIST}


def active_stage_names(config: Mapping) -> list[str]:
    """The stages in the DAG under ``config`` (the dataset picks its source stage; ROAD is
    switched by ``roar.road``, the metric validation by ``metric_validation.variants``)."""
    return [s.name for s in STAGE_LIST if s.active is None or s.active.of(config)]


def jobs(stage: Stage, config: Mapping) -> list[dict]:
    """All wildcard combinations of ``stage`` (one dict per job), over all its grids, in
    order and without repeats."""
    if stage.name not in active_stage_names(config):
        return []
    out: list[dict] = []
    for grid in stage.all_grids().values():
        values = {name: value.of(config) for name, value in grid.items()}
        for combo in itertools.product(*values.values()):
            job = dict(zip(values, combo))
            if job not in out:
                out.append(job)
    return out


def job_files(stage: Stage, config: Mapping, wildcards: Mapping[str, Any],
              which: str = "outputs") -> dict[str, list[Path]]:
    """Name -> concrete paths of ``stage``'s ``which`` (``inputs`` or ``outputs``) for one job."""
    return {name: resolve(entry, config, wildcards)
            for name, entry in getattr(stage, which).items()}


def all_targets(config: Mapping) -> list[str]:
    """Every output of every job of the active stages (the ``all`` rule's input)."""
    return [str(p) for name in active_stage_names(config) for wildcards in jobs(STAGES[name], config)
            for entries in job_files(STAGES[name], config, wildcards).values() for p in entries]


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
    if config["roar"]["seeds"] > config["replicates"]:
        raise ConfigError(f"roar.seeds is {config['roar']['seeds']} but replicates is "
                          f"{config['replicates']}: ROAR/KAR seed s removes pixels by the maps "
                          "of replicate s, so raise replicates or lower roar.seeds")
    outside = [v for v in config["metric_validation"]["variants"] if v not in config["variants"]]
    if outside:
        raise ConfigError(f"metric_validation.variants lists {outside}, which are not in "
                          f"variants {config['variants']}: add them to variants or remove them "
                          "from metric_validation.variants ([] switches the validation off)")
    if validation_variants(config) and "random" not in attribution_methods(config):
        raise ConfigError("metric_validation compares the oracle maps with random: add random "
                          "to explain.methods (or set metric_validation.variants: [])")


# --- config slices (params) ------------------------------------------------------------------

def params_slice(keys: Sequence[str], config: Mapping, **wildcards) -> str:
    """The merged config values of ``keys`` (``{variant}`` filled from ``wildcards``), as
    canonical JSON: the Snakemake rule's ``params``, so a changed value reruns exactly the
    jobs whose slice changed."""
    values = {}
    for dotted in keys:
        dotted = dotted.format(**wildcards)
        value = _lookup(config, dotted)
        values[dotted] = None if value is _MISSING else value
    return json.dumps(values, sort_keys=True)


# --- commands ---------------------------------------------------------------------------

def shell_command(stage: Stage, configfiles: Sequence[str] | str, threads: int | str,
                  **wildcards) -> str:
    """``python workflow_scripts/<stage>.py --config FILES [--wildcard VALUE ...] --threads N``;
    wildcard values may be Placeholders (``{wildcards.variant}`` for Snakemake,
    ``${item.variant}`` for DVC), ``threads`` Snakemake's ``{threads}``.

    Both runners pass the thread count: CPU training is deterministic for a fixed torch thread
    count only (1 vs 2 threads moved ResNet18 weights by up to 1.8e-6 after one epoch, which
    shifted SCG in the third decimal), so DVC's ``--threads`` is the rule's ``threads``, what
    Snakemake gives the job when it has that many cores."""
    if not isinstance(configfiles, str):
        configfiles = " ".join(configfiles)
    args = [f"python {stage.script}", "--config", configfiles]
    for name in stage.wildcards:
        args += [f"--{name}", str(wildcards[name])]
    return " ".join(args + ["--threads", str(threads)])


def log_template(stage: Stage, base_template: str = paths.LOG_T) -> str:
    """``logs/<stage>/<wildcards joined by _>.log`` (or the benchmark template), with the
    wildcards still as ``{name}`` fields."""
    job = "_".join("{%s}" % w for w in stage.wildcards) or stage.name
    return base_template.format(stage=stage.name, job=job)


DESCRIPTION = """Write the files the runners read, from the stage table.

  python -m xaipipe.pipeline rules                                     # rules/*.smk
  python -m xaipipe.pipeline dvc --config config.yaml > dvc.yaml      # the committed file
  python -m xaipipe.pipeline dvc --config config.yaml config/demo.yaml --out config/dvc/demo
  dvc repro config/dvc/demo/dvc.yaml                                   # run the preset

dvc with --out writes DIR/dvc.yaml (its dvc.lock beside it), every stage runs in the
repository root (wdir), and DIR/results_dir.yaml, merged last, sends the preset's outputs to
<results_dir>/<name of DIR>: DVC refuses two dvc.yaml files that declare the same output, so
the preset must not write where the committed dvc.yaml does. DIR must not be git-ignored
(DVC refuses such files; results/ is). Run the commands from the repository root, and give
`dvc repro` the file: without a target DVC reproduces every dvc.yaml in the repository."""


def main(argv: Sequence[str] | None = None) -> int:
    from xaipipe import dvcgen, rulegen

    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["dvc", "rules"])
    parser.add_argument("--config", nargs="+", default=["config.yaml"], metavar="YAML",
                        help="dvc: config files, merged in order (as --configfile)")
    parser.add_argument("--out", metavar="DIR",
                        help="dvc: write DIR/dvc.yaml instead of printing; rules: the rules "
                             "directory (default: rules)")
    args = parser.parse_args(argv)
    try:
        if args.what == "rules":
            for path in rulegen.write_rules(Path(args.out or "rules")):
                print(f"wrote {path}")
        elif args.out is None:
            sys.stdout.write(dvcgen.dvc_yaml(args.config))
        else:
            dvcgen.write_preset(args.config, Path(args.out))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
