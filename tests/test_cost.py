"""The cost estimate (xaipipe.cost): job counts from the stage table, scaling with the config,
the check against a finished run's benchmark files, and clear errors. Rates are given (no
measurement), so these tests take about a second."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest

from xaipipe import cost, paths
from xaipipe.config import deep_merge, load_config, validate_config
from xaipipe.pipeline import STAGES, active_stage_names, jobs, log_template

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"ci": ["config.yaml", "config/ci.yaml"], "demo": ["config.yaml", "config/demo.yaml"]}


def preset(name: str, overrides: dict | None = None) -> dict:
    config = load_config([REPO / f for f in PRESETS[name]])
    return validate_config(deep_merge(config, overrides or {}), source="test config")


def fake_rates(config: dict, **changes) -> cost.Rates:
    """Round-number rates for ``config``'s model and resolution."""
    rates = cost.Rates(device="cpu", arch=config["model"]["arch"], resolution=config["resolution"],
                       forward={"1": 400.0, "2": 600.0}, backward={"1": 100.0, "2": 150.0},
                       train={"1": 80.0, "2": 120.0}, impute_s=0.01, model_load_s=0.2,
                       startup_s={cost.PYTHON: 0.5, "torch": 2.0, "torchvision": 1.0,
                                  "captum.attr": 1.0, "pandas": 0.5},
                       config_s=0.3, forkserver=False, load=0.0)
    return dataclasses.replace(rates, **changes)


def row(table: pd.DataFrame, stage: str) -> pd.Series:
    return table.set_index("stage").loc[stage]


def test_every_stage_has_a_cost_model():
    assert set(cost.WORK) == set(STAGES)


@pytest.mark.parametrize("name", PRESETS)
def test_job_counts_are_the_stage_tables(name):
    config = preset(name)
    table = cost.estimate(config, fake_rates(config))
    assert list(table["stage"]) == active_stage_names(config)
    for stage, count in zip(table["stage"], table["jobs"]):
        assert count == len(jobs(STAGES[stage], config)), stage
    assert row(table, "train")["jobs"] == len(config["variants"]) * config["replicates"]


def test_replicates_multiply_the_per_model_stages_only():
    one, three = preset("demo", {"replicates": 2}), preset("demo", {"replicates": 4})
    a, b = cost.estimate(one, fake_rates(one)), cost.estimate(three, fake_rates(three))
    for stage in ("train", "attribute", "featvis", "sanity", "road"):
        assert row(b, stage)["jobs"] == 2 * row(a, stage)["jobs"], stage
    assert row(b, "roar")["jobs"] == row(a, "roar")["jobs"]  # roar.seeds, not replicates


def test_doubling_epochs_doubles_the_training():
    config = preset("demo")
    doubled = preset("demo", {"train": {"epochs": 2 * config["train"]["epochs"]}})
    job = jobs(STAGES["train"], config)[0]
    one, two = cost.train_work(config, job), cost.train_work(doubled, job)
    assert two.train == 2 * one.train == 2 * config["train"]["epochs"] * config["synthetic"]["train_images"]
    # with no fixed costs and instant forward passes the whole estimate doubles
    rates = fake_rates(config, startup_s={cost.PYTHON: 0.0},
                       config_s=0.0, model_load_s=0.0, impute_s=0.0,
                       forward={"1": math.inf, "2": math.inf})
    seconds = [row(cost.estimate(c, rates), "train")["per_job_s"] - cost.FIGURE_S
               for c in (config, doubled)]
    assert seconds[1] == pytest.approx(2 * seconds[0])
    # roar.epochs: null follows train.epochs
    null = preset("demo", {"roar": {"epochs": None}})
    roar_job = jobs(STAGES["roar"], null)[0]
    assert cost.roar_work(null, roar_job).train == config["train"]["epochs"] * config["synthetic"]["train_images"]


def test_train_overrides_and_method_costs_are_priced():
    config = preset("demo", {"train_overrides": {"black": {"epochs": 10}},
                             "explain": {"methods": ["gradient", "integrated_gradients",
                                                     "occlusion", "random"]}})
    black = cost.train_work(config, {"variant": "black", "replicate": 0})
    standard = cost.train_work(config, {"variant": "standard", "replicate": 0})
    assert black.train == 2 * standard.train
    assert cost.method_passes(config, "integrated_gradients").backward == config["explain"]["ig_steps"]
    assert cost.method_passes(config, "random") == cost.Work()
    assert cost.method_passes(config, "occlusion").forward > 1


def test_startup_counts_the_stage_imports_and_the_fork_server_removes_them():
    config = preset("ci")
    cold = cost.estimate(config, fake_rates(config))
    assert row(cold, "attribute")["startup_s"] == pytest.approx(0.5 + 2.0 + 1.0 + 1.0 + 0.3)
    assert row(cold, "make_synthetic")["startup_s"] == pytest.approx(0.5 + 0.3)  # no torch
    assert row(cold, "roar")["startup_s"] == pytest.approx(0.5 + 2.0 + 1.0 + 0.3)  # no Captum
    assert "pandas" in cost.startup_modules("index")
    warm = cost.estimate(config, fake_rates(config, forkserver=True, startup_s={cost.PYTHON: 0.2}))
    assert list(warm["startup_s"]) == pytest.approx([0.2 + 0.3] * len(warm))
    assert row(warm, "attribute")["per_job_s"] == pytest.approx(
        row(cold, "attribute")["per_job_s"] - (0.5 + 2.0 + 1.0 + 1.0) + 0.2)


def test_import_order_puts_what_a_module_needs_first():
    order = cost.import_order(active_stage_names(preset("demo")))
    assert order.index("torch") < order.index("torchvision") < order.index("captum.attr")
    assert order.index("numpy") < order.index("pandas")
    assert order.index("xaipipe.config") < order.index("xaipipe.cli")
    assert len(order) == len(set(order))


