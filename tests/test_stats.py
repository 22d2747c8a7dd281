"""xaipipe.stats: bootstrap intervals, the paired permutation test, Holm, Spearman, verdicts.

Simulated data follow the layout the pipeline feeds: R replicate models x N val images, a
per-model effect plus per-image noise; tolerances are binomial (3 standard deviations)."""

import numpy as np
import pytest
from scipy import stats as sps

from xaipipe.stats import (INCONCLUSIVE, LESS, MORE, hierarchical_bootstrap, holm,
                           paired_effect, paired_permutation_test, spearman_bootstrap, verdict)

pytestmark = pytest.mark.filterwarnings("error")  # NaN handling must not leak RuntimeWarnings


def simulate(rng, *, replicates, images, model_sd, noise_sd, shift=0.0, image_effects=None):
    """R x N values: shift + model effect (one per row) + shared image effect + noise."""
    values = shift + rng.normal(0, model_sd, (replicates, 1)) + rng.normal(0, noise_sd, (replicates, images))
    return values if image_effects is None else values + image_effects


def coverage(*, replicates, model_sd, noise_sd, data_sets=200, images=50):
    """Share of simulated data sets (true mean 0) whose 95 % interval holds 0."""
    rng = np.random.default_rng(replicates)
    hits = 0
    for k in range(data_sets):
        values = simulate(rng, replicates=replicates, images=images, model_sd=model_sd, noise_sd=noise_sd)
        result = hierarchical_bootstrap(values, n_boot=500, seed=k)
        hits += result.ci_low <= 0 <= result.ci_high
    return hits / data_sets


def binomial_band(rate, n):
    half = 3 * np.sqrt(rate * (1 - rate) / n)
    return rate - half, rate + half


# --- hierarchical bootstrap ----------------------------------------------------------------------


def test_statistic_weighs_every_replicate_equally_and_skips_nan():
    values = [[1.0, 2.0, np.nan], [3.0, 5.0, 7.0]]  # replicate means 1.5 and 5
    assert hierarchical_bootstrap(values, n_boot=50, seed=0).estimate == pytest.approx(3.25)
    effect = paired_effect(values, [[0.0, 1.0, 2.0]], n_boot=50, seed=0)
    assert effect.estimate == pytest.approx(3.25 - 1.0)


def test_one_replicate_is_the_image_bootstrap():
    values = np.random.default_rng(3).exponential(size=80)
    ours = hierarchical_bootstrap(values[None, :], n_boot=4000, seed=1)
    scipy_ci = sps.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                             rng=np.random.default_rng(2)).confidence_interval
    width = scipy_ci.high - scipy_ci.low
    assert ours.ci_low == pytest.approx(scipy_ci.low, abs=0.1 * width)
    assert ours.ci_high == pytest.approx(scipy_ci.high, abs=0.1 * width)
    assert ours.n_valid == 4000


def test_ci_covers_the_true_mean_at_the_nominal_rate_with_ten_replicates():
    # model variance 1, image noise variance in a replicate mean 25/50 = 0.5
    low, high = binomial_band(0.95, 200)
    assert low <= coverage(replicates=10, model_sd=1.0, noise_sd=5.0) <= high


def test_ci_undercovers_with_three_replicates_when_models_carry_the_variance():
    # documented in hierarchical_bootstrap: three models give a too narrow interval
    assert coverage(replicates=3, model_sd=1.0, noise_sd=1.0) < 0.85


def test_paired_effect_pairs_images_so_image_difficulty_cancels():
    rng = np.random.default_rng(4)
    difficulty = rng.normal(0, 1, (1, 200))
    baseline = simulate(rng, replicates=3, images=200, model_sd=0.0, noise_sd=0.01, image_effects=difficulty)
    variant = simulate(rng, replicates=3, images=200, model_sd=0.0, noise_sd=0.01, shift=0.1,
                       image_effects=difficulty)
    effect = paired_effect(variant, baseline, seed=0)
    assert effect.ci_low < 0.1 < effect.ci_high
    assert effect.ci_high - effect.ci_low < 0.01  # unpaired, difficulty alone would give ~0.4


