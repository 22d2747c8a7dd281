"""The results layout: the one place that says where every stage reads and writes.

Workflow scripts, the Snakemake rules and the DVC stages all take their paths from here, so
the three ways of running the pipeline cannot drift apart. Every function takes the
validated config (for ``results_dir``) plus the stage's wildcards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

SPLITS = ("train", "val", "val_matched")
"""Tensor-store splits per variant: ``train`` (the variant's training images), ``val``
(always unmodified, as in the paper) and ``val_matched`` (val with the variant's own
background treatment; the extra report column)."""


def results(config: Mapping) -> Path:
    return Path(config["results_dir"])


# --- data -----------------------------------------------------------------------------

def dataset_root(config: Mapping) -> Path:
    """The VOCdevkit directory the index stage reads (contains ``VOC2012/``)."""
    voc_root = config["dataset"].get("voc_root")
    if config["dataset"]["name"] == "voc2012" and voc_root:
        return Path(voc_root)
    return results(config) / "data" / config["dataset"]["name"] / "VOCdevkit"


def dataset_manifest(config: Mapping) -> Path:
    """Written by download_voc / make_synthetic once the dataset directory is complete."""
    return results(config) / "data" / config["dataset"]["name"] / "manifest.json"


def download_dir(config: Mapping) -> Path:
    """Where the VOC tar (and its ``.part`` while downloading) lives."""
    return results(config) / "downloads"


def index_table(config: Mapping) -> Path:
    return results(config) / "data" / "index.parquet"


def index_log(config: Mapping) -> Path:
    return results(config) / "data" / "index_log.json"


def variant_dir(config: Mapping, variant: str) -> Path:
    """Tensor store of one variant: ``<split>/{images,masks,labels}.npy`` + ``meta.json``."""
    return results(config) / "data" / "variants" / variant


def variant_split_dir(config: Mapping, variant: str, split: str) -> Path:
    return variant_dir(config, variant) / split


def variant_summary(config: Mapping, variant: str) -> Path:
    return results(config) / "data" / "variants" / f"{variant}.json"


# --- training --------------------------------------------------------------------------

def model_dir(config: Mapping, variant: str) -> Path:
    return results(config) / "models" / variant


def model_weights(config: Mapping, variant: str) -> Path:
    return model_dir(config, variant) / "model.pt"


def model_metrics(config: Mapping, variant: str) -> Path:
    return model_dir(config, variant) / "metrics.json"


def model_history(config: Mapping, variant: str) -> Path:
    return model_dir(config, variant) / "history.csv"


def model_curve(config: Mapping, variant: str) -> Path:
    return model_dir(config, variant) / "learning_curve.png"


def model_predictions(config: Mapping, variant: str) -> Path:
    """int64 N: the model's predicted class of every unmodified val image (store row order)."""
    return model_dir(config, variant) / "val_predictions.npy"


def checkpoint_dir(config: Mapping, name: str) -> Path:
    """Resume checkpoints live outside every declared output, because Snakemake and DVC
    delete declared outputs before a job runs."""
    return results(config) / "checkpoints" / name


# --- explanations ----------------------------------------------------------------------

def attribution_map(config: Mapping, variant: str, method: str, split: str) -> Path:
    """float32 N x H x W attribution maps, row order = the variant store's split order."""
    return results(config) / "explain" / variant / "attributions" / f"{method}_{split}.npy"


def featvis_dir(config: Mapping, variant: str) -> Path:
    return results(config) / "explain" / variant / "featvis"


def undesirable_dir(config: Mapping, variant: str) -> Path:
    return results(config) / "explain" / variant / "undesirable"


def sanity_dir(config: Mapping, variant: str) -> Path:
    return results(config) / "explain" / variant / "sanity"


# --- evaluation ------------------------------------------------------------------------

def roar_result(config: Mapping, kind: str, variant: str, method: str,
                fraction: float, seed: int) -> Path:
    """One remove-and-retrain run; ``kind`` is ``roar`` or ``kar``."""
    return (results(config) / "evaluate" / kind / variant / method
            / f"fraction{fraction:g}_seed{seed}.json")


def roar_summary_dir(config: Mapping) -> Path:
    """ROAR/KAR aggregate: table over seeds, curves per variant, area-vs-random scores."""
    return results(config) / "evaluate" / "roar_summary"


def metrics_dir(config: Mapping, variant: str) -> Path:
    """SCG/CCG, localisation and ROAD numbers of one variant."""
    return results(config) / "evaluate" / "metrics" / variant


def road_result(config: Mapping, variant: str, method: str) -> Path:
    return metrics_dir(config, variant) / f"road_{method}.json"


def confidence_gain_table(config: Mapping, variant: str) -> Path:
    return metrics_dir(config, variant) / "confidence_gain.csv"


def localisation_table(config: Mapping, variant: str) -> Path:
    return metrics_dir(config, variant) / "localisation.csv"


def untrained_localisation_table(config: Mapping) -> Path:
    """Localisation of an untrained ResNet18's maps on the unmodified val images (the
    baseline every variant's localisation is read against)."""
    return results(config) / "evaluate" / "metrics" / "untrained" / "localisation.csv"


def metric_validation_table(config: Mapping, variant: str) -> Path:
    """SCG/CCG, energy in mask and pointing game of the oracle maps and random on one
    validation variant's model (``metric_validation`` stage)."""
    return metrics_dir(config, variant) / "metric_validation.csv"


def featvis_metrics_table(config: Mapping) -> Path:
    """Recognisability and high-frequency share of every variant's visualisations."""
    return results(config) / "evaluate" / "featvis_metrics.csv"


REFERENCE_MODEL = "standard_reference"
"""An independently seeded ``standard`` model (trained like ``standard`` with seed + 1) that
judges feature-visualisation recognisability; lives at ``model_dir(config, REFERENCE_MODEL)``."""


def report_dir(config: Mapping) -> Path:
    return results(config) / "report"


def report_table(config: Mapping, name: str) -> Path:
    """One tidy table of the aggregate stage (``xaipipe.report.aggregate.TABLES``)."""
    return report_dir(config) / f"{name}.csv"


def report_figures_dir(config: Mapping) -> Path:
    """PNGs the report stage draws itself (feature-visualisation grid, saliency grid)."""
    return report_dir(config) / "figures"


def variant_examples_figure(config: Mapping) -> Path:
    """Original / mask / black / noise / mixed for a few training images, drawn by the
    report stage (``xaipipe.data.figures.write_variant_examples``)."""
    return report_figures_dir(config) / "variant_examples.png"


def report_html(config: Mapping) -> Path:
    """The self-contained HTML report (figures embedded as data URIs)."""
    return report_dir(config) / "index.html"
