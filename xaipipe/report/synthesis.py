"""The report's opening: the answer to the research question, with its uncertainty.

"Does background removal make explanations more object-focused, and how sure are we?" --
per variant against the baseline, by which metrics (``effects.csv``: effect, 95 % CI,
Holm-adjusted p, verdict), drawn as a forest plot; then the model contrast (does each
method's background share follow the models' measured background reliance?) and the
agreement between metrics (Kendall's tau). Numbers are rounded to what their interval
supports (:func:`ci_decimals`), and every table names the CSV it comes from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xaipipe import paths, stats  # noqa: E402
from xaipipe.io import atomic_path  # noqa: E402
from xaipipe.report.effects import METRICS, headline_metrics, metric_info  # noqa: E402
from xaipipe.report.html import Section  # noqa: E402

FOREST_PLOT = "forest_plot.png"
CONTRAST_PLOT = "model_contrast.png"
AGREEMENT_PLOT = "metric_agreement.png"
VERDICT_COLOURS = {stats.MORE: "#1b7837", stats.LESS: "#b2182b", stats.INCONCLUSIVE: "#888888"}


def ci_decimals(low: float, high: float, default: int = 3) -> int:
    """Decimals that show an interval's half-width with two significant digits (a value
    known to +- 0.012 is shown as 0.731, not 0.73094118); ``default`` without a finite,
    positive width."""
    half = (high - low) / 2
    if not (math.isfinite(half) and half > 0):
        return default
    return max(0, 1 - math.floor(math.log10(half)))


def with_ci(value: float, low: float, high: float) -> str:
    """``value [low, high]`` rounded by :func:`ci_decimals`; ``–`` for a missing value."""
    if not math.isfinite(value):
        return "–"
    d = ci_decimals(low, high)
    interval = f" [{low:.{d}f}, {high:.{d}f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{value:.{d}f}{interval}"


def _p(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2g}" if value >= 1e-3 else "< 0.001"


def effects_display(effects: pd.DataFrame) -> pd.DataFrame:
    """``effects.csv`` as the report shows it: effect [CI] rounded to the CI, p rounded."""
    return pd.DataFrame({
        "metric": effects["metric"], "method": effects["method"], "variant": effects["variant"],
        "vs": effects["baseline"],
        "effect [95% CI]": [with_ci(*r) for r in
                            effects[["effect", "ci_low", "ci_high"]].itertuples(index=False)],
        "p": effects["p_value"].map(_p), "p (Holm)": effects["p_adjusted"].map(_p),
        "models": effects["n_models"], "images": effects["n_images"],
        "verdict": effects["verdict"]})


def variant_statements(effects: pd.DataFrame) -> list[str]:
    """One sentence per variant: which metrics call it more / less object-focused than the
    baseline (with effect and CI), and how many are inconclusive."""
    lines = []
    for variant, group in effects.groupby("variant", sort=False):
        baseline = group["baseline"].iloc[0]
        parts = []
        for verdict, word in ((stats.MORE, "MORE object-focused"), (stats.LESS, "LESS object-focused")):
            hits = group[group["verdict"] == verdict]
            if len(hits):
                parts.append(f"{word} than {baseline} by " + "; ".join(
                    f"{r.metric} ({r.method}: {with_ci(r.effect, r.ci_low, r.ci_high)})"
                    for r in hits.itertuples()))
        undecided = int((group["verdict"] == stats.INCONCLUSIVE).sum())
        parts.append(f"inconclusive on {undecided} of {len(group)} metric x method comparisons")
        lines.append(f"{variant}: " + "; ".join(parts) + ".")
    return lines


def _oriented(effects: pd.DataFrame) -> pd.DataFrame:
    """Effects turned so that positive = towards more object-focused (lower-is-better
    metrics flipped), with the headline metrics first."""
    sign = effects["metric"].map(lambda m: 1.0 if metric_info(m).higher_is_better else -1.0)
    lows, highs = sign * effects["ci_low"], sign * effects["ci_high"]
    order = {m: i for i, m in enumerate(headline_metrics())}
    return (effects.assign(improvement=sign * effects["effect"], low=np.minimum(lows, highs),
                           high=np.maximum(lows, highs),
                           rank=effects["metric"].map(lambda m: order.get(m, len(order))))
            .sort_values(["rank", "metric", "method"], kind="stable"))


def forest_plot(effects: pd.DataFrame, out: Path) -> Path:
    """One panel per variant, one row per (metric, method) of the metrics in
    :data:`xaipipe.report.effects.METRICS` (SCG/CCG, on another scale, stay in the table): the
    effect against the baseline turned towards "more object-focused", with its CI, coloured
    by verdict."""
    data = _oriented(effects[effects["metric"].isin(list(METRICS))])
    variants = list(dict.fromkeys(data["variant"]))
    rows = list(dict.fromkeys(zip(data["metric"], data["method"])))
    fig, axes = plt.subplots(1, len(variants), figsize=(4 + 3.2 * len(variants), 1 + 0.32 * len(rows)),
                             sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], variants):
        block = data[data["variant"] == variant]
        for _, r in block.iterrows():
            y = rows.index((r["metric"], r["method"]))
            colour = VERDICT_COLOURS[r["verdict"]]
            ax.plot([r["low"], r["high"]], [y, y], color=colour, lw=2)
            ax.plot(r["improvement"], y, "o", color=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{variant} vs {block['baseline'].iloc[0]}")
        ax.set_xlabel("effect towards object-focused\n(metric units, 95% CI)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [f"{m} ({k})" for m, k in rows])
    axes[0][0].invert_yaxis()
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2, label=v)
               for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def contrast_plot(points: pd.DataFrame, summary: pd.DataFrame, out: Path) -> Path:
    """Per method: background share of the attribution against the model's background
    reliance, one point per model (coloured by variant), rho [CI] in the title."""
    methods = list(dict.fromkeys(points["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(1 + 3.6 * len(methods), 3.6), squeeze=False)
    colours = {v: plt.cm.tab10(i) for i, v in enumerate(dict.fromkeys(points["variant"]))}
    for ax, method in zip(axes[0], methods):
        block = points[points["method"] == method]
        for variant, group in block.groupby("variant", sort=False):
            ax.scatter(group["background_reliance"], group["background_share"],
                       color=colours[variant], label=variant)
        row = summary[summary["method"] == method]
        rho = (f"rho {with_ci(*row[['rho', 'ci_low', 'ci_high']].iloc[0])}" if len(row)
               else "rho needs >= 3 models")
        ax.set(title=f"{method}\n{rho}", xlabel="background reliance\n(bg-only accuracy - chance)",
               ylabel="background share\n(1 - energy in mask)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def agreement_plot(agreement: pd.DataFrame, out: Path) -> Path:
    """Kendall's tau between every pair of metrics as a symmetric heat map."""
    names = list(dict.fromkeys([*agreement["metric_a"], *agreement["metric_b"]]))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for r in agreement.itertuples():
        matrix.loc[r.metric_a, r.metric_b] = matrix.loc[r.metric_b, r.metric_a] = r.tau
    fig, ax = plt.subplots(figsize=(2 + 0.6 * len(names), 1.5 + 0.5 * len(names)))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            value = matrix.iloc[i, j]
            ax.text(j, i, "–" if not np.isfinite(value) else f"{value:.2f}", ha="center",
                    va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="Kendall tau over (variant, method) cells")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def answer_section(config: Mapping, tables: Mapping[str, pd.DataFrame]) -> Section:
    """The opening section: per variant, more / less object-focused than the baseline, by
    which metrics, with the effect and its CI; the forest plot; the effects table."""
    baseline = config["report"]["effects_baseline"]
    section = Section(
        "The answer: is background removal more object-focused?",
        f"Each variant against {baseline} on every metric and attribution method: effect = "
        f"variant minus {baseline} (in the metric's units), "
        f"{100 * config['report']['ci_level']:g} % CI from a bootstrap over the "
        f"{config['replicates']} replicate models of each variant and the paired val images, "
        "p from a sign-flip permutation test over images (given the models), Holm-adjusted "
        "within each metric. A verdict needs both the CI to exclude 0 and the adjusted p below "
        f"{config['report']['effect_alpha']:g}; models failing the quality gate below are "
        "always inconclusive. Headline metrics: " + ", ".join(headline_metrics()) + ".")
    effects = tables["effects"]
    if effects.empty:
        section.missing(f"variant comparisons: effects need {baseline} and at least one other "
                        "variant among `variants`, and the per-image metric outputs")
        return section
    section.bullets(variant_statements(effects))
    section.figure(forest_plot(effects, paths.report_figures_dir(config) / FOREST_PLOT),
                   "Forest plot: effect towards more object-focused with its CI, per metric "
                   "and method (green: more object-focused, red: less, grey: inconclusive); "
                   "SCG/CCG, on their own scale, are in the table")
    section.table(effects_display(effects), source="effects.csv")
    return section


