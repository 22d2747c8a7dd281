"""Auto-generated findings: which variant is most object-focused by each metric.

Each finding reduces one aggregate table to one number per variant (a mean over the
attribution methods, excluding the ``random`` baseline and the ``chance`` row), picks the
best variant in the metric's direction and states every variant's value, with the spread
over seeds where the table has seeds (ROAR/KAR). Hand-written: a few pandas group-bys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

BASELINES = {"random", "chance", "model"}


@dataclass(frozen=True)
class Metric:
    """One finding: ``per_variant`` maps the aggregate tables to a frame with columns
    ``variant``, ``value`` and optionally ``spread``."""

    label: str
    higher_is_focused: bool
    meaning: str
    per_variant: Callable[[dict[str, pd.DataFrame]], pd.DataFrame]


def _localisation(metric: str) -> Callable[[dict[str, pd.DataFrame]], pd.DataFrame]:
    def per_variant(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        frame = tables["localisation"]
        rows = frame[(frame["metric"] == metric) & ~frame["subject"].isin(BASELINES)]
        return rows.groupby("variant", sort=False)["mean"].mean().rename("value").reset_index()
    return per_variant


def _bg_only(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return tables["table1"][["variant", "bg_only_acc"]].rename(columns={"bg_only_acc": "value"})


def _roar(kind: str) -> Callable[[dict[str, pd.DataFrame]], pd.DataFrame]:
    def per_variant(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        frame = tables["roar_scores"]
        rows = frame[(frame["kind"] == kind) & ~frame["method"].isin(BASELINES)]
        return (rows.groupby("variant", sort=False)
                .agg(value=("mean", "mean"), spread=("std", "mean")).reset_index())
    return per_variant


def _confidence_gain(metric: str) -> Callable[[dict[str, pd.DataFrame]], pd.DataFrame]:
    def per_variant(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        frame = tables["confidence_gain"]
        columns = [c for c in frame.columns if c.endswith(f" {metric}")]
        if not columns:
            return pd.DataFrame(columns=["variant", "value"])
        rows = frame[(frame["kind"] == "single") & ~frame["mask"].isin(BASELINES)]
        values = rows[columns].mean(axis=1).rename("value")
        return values.groupby(rows["variant"], sort=False).mean().reset_index()
    return per_variant


def _background_share(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frame = tables["phi"]
    columns = [c for c in ("background_share_ftc", "background_share_fntc") if c in frame]
    rows = frame.dropna(subset=columns, how="all")
    return pd.DataFrame({"variant": rows["variant"], "value": rows[columns].mean(axis=1)})


METRICS = (
    Metric("Energy in mask", True, "share of positive attribution inside the object mask, "
           "mean over methods", _localisation("energy_in_mask")),
    Metric("Pointing game", True, "share of images whose attribution maximum lies on the object, "
           "mean over methods", _localisation("pointing_game")),
    Metric("Background-only accuracy", False, "accuracy (%) on val images with the object "
           "blacked out; lower = less reliance on background", _bg_only),
    Metric("ROAR score vs random", True, "mean accuracy gap to random when removing the top "
           "pixels and retraining, mean over methods (± mean seed std)", _roar("roar")),
    Metric("KAR score vs random", True, "mean accuracy gap to random when keeping only the "
           "top pixels and retraining, mean over methods (± mean seed std)", _roar("kar")),
    Metric("SCG", True, "sufficient confidence gain x 100, mean over single methods, kernels "
           "and rho", _confidence_gain("SCG")),
    Metric("CCG", True, "comprehensive confidence gain x 100, mean over single methods, "
           "kernels and rho", _confidence_gain("CCG")),
    Metric("Undesirable background share", False, "share of undesirable pixels on the "
           "background (Kang et al.), mean of F-TC and F-NTC; lower = fewer background "
           "pixels hurt the prediction", _background_share),
)


def _format(value: float, spread: float | None) -> str:
    text = f"{value:.3g}"
    if spread is not None and np.isfinite(spread):
        text += f" ± {spread:.2g}"
    return text


def variant_values(metric: Metric, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``metric``'s per-variant values with non-finite ones dropped (empty when the table
    it needs was not available)."""
    try:
        values = metric.per_variant(tables)
    except KeyError:
        return pd.DataFrame(columns=["variant", "value"])
    return values[np.isfinite(pd.to_numeric(values["value"], errors="coerce"))]


def best_variant(metric: Metric, tables: dict[str, pd.DataFrame]) -> str | None:
    """The most object-focused variant by ``metric``, or ``None`` when not available."""
    values = variant_values(metric, tables)
    if values.empty:
        return None
    index = values["value"].idxmax() if metric.higher_is_focused else values["value"].idxmin()
    return str(values.loc[index, "variant"])


def finding(metric: Metric, tables: dict[str, pd.DataFrame]) -> str:
    """One sentence naming the most object-focused variant by ``metric`` and every value."""
    values = variant_values(metric, tables)
    best = best_variant(metric, tables)
    if best is None:
        return f"{metric.label}: not available."
    spread = values["spread"] if "spread" in values else pd.Series(np.nan, index=values.index)
    listing = ", ".join(f"{row.variant} {_format(row.value, spread[i])}"
                        for i, row in values.iterrows())
    direction = "highest" if metric.higher_is_focused else "lowest"
    return (f"{metric.label}: {best} is most object-focused ({direction} {metric.meaning}): "
            f"{listing}.")


def findings(tables: dict[str, pd.DataFrame]) -> list[str]:
    """One finding per :data:`METRICS` entry, in that order."""
    return [finding(metric, tables) for metric in METRICS]
