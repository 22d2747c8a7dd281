"""Answers with uncertainty: per-image values of every metric, intervals, paired variant
comparisons, the model contrast and the agreement between metrics (issue #14).

Every metric here has a value per (model, image): the model is one replicate of a variant
(``replicates``; ROAR/KAR seed s is replicate s's row), the image one val image, paired across
variants (every variant's store holds the val images in the index's order, and
localisation / SCG / CCG name them by id). :mod:`xaipipe.stats` turns the R x N matrices into

* ``intervals.csv``: per metric x method x variant, the mean (over replicates of each
  replicate's image mean) and its 95 % CI, hierarchical bootstrap (replicates, then images);
* ``effects.csv`` (the output contract): per metric x method x variant against
  ``report.effects_baseline`` (``standard``): the effect (difference), its CI (replicates of
  each side resampled apart, images shared), a sign-flip permutation p-value over images,
  Holm-adjusted within the metric (its family: every method and variant of that metric), and
  a verdict: ``more object-focused`` / ``less object-focused`` when the CI excludes 0 *and*
  the adjusted p is below ``report.effect_alpha`` (in the metric's better direction, see
  :data:`METRICS`), else ``inconclusive``. A variant or baseline whose models fail the
  model-quality gate (:mod:`xaipipe.report.quality`) is ``inconclusive`` whatever its numbers;
* ``model_contrast.csv`` / ``model_contrast_points.csv``: per attribution method, Spearman's
  rho (bootstrap CI) between each model's measured background reliance (background-only
  accuracy minus chance) and the share of the method's attribution on the background (1 -
  energy in mask), over every variant x replicate model -- the BAM idea (Yang and Kim 2019:
  models whose reliance on a feature is known by construction) on our paired variants: a
  method that explains the model must follow the reliance;
* ``metric_agreement.csv``: Kendall's tau between every pair of metrics over the (variant,
  method) cells, each metric oriented so that higher is better.

Hand-written glue only: the statistics are :mod:`xaipipe.stats` (scipy), the correlations
pandas and scipy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaipipe import paths, stats
from xaipipe.evaluate.roar_summary import BASELINE as RANDOM
from xaipipe.evaluate.roar_summary import KIND_SIGN
from xaipipe.explain.oracle import ORACLE_METHODS
from xaipipe.io import read_json, unbits
from xaipipe.pipeline import STAGES, jobs
from xaipipe.seeds import named_seed

log = logging.getLogger(__name__)

EFFECT_COLUMNS = ["metric", "method", "variant", "baseline", "effect", "ci_low", "ci_high",
                  "p_value", "p_adjusted", "n_models", "n_images", "verdict"]
"""The contract of ``results/report/effects.csv`` (the report and later tools read it)."""
INTERVAL_COLUMNS = ["metric", "method", "variant", "mean", "ci_low", "ci_high", "n_models",
                    "n_images"]
CONTRAST_COLUMNS = ["method", "rho", "ci_low", "ci_high", "n_models", "n_valid"]
POINT_COLUMNS = ["method", "variant", "replicate", "background_reliance", "background_share"]
AGREEMENT_COLUMNS = ["metric_a", "metric_b", "tau", "n_cells"]
VALUE_COLUMNS = ["metric", "method", "variant", "replicate", "image", "value"]
MODEL = "model"
"""The ``method`` of metrics about the model itself (background-only accuracy)."""


@dataclass(frozen=True)
class Metric:
    """How a metric reads: ``higher_is_better`` (towards object-focused, faithful
    explanations), whether it is a ``headline`` metric of the synthesis, and what it is."""

    higher_is_better: bool
    headline: bool
    description: str


METRICS: dict[str, Metric] = {
    "energy_in_mask": Metric(True, True, "share of positive attribution inside the object mask"),
    "pointing_game": Metric(True, True, "the map's maximum lies on the object (strict)"),
    "bg_only_accuracy": Metric(False, True, "the model's accuracy on background-only images "
                               "(object imputed away): its reliance on the background"),
    "roar_score": Metric(True, True, "ROAR: random's retrained accuracy minus the method's, "
                         "mean over fractions (higher: the removed pixels mattered)"),
    "kar_score": Metric(True, True, "KAR: the method's retrained accuracy minus random's, "
                        "mean over fractions (higher: the kept pixels suffice)"),
    "road_score": Metric(True, False, "ROAD MoRF: random's accuracy minus the method's after "
                         "imputing the removed pixels, mean over fractions"),
}
"""Fixed metrics; SCG/CCG metrics (``scg_<kernel>_rho<r>``, ``ccg_...``) are added per setting
by :func:`metric_info` (higher is better, not headline)."""


def metric_info(name: str) -> Metric:
    """:data:`METRICS` entry, or the SCG/CCG entry of a confidence-gain setting."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith(("scg_", "ccg_")):
        return Metric(True, False, f"{name[:3].upper()} confidence gain ({name[4:]})")
    raise KeyError(f"unknown metric {name!r}")


