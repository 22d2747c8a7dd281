"""The ``metric_validation`` stage: the metrics that need the trained model and no retraining
(SCG, CCG, energy in mask, pointing game), scored on the oracle maps and ``random``.

A metric is only trustworthy if it ranks a known-good explanation above a known-bad one.
:mod:`xaipipe.explain.oracle` gives both from the segmentation masks: ``oracle_object``
(the object) and ``oracle_background`` (everything else). On a model for which the object
is the only cue (``metric_validation.variants``, default ``black``) every metric must order
them ``oracle_object`` > ``random`` > ``oracle_background`` in its own direction.

The scores come from the same functions and the same images as the metric stages
(:func:`xaipipe.evaluate.confidence_gain.score_masks`,
:func:`xaipipe.evaluate.localisation.method_rows`), so a failure here is a failure of those
stages. ROAR, KAR and ROAD of the oracles run in their own stages (the ``oracle`` entry of
each stage's ``extra_grids`` in :mod:`xaipipe.pipeline`); ``xaipipe.report.validation`` joins
everything into
``results/report/metric_validation.csv``.
"""

from __future__ import annotations

import logging
from typing import Mapping

import pandas as pd

from xaipipe import paths
from xaipipe.evaluate.confidence_gain import mask_sets, score_masks
from xaipipe.evaluate.localisation import method_rows
from xaipipe.explain.oracle import ORACLE_METHODS
from xaipipe.io import atomic_path
from xaipipe.report.aggregate import gain_setting

log = logging.getLogger(__name__)

METHODS = (*ORACLE_METHODS, "random")
COLUMNS = ["variant", "metric", "method", "mean", "std", "n", "excluded"]


def confidence_gain_rows(table: pd.DataFrame) -> list[dict]:
    """Tidy rows of a :func:`score_masks` table of single, undilated masks."""
    rows = []
    for _, row in table.iterrows():
        for metric in ("scg", "ccg"):
            n = int(row[f"n_{metric}"])
            rows.append({"variant": row["variant"], "method": row["mask"],
                         "metric": f"{metric.upper()} {gain_setting(row['kernel'], row['rho'])}",
                         "mean": row[f"{metric}_mean"], "std": row[f"{metric}_std"], "n": n,
                         "excluded": int(row["n_images"]) - n})
    return rows


def run_metric_validation(config: Mapping, variant: str, *, replicate: int) -> pd.DataFrame:
    """Score :data:`METHODS` on one model (replicate ``replicate`` of ``variant``); write
    ``paths.metric_validation_table``."""
    methods = list(METHODS)
    gain, _ = score_masks(config, variant, methods, mask_sets(methods, agreement=False),
                          replicate=replicate)
    local = [r for r in method_rows(config, variant, methods, replicate=replicate)
             if r["subject"] in methods]
    rows = confidence_gain_rows(gain) + [
        {"variant": r["variant"], "metric": r["metric"], "method": r["subject"], "mean": r["mean"],
         "std": r["std"], "n": r["n"], "excluded": r["excluded"]} for r in local]
    table = pd.DataFrame(rows, columns=COLUMNS)
    out = paths.metric_validation_table(config, variant, replicate=replicate)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%s rep%d: metric validation of %s -> %s", variant, replicate, ", ".join(methods),
             out)
    return table
