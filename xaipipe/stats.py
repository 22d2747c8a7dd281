"""Statistics for comparing training variants: intervals, paired tests, multiplicity, verdicts.

The source paper states its findings without a test -- "The feature visualization results show
that the background removed images reveal a significant improvement over the baseline model"
and "there are no significant differences between any of the training accuracy scores" -- and
each of its variants is one trained model. This module gives such a statement numbers: the
design (DESIGN.md, *Replicates*) is "Every variant is R independently seeded models [...]
Variant comparisons are paired over images and replicates, reported as effect, 95 % CI
(hierarchical bootstrap) and Holm-adjusted p."

Data layout. For one metric, attribution method and variant, ``values`` is a float array of
shape ``R x N``: R replicate models (rows), N val images (columns), the same images in the same
order for every variant so that images are paired across variants. NaN marks an image the
metric excluded for that model. The *statistic* of such a matrix is the mean over replicates of
each replicate's mean over its non-NaN images (every model weighs the same however many images
it kept).

* :func:`hierarchical_bootstrap` -- the statistic with a percentile CI (models, then images).
* :func:`paired_effect` -- variant minus baseline with a CI (models apart, images paired).
* :func:`paired_permutation_test` -- a sign-flip test over images, given the trained models.
* :func:`holm` -- Holm's step-down adjustment within a family of p-values.
* :func:`spearman_bootstrap` -- Spearman's rho between two per-model quantities, with a CI.
* :func:`verdict` -- one of :data:`VERDICTS` from an effect, its CI and its adjusted p.

Kendall's tau between metrics needs no wrapper: ``frame.corr(method="kendall")`` (pandas) gives
tau-b over the rows both columns have (pairwise-complete).

Every random function takes a required keyword ``seed`` (an int or a ``numpy.random.Generator``)
and draws only from ``numpy.random.default_rng(seed)``: the same call gives the same numbers.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

MORE = "more object-focused"
LESS = "less object-focused"
INCONCLUSIVE = "inconclusive"
VERDICTS = (MORE, LESS, INCONCLUSIVE)

# Resampled values gathered per batch (bounds memory; the batch size is a function of the
# input shape only, so the random stream, and every result, is deterministic).
_GATHER_BUDGET = 4_000_000


class Interval(NamedTuple):
    """A point estimate with its percentile bootstrap interval.

    ``n_valid`` is how many resamples gave a finite statistic and entered the percentiles
    (resamples whose statistic is undefined -- a side with no image left, a constant side in a
    rank correlation -- are dropped); it is ``n_boot`` when none was dropped.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n_valid: int


def hierarchical_bootstrap(values, *, n_boot: int = 2000, level: float = 0.95,
                           seed: int | np.random.Generator) -> Interval:
    """The statistic of ``values`` (R x N) with a two-stage percentile bootstrap interval.

    Follows the design's "95 % CI (hierarchical bootstrap)" and issue #14's "resample
    replicates, then images within each": each resample draws R replicates with replacement,
    then, independently for every drawn replicate, N images with replacement from that
    replicate's row. With R = 1 this is the ordinary image bootstrap.

    Coverage of the 95 % interval, measured on simulated data (replicate effect sd s_m plus
    independent image noise whose variance in a replicate mean is v_e; N = 50, 400 data sets)::

        R     s_m^2 >> v_e    s_m^2 = v_e    s_m^2 << v_e
        3        0.76            0.93           0.95
        5        0.85            0.94           0.97
        10       0.91            0.97           1.00

    Resampling R replicates behaves like a z-interval from R points, too narrow when few
    models carry the variance (R = 3: 10 distinct replicate multisets); image noise enters
    twice (inside each drawn replicate's mean and again through the image resampling), which
    widens the interval when it dominates. tests/test_stats.py checks nominal coverage at
    R = 10 and the undercoverage at R = 3.
    """
    matrix = _replicate_matrix(values, "values")
    _check_resampling(n_boot=n_boot, level=level)
    rng = np.random.default_rng(seed)
    n_rep, n_img = matrix.shape
    filled, kept = _filled_and_kept(matrix)

    def draw(batch: int) -> np.ndarray:
        rows = rng.integers(0, n_rep, size=(batch, n_rep, 1))
        images = rng.integers(0, n_img, size=(batch, n_rep, n_img))
        return _resampled_statistic(filled, kept, rows, images)

    boot = _in_batches(draw, n_boot=n_boot, per_resample=n_rep * n_img)
    return _percentile_interval(_statistic(matrix), boot, level)


