"""Metric validation on known ground truth: the oracle maps, the validation table (by hand),
the metric_validation stage, and -- slow -- every metric ordering oracle_object > random >
oracle_background on a black-background model of the synthetic world."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_workflow_script
from xaipipe import paths
from xaipipe.evaluate import metric_validation
from xaipipe.report.validation import (CONTRACT, higher_is_better, ordering_ok,
                                       validation_table)

SUBJECTS = ("oracle_object", "random", "oracle_background")


def test_ordering_follows_each_metrics_direction_and_nan_fails():
    assert ordering_ok(0.9, 0.5, 0.1, higher=True)
    assert not ordering_ok(0.9, 0.1, 0.5, higher=True)
    assert ordering_ok(0.1, 0.5, 0.9, higher=False)
    assert not ordering_ok(0.5, 0.5, 0.1, higher=True)  # strict
    assert not ordering_ok(0.9, math.nan, 0.1, higher=True)
    assert not higher_is_better("ROAR") and not higher_is_better("ROAD MoRF")
    assert higher_is_better("KAR") and higher_is_better("ROAD LeRF")
    assert higher_is_better("SCG Z_k rho=5%") and higher_is_better("pointing_game")


def test_validation_table_by_hand():
    # ROAR accuracies at fractions 0.2 / 0.6 for two seeds; trapezoid mean per seed
    acc = {"oracle_object": ((0.4, 0.2), (0.6, 0.2)), "random": ((0.8, 0.6), (0.8, 0.4)),
           "oracle_background": ((0.9, 0.9), (0.9, 0.7))}
    runs = pd.DataFrame([{"kind": "roar", "variant": "black", "method": m, "fraction": f,
                          "seed": s, "accuracy": a}
                         for m, seeds in acc.items() for s, pair in enumerate(seeds)
                         for f, a in zip((0.2, 0.6), pair)]
                        + [{"kind": "roar", "variant": "black", "method": "gradient",
                            "fraction": 0.2, "seed": 0, "accuracy": 0.0}])  # not a subject
    road = pd.DataFrame([{"variant": "black", "method": m, "mean_accuracy_morf": morf,
                          "mean_accuracy_lerf": lerf}
                         for m, morf, lerf in (("oracle_object", 0.2, 0.9), ("random", 0.5, 0.5),
                                               ("oracle_background", 0.8, 0.3))])
    stage = pd.DataFrame([{"variant": "black", "metric": "energy_in_mask", "method": m,
                           "mean": v, "std": 0.1, "n": 5, "excluded": 0}
                          for m, v in zip(SUBJECTS, (0.99, 0.3, 0.01))])
    table = validation_table(roar_runs=runs, road_scores=road, stage_tables=stage,
                             variants=["black"]).set_index("metric")
    roar = table.loc["ROAR"]
    # seed means: object 0.3, 0.4; random 0.7, 0.6; background 0.9, 0.8
    assert roar["oracle_object"] == pytest.approx(0.35)
    assert roar["random"] == pytest.approx(0.65)
    assert roar["oracle_background"] == pytest.approx(0.85)
    assert roar["oracle_object_std"] == pytest.approx(np.std([0.3, 0.4], ddof=1))
    assert roar["std_over"] == "seeds" and not roar["higher_is_better"] and roar["ordering_ok"]
    assert table.loc["ROAD MoRF", "ordering_ok"] and table.loc["ROAD LeRF", "ordering_ok"]
    assert table.loc["ROAD LeRF", "std_over"] == "none"
    assert table.loc["energy_in_mask", "ordering_ok"]
    assert list(table.index) == ["ROAR", "ROAD MoRF", "ROAD LeRF", "energy_in_mask"]


def test_validation_table_contract_columns():
    empty = validation_table(roar_runs=pd.DataFrame(columns=["kind", "variant", "method",
                                                             "fraction", "seed", "accuracy"]),
                             road_scores=pd.DataFrame(columns=["variant", "method",
                                                               "mean_accuracy_morf",
                                                               "mean_accuracy_lerf"]),
                             stage_tables=pd.DataFrame(columns=metric_validation.COLUMNS),
                             variants=["black"])
    assert list(empty.columns[:len(CONTRACT)]) == CONTRACT == [
        "metric", "variant", "oracle_object", "random", "oracle_background",
        "higher_is_better", "ordering_ok"]


def _stage_config(make_config, tmp_path):
    config = make_config({"resolution": 32, "variants": ["black"],
                          "confidence_gain": {"num_images": 6, "max_growth": 3, "rhos": [0.25]}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return config, ["--config", str(path), "--variant", "black", "--replicate", "0"]


def test_stage_scores_the_oracles_and_random(make_config, fake_variant_store, save_untrained_model,
                                             tmp_path):
    from xaipipe.explain.attribution import run_attribute_stage

    config, argv = _stage_config(make_config, tmp_path)
    config["explain"]["splits"] = ["val"]
    fake_variant_store(config, "black", {"val": 8})
    save_untrained_model(config, "black")
    for method in SUBJECTS:
        run_attribute_stage(config, "black", method, replicate=0)
    assert run_workflow_script("metric_validation", argv) == 0
    table = pd.read_csv(paths.metric_validation_table(config, "black", replicate=0))
    assert set(table["method"]) == set(SUBJECTS)
    assert set(table["metric"]) == {"energy_in_mask", "pointing_game", "pointing_game_torchray",
                                    "SCG G_k rho=25%", "SCG Z_k rho=25%", "CCG G_k rho=25%",
                                    "CCG Z_k rho=25%"}
    energy = table[table.metric == "energy_in_mask"].set_index("method")["mean"]
    assert energy["oracle_object"] > 0.99 and energy["oracle_background"] < 0.01
    pointing = table[table.metric == "pointing_game"].set_index("method")["mean"]
    assert pointing["oracle_object"] == 1.0 and pointing["oracle_background"] == 0.0
    torchray = table[table.metric == "pointing_game_torchray"].set_index("method")["mean"]
    assert torchray["oracle_object"] == 1.0 and torchray["oracle_background"] < 1.0


def test_stage_missing_oracle_maps_exit_1_without_output(make_config, fake_variant_store,
                                                         save_untrained_model, tmp_path, capsys):
    config, argv = _stage_config(make_config, tmp_path)
    fake_variant_store(config, "black", {"val": 4})
    save_untrained_model(config, "black")
    assert run_workflow_script("metric_validation", argv) == 1
    err = capsys.readouterr().err
    assert "oracle_object_val.npy do not exist" in err and "attribute stage" in err
    assert not paths.metric_validation_table(config, "black", replicate=0).exists()


@pytest.mark.slow
def test_every_metric_orders_the_oracles_on_a_black_model_of_the_synthetic_world(
        make_config, one_torch_thread):
    """The whole chain in-process on the demo's synthetic world: a black-background model
    (the object is its only cue), the oracle maps and random through ROAR, KAR (two seeds,
    retraining), ROAD, SCG, CCG, energy in mask and pointing game. Every metric must order
    oracle_object > random > oracle_background in its own direction. Two replicate models:
    ROAR/KAR seed s removes by the maps of replicate s. (337 s measured on the shared 2-core
    machine at load average 11.)"""
    from xaipipe.data.index import write_index
    from xaipipe.data.synthetic import make_synthetic
    from xaipipe.data.variants import materialise_variants
    from xaipipe.evaluate.roar import run_roar
    from xaipipe.evaluate.road import run_road
    from xaipipe.explain.attribution import run_attribute_stage
    from xaipipe.train_stage import run_train_stage

    # 98 % removed: where remove-and-retrain separates maps in this world (docs/roar.md); the
    # demo's other fraction, 0.5, would double the retraining time of this test
    fractions = [0.98]
    # 40 px, where this test was validated. At the demo's 32 px the Gaussian kernel's base
    # image is a 3 x 3 blur with sigma 0.8, so close to the image that SCG/CCG with G_k fail
    # the oracle ordering in every data seed (docs/metrics.md); the report flags them there
    config = make_config({"device": "cpu", "resolution": 40, "variants": ["black"],
                          "roar": {"fractions": fractions},
                          "confidence_gain": {"num_images": 100, "max_growth": 9}})
    make_synthetic(config)
    write_index(config)
    materialise_variants(config, ["black"])
    for replicate in (0, 1):  # ROAR/KAR seed s removes by the maps of replicate s
        run_train_stage(config, "black", replicate)
        for method in SUBJECTS:
            run_attribute_stage(config, "black", method, replicate=replicate)
    runs = pd.DataFrame([
        {"kind": kind, "variant": "black", "method": method, "fraction": f, "seed": seed,
         "accuracy": run_roar(config, kind, "black", method, f, seed,
                              torch.device("cpu"))["accuracy"]}
        for kind in ("roar", "kar") for f in fractions for seed in (0, 1)
        for method in SUBJECTS])
    road = pd.DataFrame([
        {"variant": "black", "method": method,
         **{f"mean_accuracy_{row['order']}": row["accuracy"] for row in
            run_road(config, "black", method, torch.device("cpu"), replicate=0)["curves"]}}
        for method in SUBJECTS])
    stage = metric_validation.run_metric_validation(config, "black", replicate=0)
    table = validation_table(roar_runs=runs, road_scores=road, stage_tables=stage,
                             variants=["black"])
    # ROAR, KAR, ROAD MoRF/LeRF, SCG and CCG per kernel and rho, energy in mask, pointing game
    # (strict and TorchRay's)
    assert len(table) == 4 + 2 * 2 * 2 + 3
    assert table["ordering_ok"].all(), table.to_string()
