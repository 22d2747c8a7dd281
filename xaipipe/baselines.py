"""What an accuracy must beat before anything downstream of it means something.

* **Uniform chance** ``1 / C``: a model that guesses.
* **Majority-class rate** of the evaluated split: a model that always answers the most
  frequent class. On VOC-like splits it is far above chance (always "person" is 22 % of a
  41-image val split where chance is 5 %), so it is the bar a classifier must clear.
* **Clearly above** a baseline: a one-sided exact binomial test of ``k`` correct out of ``n``
  against the baseline rate (``scipy.stats.binomtest``), significant at ``alpha``. With few
  images a model needs a wide margin; 0.88 on 41 images clears 0.22 easily, 0.29 does not.

These are the model-quality gate of the report (``docs/report.md``): numbers of a model that
is not clearly above its majority baseline are marked not interpretable.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def chance_rate(num_classes: int) -> float:
    """``1 / num_classes``."""
    return 1.0 / num_classes


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most frequent label in ``labels`` (NaN for an empty split)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def clearly_above(accuracy: float, n: int, baseline: float, alpha: float) -> bool:
    """Is ``accuracy`` on ``n`` images significantly above ``baseline`` (one-sided exact
    binomial test, level ``alpha``)? ``False`` when there are no images or no baseline."""
    if not n or not np.isfinite(accuracy) or not np.isfinite(baseline) or baseline >= 1:
        return False
    correct = int(round(accuracy * n))
    return bool(binomtest(correct, int(n), baseline, alternative="greater").pvalue < alpha)