def test_wall_clock_bounds():
    config = preset("demo")
    table = cost.estimate(config, fake_rates(config))
    slots = cost.Slots(cores=2, gpus=0, jobs_per_gpu=1)
    walled = cost.with_wall_clock(table, slots)
    train = row(walled, "train")
    assert train["slots"] == 1  # two threads per job on two cores
    assert train["wall_s"] == pytest.approx(train["total_s"])
    totals = cost.totals(walled, slots)
    assert totals["critical_path"][0] == "make_synthetic" and totals["critical_path"][-1] == "report"
    assert "train" in totals["critical_path"] or "train_reference" in totals["critical_path"]
    assert totals["wall_lower_bound_s"] >= totals["cpu_core_s"] / 2
    assert totals["wall_lower_bound_s"] >= totals["critical_path_s"]
    gpus = cost.totals(cost.with_wall_clock(table, cost.Slots(cores=2, gpus=4, jobs_per_gpu=2)),
                       cost.Slots(cores=2, gpus=4, jobs_per_gpu=2))
    assert gpus["gpu_s"] > 0 and gpus["wall_lower_bound_s"] < totals["wall_lower_bound_s"]


def test_images_per_s_times_the_call_after_a_warm_up():
    calls = []

    def call():
        calls.append(time.perf_counter())
        time.sleep(0.05 if len(calls) > 1 else 0.3)  # a slow first call is left out

    rate = cost.images_per_s(call, batch=10, sync=lambda: None, budget_s=0.2)
    assert len(calls) >= 3
    assert rate == pytest.approx(10 / 0.05, rel=0.3)


def write_benchmarks(config: dict, results: Path, seconds: dict[str, float]) -> None:
    """A fake finished run: a Snakemake benchmark file for every job of every active stage."""
    config = {**config, "results_dir": str(results)}
    for name in active_stage_names(config):
        stage = STAGES[name]
        for job in jobs(stage, config):
            tsv = paths.at(config, log_template(stage, paths.BENCHMARK_T), **job)
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text(f"s\th:m:s\tmax_rss\n{seconds[name]:.4f}\t0:00:01\t100\n")


def run_cli(tmp_path: Path, config: dict, *args: str) -> int:
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps(dataclasses.asdict(fake_rates(config))))
    return cost.main(["--config", *[str(REPO / f) for f in PRESETS["ci"]], "--rates", str(rates),
                      "--cores", "2", "--gpus", "0", *args])


def test_check_flags_a_stage_three_times_off(tmp_path, capsys):
    config = preset("ci")
    table = cost.estimate(config, fake_rates(config))
    seconds = dict(zip(table["stage"], table["per_job_s"]))
    write_benchmarks(config, tmp_path / "good", seconds)
    assert run_cli(tmp_path, config, "--check", str(tmp_path / "good")) == 0
    out = capsys.readouterr().out
    assert "off by more" not in out and "1.00" in out

    seconds["roar"] *= 3
    write_benchmarks(config, tmp_path / "bad", seconds)
    assert run_cli(tmp_path, config, "--check", str(tmp_path / "bad")) == 1
    flagged = [line for line in capsys.readouterr().out.splitlines() if "off by more" in line]
    assert len(flagged) == 1 and flagged[0].split()[0] == "roar" and "0.33" in flagged[0]


def test_check_says_when_nothing_was_measured(tmp_path, capsys):
    config = preset("ci")
    assert run_cli(tmp_path, config, "--check", str(tmp_path / "empty")) == 1
    assert "no benchmark files" in capsys.readouterr().out


def test_report_prints_every_stage_and_the_totals(tmp_path, capsys):
    config = preset("ci")
    assert run_cli(tmp_path, config) == 0
    out = capsys.readouterr().out
    for name in active_stage_names(config):
        assert name in out
    assert "core-hours" in out and "critical path" in out and "at least" in out


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    assert cost.main(["--config", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: -3\n")
    assert cost.main(["--config", str(REPO / "config.yaml"), str(broken)]) == 1
    assert "epochs" in capsys.readouterr().err


def test_rates_of_another_model_are_refused(tmp_path, capsys):
    config = preset("ci")
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps(dataclasses.asdict(fake_rates(config, resolution=224))))
    assert cost.main(["--config", *[str(REPO / f) for f in PRESETS["ci"]], "--rates", str(rates)]) == 1
    err = capsys.readouterr().err
    assert "224" in err and "leave out --rates" in err
    rates.write_text("{not json")
    assert cost.main(["--config", *[str(REPO / f) for f in PRESETS["ci"]], "--rates", str(rates)]) == 1
    assert "not a rates file" in capsys.readouterr().err


def test_jobs_longer_than_their_rules_runtime_are_named():
    config = preset("ci")
    table = cost.estimate(config, fake_rates(config, train={"1": 1e-4, "2": 1e-4}))
    warnings = cost.runtime_warnings(table)
    assert any(w.startswith("train:") and "runtime=720" in w for w in warnings)
    assert not any(w.startswith("attribute:") for w in warnings)
    assert cost.runtime_warnings(cost.estimate(config, fake_rates(config))) == []


def test_importing_the_package_main_does_not_run_the_command():
    """The fork server imports every ``xaipipe`` module (pkgutil.walk_packages) before it
    serves jobs: ``python -m xaipipe.cost``'s ``__main__`` must run only as the main module."""
    import importlib
    import sys

    sys.modules.pop("xaipipe.cost.__main__", None)
    module = importlib.import_module("xaipipe.cost.__main__")
    assert module.main is cost.main
