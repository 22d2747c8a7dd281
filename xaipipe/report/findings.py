"""Auto-generated findings: which variant is most object-focused by each metric -- or why no
variant can be named.

Each finding reduces one aggregate table to one number per variant (a mean over the
attribution methods, excluding the reference maps -- ``random`` and the oracle maps -- and the
baseline rows), with its **spread** where the table has one and the **baseline** the value
must beat to mean anything:

============================ ============================================ =====================
metric                       spread                                       baseline
============================ ============================================ =====================
energy in mask, pointing     standard error over images                   the untrained model's
game                         (std / sqrt(n), combined over methods)       value, at least chance
background-only accuracy     binomial standard error                      none (lower = better)
ROAR / KAR score             mean std over seeds                          0 (= random)
SCG / CCG per base kernel    standard error over images                   the ``random`` mask
undesirable background share standard error over images of the          the background's area
                             per-image share (infinite below 2 images)    share
============================ ============================================ =====================

A variant can be named only if its model is interpretable (the model-quality gate,
:mod:`xaipipe.report.quality`) and its value is on the right side of its baseline. The best
eligible value wins only if it is clear of the runner-up by more than the larger of their
spreads, and differs from it at the three significant digits shown; otherwise the finding says
"no clear winner" and why. Every variant's value is listed either way. SCG and CCG are
reported per base kernel, never averaged over G_k and Z_k: a zero base puts the object on
black, which is the ``black`` model's own training distribution. Hand-written: a few pandas
group-bys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from xaipipe import paths
from xaipipe.explain.oracle import REFERENCE_METHODS
from xaipipe.report.aggregate import KERNEL_LABELS

BASELINE_SUBJECTS = {"chance", "majority", "model"}
EXCLUDED_SUBJECTS = {*REFERENCE_METHODS, *BASELINE_SUBJECTS}
BG_ONLY_FILLS = {"impute": "filled from the surrounding background by linear imputation",
                 "black": "set to black"}
UNTRAINED = "untrained"
FRAME_COLUMNS = ["variant", "value", "spread", "baseline"]

Tables = dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Metric:
    """One finding: ``per_variant`` maps the aggregate tables to a frame with columns
    ``variant``, ``value``, ``spread`` and ``baseline`` (NaN where there is none);
    ``meaning`` is the text, or a function of the tables that writes it (when it depends on
    the run's settings)."""

    label: str
    higher_is_focused: bool
    meaning: str | Callable[[Tables], str]
    per_variant: Callable[[Tables], pd.DataFrame]

    def describe(self, tables: Tables) -> str:
        return self.meaning(tables) if callable(self.meaning) else self.meaning


def _combined_se(std: pd.Series, n: pd.Series) -> float:
    """Standard error of the mean of several independent means (std / sqrt(n) each)."""
    se = (std / np.sqrt(n.clip(lower=1))).to_numpy(dtype=float)
    se = se[np.isfinite(se)]
    return float(np.sqrt((se ** 2).sum()) / len(se)) if len(se) else np.nan


def _localisation(metric: str) -> Callable[[Tables], pd.DataFrame]:
    def per_variant(tables: Tables) -> pd.DataFrame:
        frame = tables["localisation"]
        frame = frame[frame["metric"] == metric]
        methods = frame[~frame["subject"].isin(EXCLUDED_SUBJECTS)]
        untrained = methods[methods["variant"] == UNTRAINED]
        chance = frame.loc[frame["subject"] == "chance", "mean"]
        rows = []
        for variant, group in methods[methods["variant"] != UNTRAINED].groupby("variant", sort=False):
            same = untrained[untrained["subject"].isin(group["subject"])]
            floor = [chance.mean()] + ([same["mean"].mean()] if len(same) else [])
            missing = pd.Series(np.nan, index=group.index)
            rows.append({"variant": variant, "value": group["mean"].mean(),
                         "spread": _combined_se(group.get("std", missing), group.get("n", missing)),
                         "baseline": np.nanmax(floor)})
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)
    return per_variant


def _bg_only(tables: Tables) -> pd.DataFrame:
    frame = tables["table1"]
    frame = frame[frame["variant"] != paths.REFERENCE_MODEL]
    p = frame["bg_only_acc"] / 100
    n = frame["n_val"] if "n_val" in frame else pd.Series(np.nan, index=frame.index)
    return pd.DataFrame({"variant": frame["variant"], "value": frame["bg_only_acc"],
                         "spread": 100 * np.sqrt(p * (1 - p) / n), "baseline": np.nan})