def contrast_section(config: Mapping, tables: Mapping[str, pd.DataFrame]) -> Section:
    """Model contrast: does each method's background share follow the models' reliance?"""
    section = Section(
        "Model contrast: do explanations follow the models?",
        "Every variant x replicate model's measured background reliance (background-only "
        "accuracy minus chance) is ground truth about that model (after BAM, Yang and Kim "
        "2019, on our paired variants). A method that explains models faithfully puts more "
        "attribution on the background of models that rely on it: Spearman's rho over the "
        "models, with a bootstrap CI, should be clearly positive.")
    summary, points = tables["model_contrast"], tables["model_contrast_points"]
    if points.empty:
        section.missing("model contrast (localisation stage outputs)")
        return section
    section.figure(contrast_plot(points, summary, paths.report_figures_dir(config) / CONTRAST_PLOT),
                   "Background share against background reliance, one point per model")
    shown = pd.DataFrame({"method": summary["method"],
                          "rho [95% CI]": [with_ci(*r) for r in summary[
                              ["rho", "ci_low", "ci_high"]].itertuples(index=False)],
                          "models": summary["n_models"], "valid resamples": summary["n_valid"]})
    section.table(shown, source="model_contrast.csv")
    section.table(points, "Per-model points", source="model_contrast_points.csv")
    return section


