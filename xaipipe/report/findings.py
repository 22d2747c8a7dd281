"""Auto-generated findings: which variant is most object-focused by each metric.

Each finding reduces one aggregate table to one number per variant (a mean over the
attribution methods, excluding the reference maps -- ``random`` and the oracle maps -- and the
``chance`` row), picks the best variant in the metric's direction and states every variant's
value, with the spread over seeds where the table has seeds (ROAR/KAR). SCG and CCG are
reported per base kernel, never averaged over G_k and Z_k: a zero base puts the object on
black, which is the ``black`` model's own training distribution, so the two kernels measure
different things across variants. Hand-written: a few pandas group-bys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from xaipipe.explain.oracle import REFERENCE_METHODS
from xaipipe.report.aggregate import KERNEL_LABELS

BASELINES = {*REFERENCE_METHODS, "chance", "model"}
BG_ONLY_FILLS = {"impute": "filled from the surrounding background by linear imputation",
                 "black": "set to black"}


@dataclass(frozen=True)
class Metric:
    """One finding: ``per_variant`` maps the aggregate tables to a frame with columns
    ``variant``, ``value`` and optionally ``spread``; ``meaning`` is the text, or a function
    of the tables that writes it (when it depends on the run's settings)."""

    label: str
    higher_is_focused: bool
    meaning: str | Callable[[dict[str, pd.DataFrame]], str]
    per_variant: Callable[[dict[str, pd.DataFrame]], pd.DataFrame]

    def describe(self, tables: dict[str, pd.DataFrame]) -> str:
        return self.meaning(tables) if callable(self.meaning) else self.meaning


def _localisation(metric: str) -> Callable[[dict[str, pd.DataFrame]], pd.DataFrame]:
    def per_variant(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        frame = tables["localisation"]
        rows = frame[(frame["metric"] == metric) & ~frame["subject"].isin(BASELINES)]
        return rows.groupby("variant", sort=False)["mean"].mean().rename("value").reset_index()
    return per_variant


def _bg_only(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return tables["table1"][["variant", "bg_only_acc"]].rename(columns={"bg_only_acc": "value"})


def bg_only_meaning(tables: dict[str, pd.DataFrame]) -> str:
    """The background-only finding's wording, naming the fill the train stage used."""
    fills = [f for f in dict.fromkeys(tables["table1"].get("bg_only_fill", pd.Series(dtype=str))
                                      .dropna()) if f in BG_ONLY_FILLS]
    how = " or ".join(f"{BG_ONLY_FILLS[f]} ({f})" for f in fills) or "removed"
    return (f"accuracy (%) on val images whose object pixels are {how}; lower = less "
            "reliance on background")


def _roar(kind: str) -> Callable[[dict[str, pd.DataFrame]], pd.DataFrame]:
    def per_variant(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        frame = tables["roar_scores"]
        rows = frame[(frame["kind"] == kind) & ~frame["method"].isin(BASELINES)]
        return (rows.groupby("variant", sort=False)
                .agg(value=("mean", "mean"), spread=("std", "mean")).reset_index())
    return per_variant


def _confidence_gain(metric: str, kernel: str) -> Callable[[dict[str, pd.DataFrame]], pd.DataFrame]:
    """Mean over single methods (each at its smallest heat-map dilation, 0 = the raw map the
    other metrics score) and over rho, for one base ``kernel``."""
    def per_variant(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        frame = tables["confidence_gain"]
        label = KERNEL_LABELS[kernel]
        columns = [c for c in frame.columns if c.startswith(f"{label} ") and c.endswith(f" {metric}")]
        if not columns:
            return pd.DataFrame(columns=["variant", "value"])
        rows = frame[(frame["kind"] == "single") & ~frame["mask"].isin(BASELINES)]
        dilation = pd.to_numeric(rows["dilation"], errors="coerce")
        rows = rows[dilation == dilation.groupby([rows["variant"], rows["mask"]]).transform("min")]
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
    Metric("Background-only accuracy", False, bg_only_meaning, _bg_only),
    Metric("ROAR score vs random", True, "mean accuracy gap to random when removing the top "
           "pixels and retraining, mean over methods (± mean seed std)", _roar("roar")),
    Metric("KAR score vs random", True, "mean accuracy gap to random when keeping only the "
           "top pixels and retraining, mean over methods (± mean seed std)", _roar("kar")),
    *(Metric(f"{name} ({label} base)", True, f"{long} x 100 with the {base} base image, mean "
             "over single methods (raw heat maps) and rho", _confidence_gain(name, kernel))
      for name, long in (("SCG", "simple confidence gain"), ("CCG", "concise confidence gain"))
      for kernel, label, base in (("gaussian", "G_k", "blurred"), ("zero", "Z_k", "black"))),
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
    return (f"{metric.label}: {best} is most object-focused ({direction} {metric.describe(tables)}): "
            f"{listing}.")


def findings(tables: dict[str, pd.DataFrame]) -> list[str]:
    """One finding per :data:`METRICS` entry, in that order."""
    return [finding(metric, tables) for metric in METRICS]
