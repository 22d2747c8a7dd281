"""The variant comparisons of the report (xaipipe.report.effects, xaipipe.report.synthesis):
hand-computed per-image scores, planted effects ranked and gated, Holm within a metric, the
model contrast on a planted monotone relation, metric agreement, rounding to the CI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaipipe import paths, stats
from xaipipe.config import validate_config
from xaipipe.io import write_json
from xaipipe.report import effects
from xaipipe.report.synthesis import ci_decimals, variant_statements, with_ci

CONFIG = validate_config({"report": {"bootstrap_resamples": 500, "permutation_resamples": 499}})


def cells_from(values: dict[tuple[str, str, str], np.ndarray]) -> dict:
    """(metric, method, variant) -> R x N matrix as :func:`effects.matrices` returns it."""
    return {key: pd.DataFrame(matrix, columns=[f"img{i}" for i in range(matrix.shape[1])])
            for key, matrix in values.items()}


def test_per_image_roar_score_is_the_trapezoid_mean_gap_to_random():
    curves = {("black", "gradient", 0): {0.1: np.array([1, 0, 1], bool), 0.9: np.array([0, 0, 1], bool)},
              ("black", "random", 0): {0.1: np.array([1, 1, 1], bool), 0.9: np.array([1, 0, 1], bool)}}
    (frame,) = effects._per_image_scores(curves, sign=-1.0, metric="roar_score")
    # ROAR sign: random minus method; image 0: gaps 0 at 0.1 and 1 at 0.9 -> mean 0.5
    assert frame["value"].tolist() == [0.5, 0.5, 0.0]
    assert set(frame["method"]) == {"gradient"} and set(frame["replicate"]) == {0}
    single = {k: {0.5: v[0.1]} for k, v in curves.items()}
    (frame,) = effects._per_image_scores(single, sign=1.0, metric="kar_score")
    assert frame["value"].tolist() == [0.0, -1.0, 0.0]


def test_planted_effects_get_their_direction_and_no_effect_stays_inconclusive():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, size=(3, 60))
    planted = cells_from({
        ("energy_in_mask", "gradient", "standard"): base,
        ("energy_in_mask", "gradient", "black"): base + 0.2 + rng.normal(0, 0.02, base.shape),
        ("energy_in_mask", "gradient", "noise"): base + rng.normal(0, 0.02, base.shape),
        ("bg_only_accuracy", "model", "standard"): base,
        ("bg_only_accuracy", "model", "black"): base - 0.2,
    })
    table = effects.effects(CONFIG, planted, {}).set_index(["metric", "variant"])
    assert table.loc[("energy_in_mask", "black"), "verdict"] == stats.MORE
    assert table.loc[("energy_in_mask", "black"), "effect"] == pytest.approx(0.2, abs=0.01)
    assert table.loc[("energy_in_mask", "noise"), "verdict"] == stats.INCONCLUSIVE
    # lower background-only accuracy = less reliance on the background = more object-focused
    assert table.loc[("bg_only_accuracy", "black"), "verdict"] == stats.MORE
    assert (table["baseline"] == "standard").all() and (table["n_models"] == 3).all()
    assert list(effects.effects(CONFIG, planted, {}).columns) == effects.EFFECT_COLUMNS
    # the quality gate: a failing variant (or baseline) is never given a direction
    gated = effects.effects(CONFIG, planted, {("energy_in_mask", "black"): False})
    assert gated.set_index(["metric", "variant"]).loc[("energy_in_mask", "black"), "verdict"] \
        == stats.INCONCLUSIVE
    gated = effects.effects(CONFIG, planted, {("bg_only_accuracy", "standard"): False})
    assert gated.set_index(["metric", "variant"]).loc[("bg_only_accuracy", "black"), "verdict"] \
        == stats.INCONCLUSIVE


def test_holm_runs_within_each_metric():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, size=(2, 40))
    planted = cells_from({(metric, method, variant): base + shift
                          for metric in ("energy_in_mask", "pointing_game")
                          for method, shift in (("gradient", 0.3), ("gradcam", 0.1))
                          for variant in ("black",)} |
                         {(metric, method, "standard"): base
                          for metric in ("energy_in_mask", "pointing_game")
                          for method in ("gradient", "gradcam")})
    table = effects.effects(CONFIG, planted, {})
    for _, family in table.groupby("metric"):
        assert np.allclose(family["p_adjusted"], stats.holm(family["p_value"].to_numpy()))


def test_images_are_paired_by_name_and_unpaired_ones_left_out():
    values = np.arange(6, dtype=float)[None, :]
    names = [f"img{i}" for i in range(6)]
    cells = {("energy_in_mask", "g", "standard"): pd.DataFrame(values, columns=names),
             # the same images in the other order, each 1 higher, plus one image only here
             ("energy_in_mask", "g", "black"):
             pd.DataFrame(np.append(values[:, ::-1] + 1, [[50.0]], axis=1),
                          columns=names[::-1] + ["img6"])}
    row = effects.effects(CONFIG, cells, {}).iloc[0]
    assert row["effect"] == pytest.approx(1.0) and row["n_images"] == 6
    # one model per side: every resample pairs the same images, so the CI is the effect
    assert row["ci_low"] == pytest.approx(1.0) and row["ci_high"] == pytest.approx(1.0)


def test_model_contrast_of_a_planted_monotone_relation_is_rho_one(tmp_path):
    config = validate_config({"results_dir": str(tmp_path), "variants": ["standard", "black"],
                              "replicates": 3, "report": {"bootstrap_resamples": 300}})
    reliance = {("standard", 0): 0.9, ("standard", 1): 0.7, ("standard", 2): 0.6,
                ("black", 0): 0.1, ("black", 1): 0.2, ("black", 2): 0.3}
    rows = []
    for (variant, replicate), bg in reliance.items():
        write_json(paths.model_metrics(config, variant, replicate=replicate),
                   {"chance_accuracy": 0.1})
        rows += [{"metric": "bg_only_accuracy", "method": "model", "variant": variant,
                  "replicate": replicate, "image": f"i{i}", "value": bg} for i in range(4)]
        # background share = 1 - energy, a monotone (non-linear) function of the reliance
        rows += [{"metric": "energy_in_mask", "method": "gradient", "variant": variant,
                  "replicate": replicate, "image": f"i{i}", "value": 1 - bg ** 3} for i in range(4)]
        # a method that ignores the model
        rows += [{"metric": "energy_in_mask", "method": "random", "variant": variant,
                  "replicate": replicate, "image": f"i{i}", "value": 0.3} for i in range(4)]
    summary, points = effects.model_contrast(config, pd.DataFrame(rows))
    by_model = points[points["method"] == "gradient"].set_index(["variant", "replicate"])
    assert by_model.loc[("standard", 0), "background_reliance"] == pytest.approx(0.8)
    assert by_model.loc[("black", 2), "background_share"] == pytest.approx(0.3 ** 3)
    row = summary.set_index("method").loc["gradient"]
    assert row["rho"] == pytest.approx(1.0) and row["n_models"] == 6
    assert row["ci_low"] == pytest.approx(1.0)  # every resample keeps the perfect order
    assert "random" not in set(summary["method"])  # random is the baseline, not a method
    assert len(points) == 6


def test_metric_agreement_orients_metrics_and_counts_cells():
    intervals = pd.DataFrame([
        {"metric": metric, "method": method, "variant": variant, "mean": value}
        for (method, variant), base in {("g", "a"): 1.0, ("g", "b"): 2.0, ("h", "a"): 3.0,
                                        ("h", "b"): 4.0}.items()
        for metric, value in (("energy_in_mask", base), ("road_score", 10 * base),
                              ("scg_zero_rho0.05", -base))])
    model_level = pd.DataFrame({"metric": "bg_only_accuracy", "method": "model",
                                "variant": ["a", "b"], "mean": [0.5, 0.2]})
    intervals = pd.concat([intervals, model_level])
    table = effects.metric_agreement(intervals).set_index(["metric_a", "metric_b"])
    # bg_only_accuracy is a model-level metric: not over methods
    assert "bg_only_accuracy" not in set(table.index.get_level_values(0)) | \
        set(table.index.get_level_values(1))
    pair = lambda a, b: table.loc[(a, b)] if (a, b) in table.index else table.loc[(b, a)]  # noqa: E731
    assert pair("energy_in_mask", "road_score")["tau"] == pytest.approx(1.0)
    assert pair("energy_in_mask", "scg_zero_rho0.05")["tau"] == pytest.approx(-1.0)
    assert pair("energy_in_mask", "road_score")["n_cells"] == 4


def test_numbers_are_rounded_to_what_their_interval_supports():
    assert ci_decimals(0.719, 0.743) == 3
    assert with_ci(0.73094118, 0.7189, 0.7429) == "0.731 [0.719, 0.743]"
    assert with_ci(93.99999976, 90.0, 98.0) == "94.0 [90.0, 98.0]"
    assert with_ci(0.5, np.nan, np.nan) == "0.500"
    assert with_ci(np.nan, 0, 1) == "–"


def test_statements_name_the_metrics_per_variant():
    table = pd.DataFrame([
        {"metric": "energy_in_mask", "method": "gradient", "variant": "black",
         "baseline": "standard", "effect": 0.21, "ci_low": 0.18, "ci_high": 0.24,
         "verdict": stats.MORE},
        {"metric": "pointing_game", "method": "gradient", "variant": "black",
         "baseline": "standard", "effect": 0.01, "ci_low": -0.05, "ci_high": 0.06,
         "verdict": stats.INCONCLUSIVE}])
    (line,) = variant_statements(table)
    assert line == ("black: MORE object-focused than standard by energy_in_mask (gradient: "
                    "0.210 [0.180, 0.240]); inconclusive on 1 of 2 metric x method comparisons.")