def bg_only_meaning(tables: Tables) -> str:
    """The background-only finding's wording, naming the fill the train stage used."""
    fills = [f for f in dict.fromkeys(tables["table1"].get("bg_only_fill", pd.Series(dtype=str))
                                      .dropna()) if f in BG_ONLY_FILLS]
    how = " or ".join(f"{BG_ONLY_FILLS[f]} ({f})" for f in fills) or "removed"
    return (f"accuracy (%) on val images whose object pixels are {how}; lower = less "
            "reliance on background")


def _roar(kind: str) -> Callable[[Tables], pd.DataFrame]:
    def per_variant(tables: Tables) -> pd.DataFrame:
        frame = tables["roar_scores"]
        rows = frame[(frame["kind"] == kind) & ~frame["method"].isin(EXCLUDED_SUBJECTS)]
        out = (rows.groupby("variant", sort=False)
               .agg(value=("mean", "mean"), spread=("std", "mean")).reset_index())
        return out.assign(baseline=0.0)
    return per_variant


def _confidence_gain(metric: str, kernel: str) -> Callable[[Tables], pd.DataFrame]:
    """Mean over single methods (each at its smallest heat-map dilation, 0 = the raw map the
    other metrics score) and over rho, for one base ``kernel``; baseline: ``random``'s."""
    def per_variant(tables: Tables) -> pd.DataFrame:
        frame = tables["confidence_gain"]
        label = KERNEL_LABELS[kernel]
        columns = [c for c in frame.columns if c.startswith(f"{label} ") and c.endswith(f" {metric}")]
        if not columns:
            return pd.DataFrame(columns=FRAME_COLUMNS)
        singles = frame[frame["kind"] == "single"]
        dilation = pd.to_numeric(singles["dilation"], errors="coerce")
        singles = singles[dilation == dilation.groupby([singles["variant"], singles["mask"]])
                          .transform("min")]
        rows = []
        for variant, group in singles.groupby("variant", sort=False):
            methods = group[~group["mask"].isin(EXCLUDED_SUBJECTS)]
            random = group.loc[group["mask"] == "random", columns]
            std = [methods.get(f"{c} std", pd.Series(np.nan, index=methods.index)) for c in columns]
            n = [methods.get(f"{c} n", pd.Series(np.nan, index=methods.index)) for c in columns]
            cells, random_cells = methods[columns].to_numpy(float), random.to_numpy(float)
            rows.append({"variant": variant,  # cells where every image was excluded are NaN
                         "value": np.nanmean(cells) if np.isfinite(cells).any() else np.nan,
                         "spread": _combined_se(pd.concat(std), pd.concat(n)),
                         "baseline": np.nanmean(random_cells) if np.isfinite(random_cells).any()
                         else np.nan})
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)
    return per_variant


def _background_share(tables: Tables) -> pd.DataFrame:
    frame = tables["phi"]
    columns = [c for c in ("background_share_ftc", "background_share_fntc") if c in frame]
    rows = frame.dropna(subset=columns, how="all")
    baseline = rows["background_fraction"] if "background_fraction" in rows else np.nan
    spread = rows["background_share_se"] if "background_share_se" in rows else np.nan
    return pd.DataFrame({"variant": rows["variant"], "value": rows[columns].mean(axis=1),
                         "spread": spread, "baseline": baseline})


METRICS = (
    Metric("Energy in mask", True, "share of positive attribution inside the object mask, "
           "mean over methods", _localisation("energy_in_mask")),
    Metric("Pointing game", True, "share of images whose attribution maximum lies on the object, "
           "mean over methods", _localisation("pointing_game")),
    Metric("Background-only accuracy", False, bg_only_meaning, _bg_only),
    Metric("ROAR score vs random", True, "mean accuracy gap to random when removing the top "
           "pixels and retraining, mean over methods (± mean seed std)", _roar("roar")),
    Metric("KAR score vs random", True, "mean accuracy gap to random when removing the "
           "least relevant pixels and retraining, mean over methods (± mean seed std)",
           _roar("kar")),
    *(Metric(f"{name} ({label} base)", True, f"{long} x 100 with the {base} base image, mean "
             "over single methods (raw heat maps) and rho", _confidence_gain(name, kernel))
      for name, long in (("SCG", "simple confidence gain"), ("CCG", "concise confidence gain"))
      for kernel, label, base in (("gaussian", "G_k", "blurred"), ("zero", "Z_k", "black"))),
    Metric("Undesirable background share", False, "share of undesirable pixels on the "
           "background (Kang et al.), mean of F-TC and F-NTC; lower = fewer background "
           "pixels hurt the prediction", _background_share),
)


def _format(value: float, spread: float | None) -> str:
    text = f"{value + 0.0:.3g}"  # + 0.0: no "-0"
    if spread is not None and np.isinf(spread):
        text += " ± ∞"  # too few units to tell anything apart
    elif spread is not None and np.isfinite(spread):
        text += f" ± {spread:.2g}"
    return text