def headline_metrics() -> list[str]:
    return [name for name, metric in METRICS.items() if metric.headline]


def _models(config: Mapping) -> list[tuple[str, int]]:
    return [(v, r) for v in config["variants"] for r in range(config["replicates"])]


def _read_parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None


def localisation_values(config: Mapping) -> pd.DataFrame:
    """Energy in mask and strict pointing game per (method, model, image), and the model's
    background-only correctness (``bg_only_accuracy``, method ``model``)."""
    frames = []
    for variant, replicate in _models(config):
        frame = _read_parquet(paths.localisation_images(config, variant, replicate=replicate))
        if frame is None:
            continue
        maps = frame[frame["metric"].isin(["energy_in_mask", "pointing_game"])]
        bg = frame[(frame["subject"] == MODEL) & (frame["metric"] == "accuracy_bg_only")]
        frames += [maps.rename(columns={"subject": "method", "image_id": "image"})
                   .assign(variant=variant, replicate=replicate),
                   bg.rename(columns={"subject": "method", "image_id": "image"})
                   .assign(variant=variant, replicate=replicate, metric="bg_only_accuracy")]
    return _concat(frames)


def confidence_gain_values(config: Mapping) -> pd.DataFrame:
    """SCG and CCG per (setting, method, model, image); NaN where the paper's rules exclude
    the image."""
    frames = []
    for variant, replicate in _models(config):
        frame = _read_parquet(paths.confidence_gain_images(config, variant, replicate=replicate))
        if frame is not None:
            frames.append(frame.rename(columns={"subject": "method", "image_id": "image"})
                          .assign(variant=variant, replicate=replicate))
    return _concat(frames)


def _mean_over_fractions(fractions: Sequence[float], gaps: np.ndarray) -> np.ndarray:
    """Per image (columns of ``gaps``, one row per fraction): the trapezoid mean over the
    fractions, as :func:`xaipipe.evaluate.roar_summary.mean_gap` does for whole curves."""
    order = np.argsort(fractions)
    f, g = np.asarray(fractions, float)[order], np.asarray(gaps, float)[order]
    return g[0] if len(f) == 1 else np.trapezoid(g, f, axis=0) / (f[-1] - f[0])


def _per_image_scores(curves: Mapping[tuple, dict[float, np.ndarray]], sign: float,
                      metric: str) -> list[pd.DataFrame]:
    """``curves[(variant, method, model_index)][fraction]`` = per-image correctness ->
    per-image gap to random's curve of the same (variant, model_index), mean over fractions."""
    frames = []
    for (variant, method, index), curve in curves.items():
        baseline = curves.get((variant, RANDOM, index))
        if method == RANDOM or baseline is None:
            continue
        fractions = sorted(curve)
        gaps = np.stack([sign * (curve[f].astype(float) - baseline[f].astype(float))
                         for f in fractions])
        values = _mean_over_fractions(fractions, gaps)
        frames.append(pd.DataFrame({"metric": metric, "method": method, "variant": variant,
                                    "replicate": index, "image": np.arange(values.size).astype(str),
                                    "value": values}))
    return frames


