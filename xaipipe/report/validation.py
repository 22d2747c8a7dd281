"""The metric-validation table: does every metric rank the known-good explanation above
``random`` above the known-bad one?

Inputs (written by the stages, joined here by the ``aggregate`` stage): the ROAR/KAR
accuracy table and the ROAD scores of ``roar_summary`` (the oracle maps run there on the
``metric_validation.variants``), and the per-variant ``metric_validation`` tables (SCG, CCG,
energy in mask, pointing game). One row per (metric, variant) with the value of
``oracle_object``, ``random`` and ``oracle_background`` in the metric's own units:

====================== =============================================== =================
metric                 value                                           higher is better
====================== =============================================== =================
ROAR                   retrained accuracy, mean over fractions, seeds  no
KAR                    retrained accuracy, mean over fractions, seeds  yes
ROAD MoRF / ROAD LeRF  accuracy, mean over fractions                   no / yes
SCG / CCG <setting>    mean over images (per base kernel and rho)      yes
energy_in_mask         mean over images                                yes
pointing_game          mean over images                                yes
====================== =============================================== =================

"Mean over fractions" is the trapezoid mean of :func:`xaipipe.evaluate.roar_summary.mean_gap`
(the area under the curve divided by the fraction span), as for the ROAR scores.
``ordering_ok`` is ``oracle_object`` better than ``random`` better than
``oracle_background``, strictly, in the metric's direction; a missing value fails it. The
``*_std`` columns give each value's spread: over retraining seeds for ROAR/KAR, over images
for the others (``std_over``); ROAD has no spread (one noise stream).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONTRACT = ["metric", "variant", "oracle_object", "random", "oracle_background",
            "higher_is_better", "ordering_ok"]
SUBJECTS = ("oracle_object", "random", "oracle_background")
COLUMNS = CONTRACT + [f"{s}_std" for s in SUBJECTS] + ["std_over"]
STAGE_COLUMNS = ["variant", "metric", "method", "mean", "std", "n", "excluded"]
ROAR_RUN_COLUMNS = ["kind", "variant", "method", "fraction", "seed", "accuracy"]
ROAD_MEAN_COLUMNS = ["variant", "method", "mean_accuracy_morf", "mean_accuracy_lerf"]
ROAD_ORDERS = {"morf": "MoRF", "lerf": "LeRF"}


def _trapezoid_mean(fractions: pd.Series, values: pd.Series) -> float:
    order = np.argsort(fractions.to_numpy(dtype=float))
    f, v = fractions.to_numpy(dtype=float)[order], values.to_numpy(dtype=float)[order]
    return float(v[0]) if len(f) == 1 else float(np.trapezoid(v, f) / (f[-1] - f[0]))


def roar_rows(roar_runs: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """ROAR/KAR rows: per (kind, variant, method) the mean over seeds of each seed's
    trapezoid-mean accuracy over the fractions, and the std over seeds. ``roar_runs``: one
    row per run (kind, variant, method, fraction, seed, accuracy)."""
    runs = roar_runs[roar_runs["variant"].isin(variants) & roar_runs["method"].isin(SUBJECTS)]
    if runs.empty:
        return pd.DataFrame(columns=["metric", "variant", "method", "mean", "std"])
    per_seed = (runs.groupby(["kind", "variant", "method", "seed"])
                .apply(lambda g: _trapezoid_mean(g["fraction"], g["accuracy"]), include_groups=False)
                .rename("value").reset_index())
    out = (per_seed.groupby(["kind", "variant", "method"])["value"]
           .agg(mean="mean", std="std").reset_index())
    out["metric"] = out.pop("kind").str.upper()
    return out


def road_rows(road_scores: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """ROAD MoRF and LeRF rows from ``roar_summary``'s ``road_scores`` (no spread)."""
    rows = road_scores[road_scores["variant"].isin(variants) & road_scores["method"].isin(SUBJECTS)]
    parts = [rows[["variant", "method", f"mean_accuracy_{order}"]]
             .rename(columns={f"mean_accuracy_{order}": "mean"})
             .assign(metric=f"ROAD {label}", std=np.nan)
             for order, label in ROAD_ORDERS.items() if f"mean_accuracy_{order}" in rows]
    return (pd.concat(parts, ignore_index=True) if parts
            else pd.DataFrame(columns=["metric", "variant", "method", "mean", "std"]))


def over_replicates(stage: pd.DataFrame) -> pd.DataFrame:
    """The ``metric_validation`` stage rows of several replicate models as one row per
    (variant, metric, method): the mean of the models' means, and as ``std`` the std over the
    replicates when there are several (else the one model's std over images); ``n`` and
    ``excluded`` summed; ``std_over`` says which."""
    columns = [*STAGE_COLUMNS, "std_over"]
    if stage.empty:
        return pd.DataFrame(columns=columns)
    grouped = stage.groupby(["variant", "metric", "method"], sort=False)
    out = grouped.agg(mean=("mean", "mean"), n=("n", "sum"), excluded=("excluded", "sum"),
                      models=("replicate", "nunique"), image_std=("std", "first"),
                      model_std=("mean", "std")).reset_index()
    several = out["models"] > 1
    out["std"] = np.where(several, out["model_std"], out["image_std"])
    out["std_over"] = np.where(several, "replicates", "images")
    return out[columns]


def higher_is_better(metric: str) -> bool:
    """The direction of a validation metric (see the module docstring)."""
    return metric not in ("ROAR", "ROAD MoRF")


def ordering_ok(obj: float, rnd: float, bg: float, higher: bool) -> bool:
    """``obj`` better than ``rnd`` better than ``bg`` in the metric's direction (NaN fails)."""
    values = np.array([obj, rnd, bg], dtype=float)
    if not np.isfinite(values).all():
        return False
    if not higher:
        values = -values
    return bool(values[0] > values[1] > values[2])


def validation_table(*, roar_runs: pd.DataFrame, road_scores: pd.DataFrame,
                     stage_tables: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The ``metric_validation`` report table (:data:`COLUMNS`), ROAR, KAR and ROAD first."""
    stage = stage_tables[["variant", "metric", "method", "mean", "std"]]
    stage_spread = (dict(zip(zip(stage_tables["metric"], stage_tables["variant"]),
                             stage_tables["std_over"]))
                    if "std_over" in stage_tables else {})
    long = pd.concat([roar_rows(roar_runs, variants), road_rows(road_scores, variants), stage],
                     ignore_index=True)
    if long.empty:
        return pd.DataFrame(columns=COLUMNS)
    first = ["ROAR", "KAR", *(f"ROAD {label}" for label in ROAD_ORDERS.values())]
    rank = {m: i for i, m in enumerate(first + [m for m in dict.fromkeys(long["metric"])
                                                 if m not in first])}
    long = long.sort_values("metric", key=lambda col: col.map(rank), kind="stable")
    rows = []
    for (metric, variant), group in long.groupby(["metric", "variant"], sort=False):
        values = group.set_index("method")
        value = {s: float(values["mean"].get(s, np.nan)) for s in SUBJECTS}
        spread = {f"{s}_std": float(values["std"].get(s, np.nan)) for s in SUBJECTS}
        higher = higher_is_better(metric)
        rows.append({"metric": metric, "variant": variant, **value, "higher_is_better": higher,
                     "ordering_ok": ordering_ok(*value.values(), higher), **spread,
                     "std_over": "seeds" if metric in ("ROAR", "KAR") else
                                 "none" if metric.startswith("ROAD") else
                                 stage_spread.get((metric, variant), "images")})
    return pd.DataFrame(rows, columns=COLUMNS)