def test_verdict_needs_the_ci_because_the_test_conditions_on_the_models():
    # no variant effect, but every model is shifted by its own seed: the six models differ
    # consistently on every image, so the test (given these models) rejects, while the
    # bootstrap over replicates sees that another seed moves the mean as much
    rng = np.random.default_rng(5)
    variant = simulate(rng, replicates=3, images=100, model_sd=0.0, noise_sd=0.05) + [[-1.0], [0.0], [1.3]]
    baseline = simulate(rng, replicates=3, images=100, model_sd=0.0, noise_sd=0.05) + [[-1.2], [0.0], [1.0]]
    p_value = paired_permutation_test(variant, baseline, n_resamples=999, seed=0)
    effect = paired_effect(variant, baseline, seed=0)
    assert p_value < 0.01
    assert effect.ci_low < 0 < effect.ci_high
    assert verdict(*effect[:3], p_value, higher_is_better=True) == INCONCLUSIVE


# --- permutation test ----------------------------------------------------------------------------


def test_permutation_test_flips_signs_exactly_on_a_hand_computed_case():
    # differences 1, 2, 3: of the 2**3 sign patterns only +++ reaches mean 2, only --- reaches -2
    assert paired_permutation_test([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]], seed=0) == pytest.approx(2 / 8)


def test_permutation_test_is_uniform_under_the_null():
    rng = np.random.default_rng(6)
    p_values = []
    for k in range(300):
        difficulty = rng.normal(0, 1, (1, 40))
        variant, baseline = (simulate(rng, replicates=3, images=40, model_sd=0.0, noise_sd=1.0,
                                      image_effects=difficulty) for _ in range(2))
        p_values.append(paired_permutation_test(variant, baseline, n_resamples=999, seed=k))
    p_values = np.array(p_values)
    assert sps.kstest(p_values, "uniform").pvalue > 0.01
    low, high = binomial_band(0.05, 300)
    assert low <= np.mean(p_values < 0.05) <= high


def test_permutation_test_rejects_a_planted_effect():
    rng = np.random.default_rng(7)
    rejections = 0
    for k in range(50):
        baseline = simulate(rng, replicates=3, images=40, model_sd=0.0, noise_sd=1.0)
        variant = simulate(rng, replicates=3, images=40, model_sd=0.0, noise_sd=1.0, shift=0.5)
        rejections += paired_permutation_test(variant, baseline, n_resamples=999, seed=k) < 0.05
    assert rejections >= 45  # power ~0.97 at t ~ 3.9


def test_permutation_test_drops_images_without_a_value_on_either_side():
    rng = np.random.default_rng(8)
    variant, baseline = rng.normal(size=(2, 20)), rng.normal(size=(3, 20))
    variant[:, 4] = np.nan  # image 4: no variant value -> dropped
    variant[0, 7] = np.nan  # image 7: averaged over the other variant replicate
    kept = np.delete(np.arange(20), 4)
    with_nan = paired_permutation_test(variant, baseline, n_resamples=999, seed=1)
    without = paired_permutation_test(variant[:, kept], baseline[:, kept], n_resamples=999, seed=1)
    assert with_nan == without


# --- Holm ----------------------------------------------------------------------------------------


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])  # m = 2
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


# --- Spearman ------------------------------------------------------------------------------------


def test_spearman_on_a_planted_monotone_relation_is_one():
    reliance = np.random.default_rng(9).uniform(0, 1, 12)
    share = np.exp(5 * reliance)  # monotone, far from linear
    result = spearman_bootstrap(reliance, share, seed=0)
    assert result.estimate == 1.0
    assert result.ci_low == pytest.approx(1.0) and result.ci_high == pytest.approx(1.0)
    assert spearman_bootstrap(reliance, -share, seed=0).estimate == -1.0


