"""The model-quality gate: which models' numbers mean anything.

A number about a model's explanations is interpretable only if the model learned the task.
The bar is the majority-class rate of the split it is evaluated on
(:mod:`xaipipe.baselines`), not uniform chance: a model that always answers "person" is at
22 % on a VOC val split where chance is 5 %.

* **Trained models** (Table I rows, the variants and the reference model): interpretable when
  their val accuracy is clearly above the val split's majority-class rate (one-sided exact
  binomial test at ``report.quality_alpha``). Every downstream number of a variant --
  localisation, SCG/CCG, phi, sanity, featvis metrics, ROAD, metric validation, its ROAR/KAR
  maps -- inherits the flag.
* **ROAR/KAR retraining** of a (kind, variant): interpretable when the retraining can learn
  the task at all: the ``random`` maps' retrained accuracy at the least destructive fraction
  (ROAR: the smallest removed; KAR: the smallest removed, or with ``roar.kar_fraction: kept``
  the largest kept), pooled over seeds, is clearly above the test split's majority rate. If
  even that retraining does not beat "always the majority class", the gaps between methods
  are gaps between failed trainings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xaipipe.baselines import clearly_above

TABLE1_REQUIRED = ["variant", "val_acc", "majority_acc", "n_val"]


def model_quality(models: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per trained model (a row of ``models``: ``variant``, ``replicate``, ``val_acc``,
    ``majority_acc`` in %, ``n_val``): ``variant, replicate, interpretable, reason``."""
    rows = []
    for _, row in models.iterrows():
        accuracy, majority = row.get("val_acc", np.nan) / 100, row.get("majority_acc", np.nan) / 100
        n = int(row["n_val"]) if pd.notna(row.get("n_val")) else 0
        ok = clearly_above(accuracy, n, majority, alpha)
        reason = "" if ok else (
            f"val accuracy {100 * accuracy:.1f} % on {n} images is not clearly above the "
            f"majority-class rate {100 * majority:.1f} % (one-sided binomial test, alpha {alpha:g})")
        rows.append({"variant": row["variant"], "replicate": row.get("replicate", 0),
                     "interpretable": ok, "reason": reason})
    return pd.DataFrame(rows, columns=["variant", "replicate", "interpretable", "reason"])


def variant_quality(models: pd.DataFrame) -> dict[str, bool]:
    """A variant is interpretable when every one of its replicate models is
    (:func:`model_quality` rows)."""
    return {variant: bool(group["interpretable"].all())
            for variant, group in models.groupby("variant", sort=False)}


def retrain_quality(runs: pd.DataFrame, alpha: float, kar_fraction: str = "removed") -> pd.DataFrame:
    """Per (kind, variant) of ``roar_runs``: ``kind, variant, interpretable, reason``."""
    rows = []
    columns = ["kind", "variant", "interpretable", "reason"]
    if runs.empty or "majority_accuracy" not in runs:
        return pd.DataFrame(columns=columns)
    for (kind, variant), group in runs[runs["method"] == "random"].groupby(["kind", "variant"]):
        keep_most = group["fraction"].max() if kind == "kar" and kar_fraction == "kept" \
            else group["fraction"].min()
        best = group[group["fraction"] == keep_most]
        n = int(best["n_val"].sum())
        accuracy = float((best["accuracy"] * best["n_val"]).sum() / n) if n else np.nan
        majority = float(best["majority_accuracy"].iloc[0])
        ok = clearly_above(accuracy, n, majority, alpha)
        reason = "" if ok else (
            f"{kind.upper()} retrains with random maps at fraction {keep_most:g} reach "
            f"{100 * accuracy:.1f} % ({len(best)} seeds, {n} test images), not clearly above "
            f"the majority-class rate {100 * majority:.1f} %")
        rows.append({"kind": kind, "variant": variant, "interpretable": ok, "reason": reason})
    return pd.DataFrame(rows, columns=columns)


def flag_variants(frame: pd.DataFrame, ok: dict[str, bool]) -> pd.DataFrame:
    """``frame`` with an ``interpretable`` column from its ``variant`` (unknown: True, e.g.
    the paper's rows and the untrained baseline)."""
    if "variant" not in frame or frame.empty:
        return frame.assign(interpretable=pd.Series(dtype=bool))
    return frame.assign(interpretable=frame["variant"].map(lambda v: ok.get(v, True)).astype(bool))