def roar_values(config: Mapping) -> pd.DataFrame:
    """ROAR and KAR scores per image: for retraining seed s (the maps of replicate s), the
    method's gap to random's retraining with the same seed, ROAR's and KAR's signs as in
    ``roar_scores.csv``, mean over the fractions."""
    curves: dict[str, dict[tuple, dict[float, np.ndarray]]] = {}
    for job in jobs(STAGES["roar"], config):
        if job["method"] in ORACLE_METHODS:  # the metric validation's, not compared here
            continue
        path = paths.roar_result(config, **job)
        if not path.is_file():
            continue
        result = read_json(path)
        if "correct" not in result:
            continue
        key = (job["variant"], job["method"], job["seed"])
        curves.setdefault(job["kind"], {}).setdefault(key, {})[job["fraction"]] = \
            unbits(result["correct"])
    return _concat([f for kind, kind_curves in curves.items()
                    for f in _per_image_scores(kind_curves, KIND_SIGN[kind], f"{kind}_score")])


def road_values(config: Mapping) -> pd.DataFrame:
    """ROAD MoRF scores per image and model: random's correctness minus the method's after
    imputation, mean over fractions (``road_scores.csv``'s sign)."""
    curves: dict[tuple, dict[float, np.ndarray]] = {}
    for job in jobs(STAGES["road"], config):
        if job["method"] in ORACLE_METHODS:
            continue
        path = paths.road_result(config, **job)
        if not path.is_file():
            continue
        for point in read_json(path)["curves"]:
            if point["order"] == "morf" and "correct" in point:
                key = (job["variant"], job["method"], job["replicate"])
                curves.setdefault(key, {})[point["fraction"]] = unbits(point["correct"])
    return _concat(_per_image_scores(curves, KIND_SIGN["roar"], "road_score"))


def image_values(config: Mapping) -> pd.DataFrame:
    """Every metric's per-image values (:data:`VALUE_COLUMNS`), from whatever the stages wrote."""
    frames = [localisation_values(config), confidence_gain_values(config), roar_values(config)]
    if config["roar"]["road"]:
        frames.append(road_values(config))
    values = _concat(frames)
    return values[~values["method"].isin(ORACLE_METHODS)].reset_index(drop=True)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and not f.empty]
    if not frames:
        return pd.DataFrame(columns=VALUE_COLUMNS)
    return pd.concat([f[VALUE_COLUMNS] for f in frames], ignore_index=True)


