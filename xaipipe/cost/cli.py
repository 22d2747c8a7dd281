"""``python -m xaipipe.cost``: measure (or read) the rates, print the estimate per stage and,
with ``--check``, compare it with a finished run."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Sequence

import pandas as pd

import xaipipe.cost as package
from xaipipe.config import load_config
from xaipipe.cost.estimate import Slots, compare, estimate, measured, totals, with_wall_clock
from xaipipe.cost.rates import Rates, measure_rates, read_rates
from xaipipe.cost.startup import PYTHON
from xaipipe.errors import XaipipeError
from xaipipe.pipeline import STAGES, check_grid


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe_rates(rates: Rates) -> str:
    per_threads = "; ".join(
        f"{'' if t == '0' else f'{t} thread(s): '}forward {rates.forward[t]:.0f}, "
        f"forward+backward {rates.backward[t]:.0f}, train {rates.train[t]:.0f} images/s"
        for t in rates.forward)
    heaviest = sorted((s, m) for m, s in rates.startup_s.items() if m != PYTHON)[-4:]
    startup = ("through the fork server" if rates.forkserver else
               "heaviest imports " + ", ".join(f"{m} {s:.2f} s" for s, m in reversed(heaviest)))
    return (f"rates on {rates.device} ({rates.arch}, {rates.resolution} px; load average "
            f"{rates.load:.1f}; measured in {rates.measure_s:.1f} s): {per_threads}\n"
            f"ROAD imputation {rates.impute_s * 1000:.1f} ms per image and mask; model load "
            f"{rates.model_load_s:.2f} s; job start-up: Python {rates.startup_s[PYTHON]:.2f} s "
            f"({startup}), config {rates.config_s:.2f} s")


def report(table: pd.DataFrame, slots: Slots) -> str:
    """The printed table and totals."""
    shown = table.assign(on=["gpu" if g else "cpu" for g in table["gpu"]])
    seconds = ("startup_s", "per_job_s", "total_s", "wall_s")
    text = shown.to_string(index=False, columns=["stage", "jobs", "on", "threads", *seconds[:2],
                                                 "total_s", "slots", "wall_s"],
                           formatters={c: "{:.1f}".format for c in seconds})
    t = totals(table, slots)
    return (f"{text}\n\n{t['jobs']} jobs, {t['job_s']:.0f} s of job time "
            f"({t['job_s'] / 3600:.2f} h)\n"
            f"GPU time: {t['gpu_s'] / 3600:.2f} GPU-hours"
            f"{'' if slots.gpus else ' (no GPU counted: every stage on CPU)'}; "
            f"CPU time: {t['cpu_core_s'] / 3600:.2f} core-hours\n"
            f"critical path {_hms(t['critical_path_s'])} ({' -> '.join(t['critical_path'])})\n"
            f"wall clock with {slots.cores} cores and {slots.gpus} GPU(s) x "
            f"{slots.jobs_per_gpu} job(s): at least {_hms(t['wall_lower_bound_s'])}"
            + "".join(f"\n{line}" for line in runtime_warnings(table)))


def runtime_warnings(table: pd.DataFrame) -> list[str]:
    """A line per stage whose longest job is estimated to outlast its rule's ``runtime``
    (``Stage.runtime`` minutes, the SLURM time limit the profile requests)."""
    return [f"{name}: the longest job is estimated at {longest / 60:.0f} min but the rule asks "
            f"for runtime={STAGES[name].runtime} min: raise it in the profile's set-resources"
            for name, longest in zip(table["stage"], table["longest_s"])
            if longest > 60 * STAGES[name].runtime]


def report_check(both: pd.DataFrame) -> str:
    text = both.to_string(index=False, columns=["stage", "jobs", "measured_jobs", "per_job_s",
                                                "measured_per_job_s", "ratio", "flag"],
                          formatters={"per_job_s": "{:.1f}".format,
                                      "measured_per_job_s": "{:.1f}".format,
                                      "ratio": "{:.2f}".format})
    est = (both["per_job_s"] * both["measured_jobs"]).sum()
    found = both["measured_total_s"].sum()
    return (f"{text}\n\nthe {int(both['measured_jobs'].sum())} measured jobs: estimated "
            f"{est:.0f} s, measured {found:.0f} s of job time "
            f"(ratio {est / found if found else math.nan:.2f})")


def _default_gpus() -> int:
    from xaipipe.device import cuda_device_count

    return cuda_device_count()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xaipipe.cost", description=package.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", default=["config.yaml"], metavar="YAML",
                   help="config files, merged in order (as --configfile)")
    p.add_argument("--cores", type=int, default=os.cpu_count(), metavar="C",
                   help="CPU cores for the wall-clock bound (default: this machine's)")
    p.add_argument("--gpus", type=int, default=None, metavar="G",
                   help="GPUs for the wall-clock bound (default: this machine's; 0 = all "
                        "stages on CPU)")
    p.add_argument("--rates", metavar="JSON", help="use rates saved by --save-rates instead "
                   "of measuring (e.g. measured on a GPU node, estimated on the login node)")
    p.add_argument("--save-rates", metavar="JSON", help="write the measured rates here")
    p.add_argument("--check", metavar="RESULTS_DIR",
                   help="compare with the benchmark files of a finished run of this config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        tic = time.perf_counter()
        config = load_config(args.config)
        check_grid(config)
        config_s = time.perf_counter() - tic
        if args.rates:
            rates = read_rates(args.rates)
            rates.check_fits(config, args.rates)
        else:
            rates = measure_rates(config, args.config, config_s=config_s)
        if args.save_rates:
            from xaipipe.io import write_json

            write_json(args.save_rates, dataclasses.asdict(rates))
        slots = Slots(cores=max(1, args.cores), jobs_per_gpu=config["gpu"]["jobs_per_device"],
                      gpus=_default_gpus() if args.gpus is None else args.gpus)
        table = with_wall_clock(estimate(config, rates), slots)
        print(describe_rates(rates), end="\n\n")
        print(report(table, slots))
        if args.check:
            both = compare(table, measured(config, args.check))
            print(f"\ncheck against {args.check}/benchmarks (ratio = estimated / measured "
                  "seconds per job):")
            print(report_check(both))
            return 1 if both["flag"].astype(bool).any() else 0
    except XaipipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

