"""Aggregate ROAR / KAR runs and ROAD curves into tables, curves and a verdict per variant.

Hooker et al. 2019 (survey §4.4, steps 4-5) call an attribution method effective if it beats
the ``random`` baseline consistently. This module measures "beats" as a **score per method**:
the area between the method's accuracy-vs-fraction curve and random's (trapezoid rule over
``roar.fractions``), divided by the fraction span so it reads in accuracy units (the mean
accuracy gap; with a single fraction, the gap at it). Sign convention, positive = better:

* ROAR: ``score = area(random - method)``: positive = accuracy drops faster than random.
* KAR:  ``score = area(method - random)``: positive = keeping its top pixels keeps more accuracy.
* ROAD (MoRF, no retraining): ``score = area(random - method)`` like ROAR, so the two rankings
  are directly comparable (Spearman over methods per variant).

Scores are computed per seed, pairing seed ``s`` of a method with seed ``s`` of random (both
retrained with the same training seed), then reported as mean ± sample std over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xaipipe import paths  # noqa: E402
from xaipipe.errors import ConfigError, DataError  # noqa: E402
from xaipipe.explain.oracle import ORACLE_METHODS, REFERENCE_METHODS  # noqa: E402
from xaipipe.io import atomic_path, read_json  # noqa: E402
from xaipipe.pipeline import STAGES, jobs, roar_kinds  # noqa: E402

BASELINE = "random"
KEYS = ["kind", "variant", "method"]
RUN_FIELDS = ("accuracy", "n_val", "train_running_accuracy", "chance_accuracy",
              "majority_accuracy")
"""Per-run numbers kept in ``roar_runs.csv`` (the baselines beside every accuracy)."""


def _read_all(files: dict[tuple, Path], stage: str) -> list[dict]:
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(f"{len(missing)} {stage} result(s) missing:\n  {shown}\n"
                        f"run the {stage} stage for them first (snakemake runs it for you)")
    return [read_json(path) for path in files.values()]


def collect_roar(config: Mapping) -> pd.DataFrame:
    """One row per ROAR/KAR run of the configured grid (the oracle grid of the metric
    validation included): kind, variant, method, fraction, seed, accuracy. Raises
    :class:`DataError` listing the missing result files."""
    roar = config["roar"]
    if BASELINE not in roar["methods"]:
        raise ConfigError(f"roar.methods must include '{BASELINE}' (the baseline every method is "
                          f"compared with); got {roar['methods']}")
    files = {(j["kind"], j["variant"], j["method"], j["fraction"], j["seed"]):
             paths.roar_result(config, **j) for j in jobs(STAGES["roar"], config)}
    results = _read_all(files, "roar")
    return pd.DataFrame([{**dict(zip(KEYS + ["fraction", "seed"], key)),
                          **{field: r.get(field, np.nan) for field in RUN_FIELDS}}
                         for key, r in zip(files, results)])


def collect_road(config: Mapping) -> pd.DataFrame:
    """One row per ROAD curve point of every model: variant, method, replicate, order,
    fraction, accuracy."""
    files = {(j["variant"], j["method"], j["replicate"]): paths.road_result(config, **j)
             for j in jobs(STAGES["road"], config)}
    results = _read_all(files, "road")
    return pd.DataFrame([{"variant": v, "method": m, "replicate": rep, "order": row["order"],
                          "fraction": row["fraction"], "accuracy": row["accuracy"]}
                         for (v, m, rep), r in zip(files, results) for row in r["curves"]])


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """kind x variant x method x fraction -> mean, std (sample, over seeds) and n seeds, with
    the test split's chance and majority-class rates beside them when the runs have them."""
    table = (runs.groupby(KEYS + ["fraction"], sort=True)["accuracy"]
             .agg(mean="mean", std="std", n="count").reset_index())
    baselines = [c for c in ("chance_accuracy", "majority_accuracy") if c in runs]
    if baselines:
        table = table.merge(runs.groupby("variant")[baselines].first().reset_index(),
                            on="variant", how="left")
    return table


def mean_gap(fractions: np.ndarray, gap: np.ndarray) -> float:
    """Trapezoid area under ``gap`` over ``fractions`` divided by their span (the mean gap);
    with a single fraction, the gap itself."""
    order = np.argsort(fractions)
    fractions, gap = np.asarray(fractions, float)[order], np.asarray(gap, float)[order]
    if len(fractions) == 1:
        return float(gap[0])
    return float(np.trapezoid(gap, fractions) / (fractions[-1] - fractions[0]))