def paired_effect(variant, baseline, *, n_boot: int = 2000, level: float = 0.95,
                  seed: int | np.random.Generator) -> Interval:
    """Effect = statistic(variant) - statistic(baseline), with a percentile bootstrap interval.

    Issue #14: "the effect (difference), its 95 % CI [...] (images paired across variants,
    replicates as the outer level)". Each resample draws the variant's replicates and the
    baseline's replicates independently with replacement (they are different models), and
    one set of N image indices shared by every drawn replicate of both sides (the same image
    enters both sides, so image difficulty cancels in the difference).

    ``variant`` is Rv x N and ``baseline`` Rb x N; Rv and Rb may differ, N may not.

    Like :func:`hierarchical_bootstrap`, the interval is too narrow with few replicates when
    models carry the variance. Simulated with no variant effect (model sd 0.3, shared image
    effect sd 1, image noise sd 1, N = 200, 200 data sets), the 95 % interval excluded 0 in
    15.5 % of data sets at R = 3, 11 % at R = 5 and 4 % at R = 10.
    """
    var_matrix, base_matrix = _paired_matrices(variant, baseline)
    _check_resampling(n_boot=n_boot, level=level)
    rng = np.random.default_rng(seed)
    n_var, n_img = var_matrix.shape
    n_base = base_matrix.shape[0]
    var_filled, var_kept = _filled_and_kept(var_matrix)
    base_filled, base_kept = _filled_and_kept(base_matrix)

    def draw(batch: int) -> np.ndarray:
        var_rows = rng.integers(0, n_var, size=(batch, n_var, 1))
        base_rows = rng.integers(0, n_base, size=(batch, n_base, 1))
        images = rng.integers(0, n_img, size=(batch, 1, n_img))
        return (_resampled_statistic(var_filled, var_kept, var_rows, images)
                - _resampled_statistic(base_filled, base_kept, base_rows, images))

    boot = _in_batches(draw, n_boot=n_boot, per_resample=(n_var + n_base) * n_img)
    effect = _statistic(var_matrix) - _statistic(base_matrix)
    return _percentile_interval(effect, boot, level)


def paired_permutation_test(variant, baseline, *, n_resamples: int = 9999,
                            seed: int | np.random.Generator) -> float:
    """Two-sided p-value of a sign-flip permutation test over images.

    Per image: the variant's value averaged over its replicates minus the baseline's (NaN
    replicates ignored; an image with no value on either side is dropped). Null hypothesis:
    the distribution of this per-image difference is symmetric about 0, so its sign is
    exchangeable; the statistic is the mean difference. This is
    ``scipy.stats.permutation_test`` with ``permutation_type='samples'`` on one sample, which
    scipy defines as flipping the signs of the observations (exact when 2**N <= n_resamples).

    What it conditions on: the trained models. It asks whether *these* variant models differ
    from *these* baseline models on images like these; it does not see model-to-model
    variation (another seed could give another answer): in the no-effect simulation of
    :func:`paired_effect` it gave p < 0.05 for about 70 % of data sets, at every R. That
    variation enters through
    :func:`paired_effect`'s bootstrap over replicates, so a verdict needs both: the CI
    excluding 0 and the (Holm-adjusted) p-value below alpha -- see :func:`verdict`.
    """
    var_matrix, base_matrix = _paired_matrices(variant, baseline)
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    diff = _image_means(var_matrix) - _image_means(base_matrix)
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        raise ValueError("no image has a value on both sides (every image is NaN for all "
                         "replicates of the variant or of the baseline); the metric excluded "
                         "every image, so there is nothing to test")
    batch = max(1, _GATHER_BUDGET // (2 * diff.size))
    result = sps.permutation_test((diff,), _mean, permutation_type="samples",
                                  vectorized=True, n_resamples=int(n_resamples),
                                  alternative="two-sided", batch=batch,
                                  rng=np.random.default_rng(seed))
    return float(result.pvalue)


def holm(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input's order and shape.

    Issue #14: "Holm-adjusted within each metric family". With the m non-NaN p-values sorted
    ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)) (monotone, capped at
    1); NaN stays NaN and does not count in m. Hand-written: scipy offers only BH/BY
    (``scipy.stats.false_discovery_control``) and none of our dependencies has Holm.
    """
    p = np.asarray(p_values, dtype=float)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1] (or be NaN), got {p[finite].tolist()}")
    ranked = p[finite]
    order = np.argsort(ranked, kind="stable")
    m = ranked.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * ranked[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    out = np.full(p.shape, np.nan)
    out[finite] = adjusted
    return out


def spearman_bootstrap(x, y, *, n_boot: int = 2000, level: float = 0.95,
                       seed: int | np.random.Generator) -> Interval:
    """Spearman's rho between paired points (one per model), with a percentile bootstrap CI.

    For the model contrast of issue #14 (after BAM, where "we can calculate how important a
    feature is to model relative to another model"): x is each model's measured background
    reliance, y an attribution method's background share for that model. Resamples draw the
    points with replacement; a resample with a constant side has no rank correlation and is
    dropped (:attr:`Interval.n_valid` says how many remain). A constant side in the data
    itself gives NaN everywhere and ``n_valid = 0``.
    """
    xs, ys = _paired_points(x, y)
    _check_resampling(n_boot=n_boot, level=level)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        rho = float(sps.spearmanr(xs, ys).statistic)
        picks = rng.integers(0, xs.size, size=(n_boot, xs.size))
        boot = sps.pearsonr(sps.rankdata(xs[picks], axis=1),
                            sps.rankdata(ys[picks], axis=1), axis=1).statistic
    return _percentile_interval(rho, boot, level)


def verdict(effect: float, ci_low: float, ci_high: float, p_adjusted: float, *,
            higher_is_better: bool, alpha: float = 0.05) -> str:
    """One of :data:`VERDICTS` for a variant against the baseline on one metric.

    A direction only when both hold: the CI excludes 0 (model-to-model variation, see
    :func:`paired_effect`) and ``p_adjusted < alpha`` (the test given the models, see
    :func:`paired_permutation_test`); the effect must lie on the CI's side of 0. Otherwise, or
    with any NaN, "inconclusive". ``higher_is_better`` says whether a larger metric value means
    more object-focused (e.g. energy in the object mask) or a smaller one does (e.g. share of
    attribution on the background).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    numbers = np.array([effect, ci_low, ci_high, p_adjusted], dtype=float)
    if np.isnan(numbers).any() or p_adjusted >= alpha:
        return INCONCLUSIVE
    if ci_low > 0 and effect > 0:
        higher = True
    elif ci_high < 0 and effect < 0:
        higher = False
    else:
        return INCONCLUSIVE
    return MORE if higher == higher_is_better else LESS


