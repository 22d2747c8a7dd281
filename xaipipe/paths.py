"""The results layout: the one place that says where every stage reads and writes.

Every location is a template relative to ``results_dir`` (the ``*_T`` constants below, in
``str.format`` syntax: ``{variant}``, ``{method}`` ... are wildcards). The stage table
(:mod:`xaipipe.pipeline`) spells its inputs and outputs with these templates, so the
generated rule files (``rules/*.smk``) and ``dvc.yaml`` show them literally; the functions
below fill them in for the stage scripts. Scripts, Snakemake and DVC therefore cannot
disagree about where a file is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

SPLITS = ("train", "val", "val_matched")
"""Tensor-store splits per variant: ``train`` (the variant's training images), ``val``
(always unmodified, as in the paper) and ``val_matched`` (val with the variant's own
background treatment; the extra report column)."""

REFERENCE_MODEL = "standard_reference"
"""An independently seeded ``standard`` model (trained like ``standard`` with seed + 1) that
judges feature-visualisation recognisability; lives at ``model_dir(config, REFERENCE_MODEL)``."""

# --- templates, relative to results_dir -------------------------------------------------------

DATASET_ROOT_T = "data/{dataset}/VOCdevkit"
DATASET_MANIFEST_T = "data/{dataset}/manifest.json"
DOWNLOAD_DIR_T = "downloads"
INDEX_TABLE_T = "data/index.parquet"
INDEX_LOG_T = "data/index_log.json"
VARIANT_DIR_T = "data/variants/{variant}"
VARIANT_SUMMARY_T = "data/variants/{variant}.json"
MODEL_DIR_T = "models/{variant}/rep{replicate}"
MODEL_WEIGHTS_T = MODEL_DIR_T + "/model.pt"
MODEL_METRICS_T = MODEL_DIR_T + "/metrics.json"
MODEL_HISTORY_T = MODEL_DIR_T + "/history.csv"
MODEL_CURVE_T = MODEL_DIR_T + "/learning_curve.png"
MODEL_PREDICTIONS_T = MODEL_DIR_T + "/val_predictions.npy"
CHECKPOINT_DIR_T = "checkpoints/{name}"
ATTRIBUTION_MAP_T = "explain/{variant}/rep{replicate}/attributions/{method}_{split}.npy"
FEATVIS_DIR_T = "explain/{variant}/rep{replicate}/featvis"
UNDESIRABLE_DIR_T = "explain/{variant}/rep{replicate}/undesirable"
SANITY_DIR_T = "explain/{variant}/rep{replicate}/sanity"
ROAR_RESULT_T = "evaluate/{kind}/{variant}/{method}/fraction{fraction:g}_seed{seed}.json"
ROAR_SUMMARY_DIR_T = "evaluate/roar_summary"
METRICS_DIR_T = "evaluate/metrics/{variant}/rep{replicate}"
ROAD_RESULT_T = METRICS_DIR_T + "/road_{method}.json"
CONFIDENCE_GAIN_TABLE_T = METRICS_DIR_T + "/confidence_gain.csv"
LOCALISATION_TABLE_T = METRICS_DIR_T + "/localisation.csv"
LOCALISATION_IMAGES_T = METRICS_DIR_T + "/localisation_images.parquet"
CONFIDENCE_GAIN_IMAGES_T = METRICS_DIR_T + "/confidence_gain_images.parquet"
UNTRAINED_LOCALISATION_TABLE_T = "evaluate/metrics/untrained/localisation.csv"
METRIC_VALIDATION_TABLE_T = METRICS_DIR_T + "/metric_validation.csv"
FEATVIS_METRICS_TABLE_T = "evaluate/featvis_metrics.csv"
REPORT_DIR_T = "report"
REPORT_TABLE_T = REPORT_DIR_T + "/{name}.csv"
REPORT_FIGURES_DIR_T = REPORT_DIR_T + "/figures"
VARIANT_EXAMPLES_FIGURE_T = REPORT_FIGURES_DIR_T + "/variant_examples.png"
REPORT_HTML_T = REPORT_DIR_T + "/index.html"
LOG_T = "logs/{stage}/{job}.log"
BENCHMARK_T = "benchmarks/{stage}/{job}.tsv"


def results(config: Mapping) -> Path:
    return Path(config["results_dir"])


def at(config: Mapping, template: str, **fields) -> Path:
    """``results_dir / template`` with ``fields`` filled in."""
    return results(config) / template.format(**fields)


# --- data -----------------------------------------------------------------------------

def dataset_root(config: Mapping) -> Path:
    """The VOCdevkit directory the index stage reads (contains ``VOC2012/``): the user's
    ``dataset.voc_root`` when set (VOC only), else where download/generation puts it."""
    voc_root = config["dataset"].get("voc_root")
    if config["dataset"]["name"] == "voc2012" and voc_root:
        return Path(voc_root)
    return at(config, DATASET_ROOT_T, dataset=config["dataset"]["name"])


def dataset_manifest(config: Mapping) -> Path:
    """Written by download_voc / make_synthetic once the dataset directory is complete."""
    return at(config, DATASET_MANIFEST_T, dataset=config["dataset"]["name"])


def download_dir(config: Mapping) -> Path:
    """Where the VOC tar (and its ``.part`` while downloading) lives."""
    return at(config, DOWNLOAD_DIR_T)


def index_table(config: Mapping) -> Path:
    return at(config, INDEX_TABLE_T)


def index_log(config: Mapping) -> Path:
    return at(config, INDEX_LOG_T)


def variant_dir(config: Mapping, variant: str) -> Path:
    """Tensor store of one variant: ``<split>/{images,masks,labels}.npy`` + ``meta.json``."""
    return at(config, VARIANT_DIR_T, variant=variant)


def variant_split_dir(config: Mapping, variant: str, split: str) -> Path:
    return variant_dir(config, variant) / split


def variant_summary(config: Mapping, variant: str) -> Path:
    return at(config, VARIANT_SUMMARY_T, variant=variant)


# --- training --------------------------------------------------------------------------

def model_dir(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, MODEL_DIR_T, variant=variant, replicate=replicate)


def model_weights(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, MODEL_WEIGHTS_T, variant=variant, replicate=replicate)


def model_metrics(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, MODEL_METRICS_T, variant=variant, replicate=replicate)


def model_history(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, MODEL_HISTORY_T, variant=variant, replicate=replicate)


def model_curve(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, MODEL_CURVE_T, variant=variant, replicate=replicate)


def model_predictions(config: Mapping, variant: str, *, replicate: int) -> Path:
    """int64 N: the model's predicted class of every unmodified val image (store row order)."""
    return at(config, MODEL_PREDICTIONS_T, variant=variant, replicate=replicate)


def checkpoint_dir(config: Mapping, name: str) -> Path:
    """Resume checkpoints live outside every declared output, because Snakemake and DVC
    delete declared outputs before a job runs."""
    return at(config, CHECKPOINT_DIR_T, name=name)


# --- explanations ----------------------------------------------------------------------

def attribution_map(config: Mapping, variant: str, method: str, split: str, *,
                    replicate: int) -> Path:
    """float32 N x H x W attribution maps, row order = the variant store's split order."""
    return at(config, ATTRIBUTION_MAP_T, variant=variant, method=method, split=split,
              replicate=replicate)


def featvis_dir(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, FEATVIS_DIR_T, variant=variant, replicate=replicate)


def undesirable_dir(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, UNDESIRABLE_DIR_T, variant=variant, replicate=replicate)


def sanity_dir(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, SANITY_DIR_T, variant=variant, replicate=replicate)


# --- evaluation ------------------------------------------------------------------------

def roar_result(config: Mapping, kind: str, variant: str, method: str,
                fraction: float, seed: int) -> Path:
    """One remove-and-retrain run; ``kind`` is ``roar`` or ``kar``."""
    return at(config, ROAR_RESULT_T, kind=kind, variant=variant, method=method,
              fraction=fraction, seed=seed)


def roar_summary_dir(config: Mapping) -> Path:
    """ROAR/KAR aggregate: table over seeds, curves per variant, area-vs-random scores."""
    return at(config, ROAR_SUMMARY_DIR_T)


def metrics_dir(config: Mapping, variant: str, *, replicate: int) -> Path:
    """SCG/CCG, localisation and ROAD numbers of one variant."""
    return at(config, METRICS_DIR_T, variant=variant, replicate=replicate)


def road_result(config: Mapping, variant: str, method: str, *, replicate: int) -> Path:
    return at(config, ROAD_RESULT_T, variant=variant, method=method, replicate=replicate)


def confidence_gain_table(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, CONFIDENCE_GAIN_TABLE_T, variant=variant, replicate=replicate)


def localisation_table(config: Mapping, variant: str, *, replicate: int) -> Path:
    return at(config, LOCALISATION_TABLE_T, variant=variant, replicate=replicate)


def localisation_images(config: Mapping, variant: str, *, replicate: int) -> Path:
    """Per-image energy in mask, strict pointing game and full / fg-only / bg-only correctness
    of one model (long table: ``image_id, subject, metric, value``)."""
    return at(config, LOCALISATION_IMAGES_T, variant=variant, replicate=replicate)


def confidence_gain_images(config: Mapping, variant: str, *, replicate: int) -> Path:
    """Per-image SCG / CCG of one model (NaN = image excluded), long table."""
    return at(config, CONFIDENCE_GAIN_IMAGES_T, variant=variant, replicate=replicate)


def untrained_localisation_table(config: Mapping) -> Path:
    """Localisation of an untrained model's maps on the unmodified val images (the
    baseline every variant's localisation is read against)."""
    return at(config, UNTRAINED_LOCALISATION_TABLE_T)


def metric_validation_table(config: Mapping, variant: str, *, replicate: int) -> Path:
    """SCG/CCG, energy in mask and pointing game of the oracle maps and random on one
    validation variant's model (``metric_validation`` stage)."""
    return at(config, METRIC_VALIDATION_TABLE_T, variant=variant, replicate=replicate)


def featvis_metrics_table(config: Mapping) -> Path:
    """Recognisability and high-frequency share of every variant's visualisations."""
    return at(config, FEATVIS_METRICS_TABLE_T)


def report_dir(config: Mapping) -> Path:
    return at(config, REPORT_DIR_T)


def report_table(config: Mapping, name: str) -> Path:
    """One tidy table of the aggregate stage (``xaipipe.report.tables.TABLES``)."""
    return at(config, REPORT_TABLE_T, name=name)


def report_figures_dir(config: Mapping) -> Path:
    """PNGs the report stage draws itself (feature-visualisation grid, saliency grid)."""
    return at(config, REPORT_FIGURES_DIR_T)


def variant_examples_figure(config: Mapping) -> Path:
    """Original / mask / black / noise / mixed for a few training images, drawn by the
    report stage (``xaipipe.data.figures.write_variant_examples``)."""
    return at(config, VARIANT_EXAMPLES_FIGURE_T)


def report_html(config: Mapping) -> Path:
    """The self-contained HTML report (figures embedded as data URIs)."""
    return at(config, REPORT_HTML_T)