def test_spearman_drops_resamples_with_a_constant_side():
    y = np.random.default_rng(10).normal(size=6)
    all_constant = spearman_bootstrap(np.zeros(6), y, n_boot=200, seed=0)
    assert np.isnan(all_constant.estimate) and np.isnan(all_constant.ci_low) and all_constant.n_valid == 0
    one_differs = spearman_bootstrap([0, 0, 0, 0, 0, 1.0], y, n_boot=2000, seed=0)
    # a resample misses the single 1 with probability (5/6)**6 = 0.33
    assert 0.6 * 2000 < one_differs.n_valid < 0.74 * 2000
    assert -1 <= one_differs.ci_low <= one_differs.ci_high <= 1


# --- verdict -------------------------------------------------------------------------------------


@pytest.mark.parametrize("effect, low, high, p, higher_is_better, expected", [
    (0.2, 0.1, 0.3, 0.01, True, MORE),
    (0.2, 0.1, 0.3, 0.01, False, LESS),
    (-0.2, -0.3, -0.1, 0.01, True, LESS),
    (-0.2, -0.3, -0.1, 0.01, False, MORE),
    (0.2, -0.1, 0.3, 0.01, True, INCONCLUSIVE),   # CI holds 0
    (0.2, 0.1, 0.3, 0.05, True, INCONCLUSIVE),    # p not below alpha
    (0.2, 0.1, 0.3, np.nan, True, INCONCLUSIVE),  # no test
    (-0.1, 0.1, 0.3, 0.01, True, INCONCLUSIVE),   # effect off the CI's side
])
def test_verdict(effect, low, high, p, higher_is_better, expected):
    assert verdict(effect, low, high, p, higher_is_better=higher_is_better) == expected


# --- determinism and bad input -------------------------------------------------------------------


def test_same_seed_same_numbers():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(3, 60)), rng.normal(size=(2, 60))
    calls = [lambda seed: hierarchical_bootstrap(a, n_boot=300, seed=seed),
             lambda seed: paired_effect(a, b, n_boot=300, seed=seed),
             lambda seed: paired_permutation_test(a, b, n_resamples=300, seed=seed),
             lambda seed: spearman_bootstrap(a[0], b[0], n_boot=300, seed=seed)]
    for call in calls:
        assert call(1) == call(1)
        assert call(1) != call(2)


@pytest.mark.parametrize("call, message", [
    (lambda: hierarchical_bootstrap(np.zeros(5), seed=0), "2-D array of shape R x N"),
    (lambda: hierarchical_bootstrap(np.zeros((2, 3, 4)), seed=0), "2-D array of shape R x N"),
    (lambda: hierarchical_bootstrap(np.zeros((0, 4)), seed=0), "non-empty"),
    (lambda: hierarchical_bootstrap([[1.0, np.inf]], seed=0), "infinite"),
    (lambda: hierarchical_bootstrap([[1.0, 2.0], [np.nan, np.nan]], seed=0), r"row\(s\) \[1\]"),
    (lambda: hierarchical_bootstrap(np.zeros((2, 4)), level=95, seed=0), "level"),
    (lambda: hierarchical_bootstrap(np.zeros((2, 4)), n_boot=0, seed=0), "n_boot"),
    (lambda: paired_effect(np.zeros((3, 10)), np.zeros((3, 9)), seed=0), "10 images but baseline has 9"),
    (lambda: paired_permutation_test(np.zeros((3, 10)), np.zeros((3, 9)), seed=0), "same val images"),
    (lambda: paired_permutation_test([[1.0, np.nan]], [[np.nan, 1.0]], seed=0), "no image"),
    (lambda: spearman_bootstrap([1, 2, 3], [1, 2], seed=0), "same length"),
    (lambda: spearman_bootstrap([1, 2], [1, 2], seed=0), "at least 3"),
    (lambda: spearman_bootstrap([1, 2, np.nan], [1, 2, 3], seed=0), "finite"),
    (lambda: verdict(0.1, 0.0, 0.2, 0.01, higher_is_better=True, alpha=5), "alpha"),
])
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