# --- helpers -----------------------------------------------------------------------------------


def _replicate_matrix(values, name: str) -> np.ndarray:
    """``values`` as a float R x N matrix, or a ValueError that says what is wrong."""
    try:
        matrix = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric R x N array (replicates x images): {error}") from error
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array of shape R x N (replicate models "
                         f"x val images), got shape {matrix.shape}; for one model pass "
                         f"values[None, :]")
    if np.isinf(matrix).any():
        raise ValueError(f"{name} holds infinite values; mark an excluded image with NaN")
    empty = np.flatnonzero(np.isnan(matrix).all(axis=1))
    if empty.size:
        raise ValueError(f"{name}: replicate row(s) {empty.tolist()} are NaN for every image; "
                         f"a model with no value says nothing -- drop its row")
    return matrix


def _paired_matrices(variant, baseline) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as R x N matrices over the same N images."""
    var_matrix = _replicate_matrix(variant, "variant")
    base_matrix = _replicate_matrix(baseline, "baseline")
    if var_matrix.shape[1] != base_matrix.shape[1]:
        raise ValueError(f"variant has {var_matrix.shape[1]} images but baseline has "
                         f"{base_matrix.shape[1]}; both must hold the same val images in the "
                         f"same order (images are paired across variants)")
    return var_matrix, base_matrix


def _paired_points(x, y) -> tuple[np.ndarray, np.ndarray]:
    """x and y as equal-length finite 1-D arrays of at least 3 points."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"x and y must be 1-D arrays of the same length (one point per "
                         f"model), got shapes {xs.shape} and {ys.shape}")
    if xs.size < 3:
        raise ValueError(f"a rank correlation with a CI needs at least 3 points, got {xs.size}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite; drop the models with a missing value first")
    return xs, ys


def _check_resampling(*, n_boot: int, level: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95, got {level!r}")


def _filled_and_kept(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN replaced by 0, and 1.0 where a value is present: sums and counts by gathering."""
    kept = ~np.isnan(matrix)
    return np.where(kept, matrix, 0.0), kept.astype(float)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _image_means(matrix: np.ndarray) -> np.ndarray:
    """Per image, the mean over replicates that have a value (NaN if none has)."""
    filled, kept = _filled_and_kept(matrix)
    return _ratio(filled.sum(axis=0), kept.sum(axis=0))


def _statistic(matrix: np.ndarray) -> float:
    """Mean over replicates of each replicate's mean over its non-NaN images."""
    filled, kept = _filled_and_kept(matrix)
    return float(np.mean(_ratio(filled.sum(axis=1), kept.sum(axis=1))))


def _resampled_statistic(filled: np.ndarray, kept: np.ndarray, rows: np.ndarray,
                         images: np.ndarray) -> np.ndarray:
    """The statistic of each resample: ``rows`` (B x R' x 1) picks replicates, ``images``
    (B x R' x N or B x 1 x N) picks images. A drawn replicate with no image left is skipped; a
    resample with none left is NaN."""
    flat = rows * filled.shape[1] + images
    rep_means = _ratio(filled.ravel()[flat].sum(axis=2), kept.ravel()[flat].sum(axis=2))
    present = ~np.isnan(rep_means)
    return _ratio(np.where(present, rep_means, 0.0).sum(axis=1), present.sum(axis=1))


def _in_batches(draw, *, n_boot: int, per_resample: int) -> np.ndarray:
    """``draw(batch)`` repeated until ``n_boot`` resample statistics are collected."""
    batch = max(1, _GATHER_BUDGET // per_resample)
    sizes = [min(batch, n_boot - start) for start in range(0, n_boot, batch)]
    return np.concatenate([draw(size) for size in sizes])


def _percentile_interval(estimate: float, boot: np.ndarray, level: float) -> Interval:
    """Percentile interval of the finite bootstrap statistics (NaN if there are none)."""
    valid = boot[np.isfinite(boot)]
    if valid.size == 0:
        return Interval(float(estimate), np.nan, np.nan, 0)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(valid, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), int(valid.size))


def _mean(sample: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(sample, axis=axis)