def interpretable_variants(tables: Tables) -> dict[str, bool]:
    """variant -> passes the model-quality gate (Table I's ``interpretable``; True when the
    table has no such column)."""
    frame = tables.get("table1", pd.DataFrame())
    if "interpretable" not in frame:
        return {}
    return dict(zip(frame["variant"], frame["interpretable"].astype(bool)))


def variant_values(metric: Metric, tables: Tables) -> pd.DataFrame:
    """``metric``'s per-variant values (columns :data:`FRAME_COLUMNS` plus ``interpretable``)
    with non-finite values dropped (empty when the table it needs is not available)."""
    try:
        values = metric.per_variant(tables)
    except KeyError:
        return pd.DataFrame(columns=[*FRAME_COLUMNS, "interpretable"])
    for column in FRAME_COLUMNS[1:]:
        values[column] = pd.to_numeric(values.get(column, np.nan), errors="coerce")
    ok = interpretable_variants(tables)
    if metric.label.startswith(("ROAR", "KAR")) and "interpretable" in tables["roar_scores"]:
        scores = tables["roar_scores"]
        kind = "roar" if metric.label.startswith("ROAR") else "kar"
        flagged = scores[scores["kind"] == kind].groupby("variant")["interpretable"].all()
        ok = {**ok, **flagged.astype(bool).to_dict()}
    values["interpretable"] = values["variant"].map(lambda v: ok.get(v, True)).astype(bool)
    return values[np.isfinite(values["value"])].reset_index(drop=True)


def _beats_baseline(value: float, baseline: float, higher: bool) -> bool:
    if not np.isfinite(baseline):
        return True
    return value > baseline if higher else value < baseline


def best_variant(metric: Metric, tables: Tables) -> str | None:
    """The most object-focused variant by ``metric``, or ``None`` when none can be named:
    nothing available, no interpretable variant on the right side of its baseline, or a
    tie with the runner-up (see the module docstring)."""
    return _decide(metric, variant_values(metric, tables))[0]


def _decide(metric: Metric, values: pd.DataFrame) -> tuple[str | None, str]:
    """``(winner or None, why there is none)``."""
    if values.empty:
        return None, "not available"
    higher = metric.higher_is_focused
    eligible = values[values["interpretable"] & np.array(
        [_beats_baseline(v, b, higher) for v, b in zip(values["value"], values["baseline"])],
        dtype=bool)]
    if eligible.empty:
        if not values["interpretable"].any():
            return None, "no variant's model is interpretable (model quality)"
        return None, "no interpretable variant beats its baseline"
    ranked = eligible.sort_values("value", ascending=not higher, kind="stable")
    if len(ranked) == 1:
        return str(ranked["variant"].iloc[0]), ""
    first, second = ranked.iloc[0], ranked.iloc[1]
    spread = np.nanmax([first["spread"], second["spread"], 0.0])
    tied = (f"{first['value']:.3g}" == f"{second['value']:.3g}"
            or abs(first["value"] - second["value"]) <= spread)
    if tied:
        return None, (f"{first['variant']} and {second['variant']} are within the spread "
                      f"({_format(first['value'], first['spread'])} vs "
                      f"{_format(second['value'], second['spread'])})")
    return str(first["variant"]), ""


def _listing(values: pd.DataFrame, higher: bool) -> str:
    parts = []
    for row in values.itertuples():
        text = f"{row.variant} {_format(row.value, row.spread)}"
        notes = []
        if not row.interpretable:
            notes.append("model not interpretable")
        elif not _beats_baseline(row.value, row.baseline, higher):
            notes.append(f"not {'above' if higher else 'below'} its baseline {row.baseline:.3g}")
        elif np.isfinite(row.baseline):
            notes.append(f"baseline {row.baseline:.3g}")
        parts.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(parts)


def finding(metric: Metric, tables: Tables) -> str:
    """One sentence naming the most object-focused variant by ``metric`` -- or saying why
    none can be named -- and every variant's value with its spread and baseline."""
    values = variant_values(metric, tables)
    best, why = _decide(metric, values)
    if values.empty:
        return f"{metric.label}: not available."
    direction = "highest" if metric.higher_is_focused else "lowest"
    listing = _listing(values, metric.higher_is_focused)
    if best is None:
        return (f"{metric.label}: no clear winner: {why} ({direction} = more object-focused; "
                f"{metric.describe(tables)}): {listing}.")
    return (f"{metric.label}: {best} is most object-focused ({direction} {metric.describe(tables)}): "
            f"{listing}.")


def findings(tables: Tables) -> list[str]:
    """One finding per :data:`METRICS` entry, in that order."""
    return [finding(metric, tables) for metric in METRICS]