def matrices(values: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """(metric, method, variant) -> replicate x image matrix (NaN = excluded or absent). A
    model whose every image is excluded (e.g. no image passes SCG's rules) has no value and
    no row; a cell with no model left is left out."""
    out = {}
    for key, group in values.groupby(["metric", "method", "variant"], sort=False):
        matrix = group.pivot_table(index="replicate", columns="image", values="value",
                                   aggfunc="first", dropna=False).dropna(how="all")
        if not matrix.empty:
            out[key] = matrix
    return out


def _seed(config: Mapping, *parts: str) -> int:
    return named_seed(config, "effects/" + "/".join(parts))


def intervals(config: Mapping, cells: Mapping[tuple, pd.DataFrame]) -> pd.DataFrame:
    """:data:`INTERVAL_COLUMNS`: the hierarchical-bootstrap mean and CI of every cell."""
    settings = config["report"]
    rows = []
    for (metric, method, variant), matrix in cells.items():
        interval = stats.hierarchical_bootstrap(
            matrix.to_numpy(), n_boot=settings["bootstrap_resamples"],
            level=settings["ci_level"], seed=_seed(config, "interval", metric, method, variant))
        rows.append({"metric": metric, "method": method, "variant": variant,
                     "mean": interval.estimate, "ci_low": interval.ci_low,
                     "ci_high": interval.ci_high, "n_models": matrix.shape[0],
                     "n_images": int(matrix.notna().any(axis=0).sum())})
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def paired(variant: pd.DataFrame, baseline: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """The two replicate x image matrices on their shared images (by name): the images with
    a value on both sides, and the models with a value on one of those images; None when
    fewer than two images are left (no test can be made of one)."""
    images = variant.columns.union(baseline.columns)
    var_m, base_m = variant.reindex(columns=images), baseline.reindex(columns=images)
    while True:
        shared = var_m.notna().any(axis=0) & base_m.notna().any(axis=0)
        var_m, base_m = var_m.loc[:, shared], base_m.loc[:, shared]
        kept_var, kept_base = var_m.dropna(how="all"), base_m.dropna(how="all")
        if len(kept_var) == len(var_m) and len(kept_base) == len(base_m):
            break
        var_m, base_m = kept_var, kept_base
    if var_m.empty or base_m.empty or var_m.shape[1] < 2:
        return None
    return var_m.to_numpy(), base_m.to_numpy()


def effects(config: Mapping, cells: Mapping[tuple, pd.DataFrame],
            interpretable: Mapping[tuple[str, str], bool]) -> pd.DataFrame:
    """:data:`EFFECT_COLUMNS` for every variant against the baseline, on every metric and
    method both have (``random``, the reference of ROAR/KAR/ROAD, is not compared). ``interpretable[(metric, variant)]`` (default True) is the model-quality
    gate of that variant's numbers on that metric."""
    settings = config["report"]
    baseline = settings["effects_baseline"]
    rows = []
    for (metric, method, variant), matrix in cells.items():
        base = cells.get((metric, method, baseline))
        if variant == baseline or base is None or method == RANDOM:
            continue
        pair = paired(matrix, base)
        if pair is None:
            continue
        var_m, base_m = pair
        seed = _seed(config, "effect", metric, method, variant, baseline)
        interval = stats.paired_effect(var_m, base_m, n_boot=settings["bootstrap_resamples"],
                                       level=settings["ci_level"], seed=seed)
        p = stats.paired_permutation_test(var_m, base_m,
                                          n_resamples=settings["permutation_resamples"],
                                          seed=seed)
        rows.append({"metric": metric, "method": method, "variant": variant,
                     "baseline": baseline, "effect": interval.estimate,
                     "ci_low": interval.ci_low, "ci_high": interval.ci_high, "p_value": p,
                     "n_models": min(len(var_m), len(base_m)), "n_images": var_m.shape[1]})
    table = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS if c not in
                                        ("p_adjusted", "verdict")])
    table["p_adjusted"] = np.nan
    for _, family in table.groupby("metric", sort=False):
        table.loc[family.index, "p_adjusted"] = stats.holm(family["p_value"].to_numpy())
    table["verdict"] = [
        stats.verdict(r.effect, r.ci_low, r.ci_high, r.p_adjusted,
                      higher_is_better=metric_info(r.metric).higher_is_better,
                      alpha=settings["effect_alpha"])
        if interpretable.get((r.metric, r.variant), True)
        and interpretable.get((r.metric, baseline), True) else stats.INCONCLUSIVE
        for r in table.itertuples()]
    return table[EFFECT_COLUMNS]


def _chance(config: Mapping, variant: str, replicate: int) -> float:
    path = paths.model_metrics(config, variant, replicate=replicate)
    return float(read_json(path)["chance_accuracy"]) if path.is_file() else np.nan