KIND_SIGN = {"roar": -1.0, "kar": 1.0}
"""ROAR: positive when the method's accuracy is *below* random's; KAR: when above."""


def _gap_scores(curves: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """Per ``group`` + method: :func:`mean_gap` of ``sign * (accuracy - random's accuracy)``;
    ``curves`` has columns ``group``, method, fraction, accuracy, sign."""
    baseline = curves[curves["method"] == BASELINE].drop(columns=["method", "sign"])
    joined = curves.merge(baseline, on=group + ["fraction"], suffixes=("", "_random"))
    joined["gap"] = joined["sign"] * (joined["accuracy"] - joined["accuracy_random"])
    return (joined.groupby(group + ["method"], sort=True)
            .apply(lambda g: mean_gap(g["fraction"].to_numpy(), g["gap"].to_numpy()),
                   include_groups=False)
            .rename("score").reset_index())


def roar_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """kind x variant x method -> score mean, std over seeds (paired with random's seed), n."""
    per_seed = _gap_scores(runs.assign(sign=runs["kind"].map(KIND_SIGN)),
                           ["kind", "variant", "seed"])
    return (per_seed.groupby(KEYS, sort=True)["score"]
            .agg(mean="mean", std="std", n="count").reset_index())


def road_scores(road: pd.DataFrame) -> pd.DataFrame:
    """variant x method -> ROAD MoRF score (ROAR's sign convention) plus the mean MoRF and
    LeRF accuracies (Rong et al. read LeRF above MoRF as a faithful ranking), each the mean
    over the variant's replicate models; ``score_std`` is the std over replicates and
    ``n_models`` their number."""
    morf = road[road["order"] == "morf"].drop(columns="order").assign(sign=KIND_SIGN["roar"])
    per_model = _gap_scores(morf, ["variant", "replicate"])
    means = (road.groupby(["variant", "method", "replicate", "order"])
             .apply(lambda g: mean_gap(g["fraction"].to_numpy(), g["accuracy"].to_numpy()),
                    include_groups=False)
             .unstack("order").add_prefix("mean_accuracy_").reset_index())
    per_model = per_model.merge(means, on=["variant", "method", "replicate"])
    accuracies = [c for c in per_model if c.startswith("mean_accuracy_")]
    grouped = per_model.groupby(["variant", "method"], sort=True)
    return (grouped[["score", *accuracies]].mean()
            .join(grouped["score"].agg(score_std="std", n_models="count"))
            .reset_index())


def ranking_agreement(scores: pd.DataFrame, road: pd.DataFrame) -> pd.DataFrame:
    """Per variant: Spearman correlation between the ROAR and ROAD scores over the
    configured methods (the oracle maps of the metric validation left out)."""
    joined = scores[scores["kind"] == "roar"].merge(road, on=["variant", "method"],
                                                    suffixes=("_roar", "_road"))
    joined = joined[~joined["method"].isin(ORACLE_METHODS)]
    rows = []
    for variant, group in joined.groupby("variant", sort=True):
        rho = group["mean"].corr(group["score"], method="spearman") if len(group) > 1 else np.nan
        rows.append({"variant": variant, "spearman": rho, "n_methods": len(group)})
    return pd.DataFrame(rows, columns=["variant", "spearman", "n_methods"])


def verdict(row: Mapping) -> str:
    """One sentence for a method's score: beats / within spread of / worse than random.

    "Beats" needs ``mean - std > 0``, "worse" ``mean + std < 0``; with one seed (no std),
    the sign alone decides and the sentence says so.
    """
    mean, std, n = row["mean"], row["std"], int(row["n"])
    spread = 0.0 if np.isnan(std) else std
    numbers = (f"{abs(mean):.3f} ± {std:.3f} over {n} seeds" if not np.isnan(std)
               else f"{abs(mean):.3f} (1 seed, no spread)")
    if mean - spread > 0:
        word = "beats random by"
    elif mean + spread < 0:
        word = "is worse than random by"
    else:
        return f"{row['method']} is within the seed spread of random ({mean:+.3f} ± {spread:.3f})"
    return f"{row['method']} {word} {numbers}"


def roar_verdicts(scores: pd.DataFrame) -> list[str]:
    """One line per (variant, kind, attribution method): "<variant>: <verdict> (ROAR)";
    random and the oracle maps are references, not methods, and get no line."""
    rows = (scores[~scores["method"].isin(REFERENCE_METHODS)]
            .sort_values(["variant", "kind", "method"]))
    return [f"{row['variant']}: {verdict(row)} ({row['kind'].upper()})" for _, row in rows.iterrows()]


def verdict_text(scores: pd.DataFrame, agreement: pd.DataFrame | None) -> str:
    """Markdown: per variant, per kind, one verdict line per non-random method."""
    lines = ["# ROAR / KAR summary", "",
             "Score = mean accuracy gap to the random baseline over the fractions; positive = "
             "better than random (ROAR: accuracy drops faster; KAR: accuracy kept better).", ""]
    for variant, group in scores.groupby("variant", sort=True):
        lines += [f"## {variant}", ""]
        for kind, kind_rows in group.groupby("kind", sort=True):
            for _, row in kind_rows[~kind_rows["method"].isin(REFERENCE_METHODS)].iterrows():
                lines.append(f"- {verdict(row)} ({kind.upper()})")
        if agreement is not None:
            match = agreement[agreement["variant"] == variant]
            if len(match):
                rho, n = match["spearman"].iloc[0], int(match["n_methods"].iloc[0])
                lines.append(f"- ROAR vs ROAD ranking agreement: Spearman {rho:.2f} over {n} methods"
                             if not np.isnan(rho) else
                             f"- ROAR vs ROAD ranking agreement: undefined over {n} methods "
                             "(tied scores in one of them)")
        lines.append("")
    return "\n".join(lines)


FRACTION_LABELS = {("roar", "removed"): "fraction of pixels removed (most relevant first)",
                   ("roar", "kept"): "fraction of pixels removed (most relevant first)",
                   ("kar", "removed"): "fraction of pixels removed (least relevant first)",
                   ("kar", "kept"): "fraction of pixels kept (most relevant)"}
"""x-axis of a curve per (kind, ``roar.kar_fraction``)."""


def plot_curves(table: pd.DataFrame, kind: str, variant: str, path: Path,
                kar_fraction: str = "removed") -> None:
    """Accuracy vs fraction, one line per method, random dashed, the oracle maps (metric
    validation) dotted, ±std shaded."""
    rows = table[(table["kind"] == kind) & (table["variant"] == variant)]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, curve in rows.groupby("method", sort=True):
        curve = curve.sort_values("fraction")
        std = curve["std"].fillna(0.0)
        style = "--" if method == BASELINE else ":" if method in ORACLE_METHODS else "-"
        line, = ax.plot(curve["fraction"], curve["mean"], style, marker="o", label=method)
        ax.fill_between(curve["fraction"], curve["mean"] - std, curve["mean"] + std,
                        color=line.get_color(), alpha=0.15)
    for column, style, label in (("chance_accuracy", "--", "chance"),
                                 ("majority_accuracy", ":", "majority class")):
        if column in rows and rows[column].notna().any():
            ax.axhline(float(rows[column].iloc[0]), color="grey", linestyle=style, lw=1,
                       label=label)
    ax.set(xlabel=FRACTION_LABELS[kind, kar_fraction], ylabel="test accuracy (retrained)",
           title=f"{kind.upper()} - {variant}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(config: Mapping) -> Path:
    """Read every result of the grid and write ``paths.roar_summary_dir`` atomically:
    ``roar_runs.csv`` (one row per run), ``roar_table.csv``, ``roar_scores.csv``,
    ``curves_<kind>_<variant>.png``, ``summary.md`` and, when ``roar.road``,
    ``road_table.csv``, ``road_scores.csv``, ``agreement.csv``."""
    runs = collect_roar(config)
    road = collect_road(config) if config["roar"]["road"] else None
    table = accuracy_table(runs)
    scores = roar_scores(runs)
    road_score = road_scores(road) if road is not None else None
    agreement = ranking_agreement(scores, road_score) if road is not None else None
    out = paths.roar_summary_dir(config)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        runs.to_csv(tmp / "roar_runs.csv", index=False)
        table.to_csv(tmp / "roar_table.csv", index=False)
        scores.to_csv(tmp / "roar_scores.csv", index=False)
        for kind in roar_kinds(config):
            for variant in config["variants"]:
                plot_curves(table, kind, variant, tmp / f"curves_{kind}_{variant}.png",
                            config["roar"]["kar_fraction"])
        if road is not None:
            road.to_csv(tmp / "road_table.csv", index=False)
            road_score.to_csv(tmp / "road_scores.csv", index=False)
            agreement.to_csv(tmp / "agreement.csv", index=False)
        (tmp / "summary.md").write_text(verdict_text(scores, agreement))
    return out