def agreement_section(config: Mapping, tables: Mapping[str, pd.DataFrame]) -> Section:
    """Kendall's tau between every pair of metrics over the (variant, method) cells."""
    section = Section(
        "Metric agreement",
        "Where do the metrics agree? Kendall's tau between every pair of metrics over the "
        "(variant, method) cells they share, each metric turned so that higher is better "
        "(intervals.csv holds every cell's mean and CI). With few cells (n_cells), tau is "
        "coarse: 4 cells allow only 7 values.")
    agreement = tables["metric_agreement"]
    if agreement.empty:
        section.missing("metric agreement (needs at least two metrics over shared cells)")
        return section
    section.figure(agreement_plot(agreement, paths.report_figures_dir(config) / AGREEMENT_PLOT),
                   "Kendall tau between metrics")
    section.table(agreement, source="metric_agreement.csv", float_format="{:.2f}")
    intervals = tables["intervals"]
    if not intervals.empty:
        section.table(pd.DataFrame({
            "metric": intervals["metric"], "method": intervals["method"],
            "variant": intervals["variant"],
            "mean [95% CI]": [with_ci(*r) for r in intervals[["mean", "ci_low", "ci_high"]]
                              .itertuples(index=False)],
            "models": intervals["n_models"], "images": intervals["n_images"]}),
            "Every cell: mean over replicate models of their image means, with its "
            "hierarchical-bootstrap CI", source="intervals.csv")
    return section