def model_contrast(config: Mapping, values: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, points): per method, Spearman's rho between background reliance and
    background share over the models, with its bootstrap CI; and the per-model points."""
    per_model = (values.groupby(["metric", "method", "variant", "replicate"])["value"]
                 .mean().rename("value").reset_index())
    reliance = per_model[per_model["metric"] == "bg_only_accuracy"]
    reliance = reliance.assign(background_reliance=[
        v - _chance(config, variant, replicate)
        for v, variant, replicate in zip(reliance["value"], reliance["variant"],
                                         reliance["replicate"])])
    shares = per_model[(per_model["metric"] == "energy_in_mask")
                       & (per_model["method"] != RANDOM)]
    points = shares.assign(background_share=1.0 - shares["value"]).merge(
        reliance[["variant", "replicate", "background_reliance"]], on=["variant", "replicate"])
    points = points[POINT_COLUMNS].dropna()  # a model without metrics.json has no chance rate
    rows = []
    for method, group in points.groupby("method", sort=False):
        if len(group) < 3:
            continue
        interval = stats.spearman_bootstrap(
            group["background_reliance"].to_numpy(), group["background_share"].to_numpy(),
            n_boot=config["report"]["bootstrap_resamples"], level=config["report"]["ci_level"],
            seed=_seed(config, "contrast", method))
        rows.append({"method": method, "rho": interval.estimate, "ci_low": interval.ci_low,
                     "ci_high": interval.ci_high, "n_models": len(group),
                     "n_valid": interval.n_valid})
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS), points.reset_index(drop=True)


def metric_agreement(interval_table: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau between every pair of metrics over the (variant, method) cells they
    share, each metric's cell value oriented so that higher is better (the model-level
    ``bg_only_accuracy`` and ``random`` are left out: they do not vary with the method)."""
    cells = interval_table[(interval_table["method"] != MODEL)
                           & (interval_table["method"] != RANDOM)]
    if cells.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    sign = cells["metric"].map(lambda m: 1.0 if metric_info(m).higher_is_better else -1.0)
    wide = (cells.assign(value=sign * cells["mean"])
            .pivot_table(index=["variant", "method"], columns="metric", values="value"))
    tau = wide.corr(method="kendall")
    counts = wide.notna().astype(int).T @ wide.notna().astype(int)
    rows = [{"metric_a": a, "metric_b": b, "tau": tau.loc[a, b], "n_cells": int(counts.loc[a, b])}
            for i, a in enumerate(wide.columns) for b in wide.columns[i + 1:]]
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def gate(trained_ok: Mapping[str, bool], retrain_ok: Mapping[tuple[str, str], bool],
         metrics: Sequence[str], variants: Sequence[str]) -> dict[tuple[str, str], bool]:
    """The model-quality gate per (metric, variant): the variant's models, and for ROAR/KAR
    also that kind's retraining (:mod:`xaipipe.report.quality`)."""
    out = {}
    for metric in metrics:
        kind = metric.split("_")[0] if metric in ("roar_score", "kar_score") else None
        for variant in variants:
            out[metric, variant] = bool(trained_ok.get(variant, True)
                                        and (kind is None or retrain_ok.get((kind, variant), True)))
    return out


def effect_tables(config: Mapping, trained_ok: Mapping[str, bool],
                  retrain_ok: Mapping[tuple[str, str], bool]) -> dict[str, pd.DataFrame]:
    """``effects``, ``intervals``, ``model_contrast``, ``model_contrast_points`` and
    ``metric_agreement`` from the stages' per-image outputs."""
    values = image_values(config)
    cells = matrices(values)
    interval_table = intervals(config, cells)
    metrics = sorted({m for m, _, _ in cells})
    interpretable = gate(trained_ok, retrain_ok, metrics, list(config["variants"]))
    contrast, points = model_contrast(config, values)
    log.info("effects: %d cells of %d metrics, %d comparisons with %s", len(cells), len(metrics),
             sum(v != config["report"]["effects_baseline"] for _, _, v in cells),
             config["report"]["effects_baseline"])
    return {"effects": effects(config, cells, interpretable), "intervals": interval_table,
            "model_contrast": contrast, "model_contrast_points": points,
            "metric_agreement": metric_agreement(interval_table)}
