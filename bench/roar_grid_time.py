"""Where the time of a finished ROAR grid went: attribution, removal, retraining.

Reads a completed run (e.g. after ``make demo``): Snakemake's benchmark file of every
``attribute`` job whose maps ROAR reads and of every ``roar`` job (wall-clock seconds), and
the ``seconds_by_phase`` each ROAR result records (``load`` of the maps, ``removal``,
``train``, ``evaluate``). The rest of a ROAR job's wall time is process start-up (Python,
torch and torchvision imports, config validation) and writing the result::

    .venv/bin/python bench/roar_grid_time.py --config config.yaml config/demo.yaml

Prints one row per phase: total seconds over the grid, share of the total, mean per job;
the last line is the fixed cost's share (ROAR start-up + writing over all the job time
above), the number ``make demo``'s fork server (docs/orchestration.md, "Warm start") cuts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from xaipipe import paths
from xaipipe.config import load_config
from xaipipe.io import read_json
from xaipipe.pipeline import STAGES, jobs, log_template

REPO = Path(__file__).resolve().parents[1]
STARTUP = "roar: process start-up + writing"


def job_seconds(config, stage_name: str, wildcards: dict) -> float:
    """Wall-clock seconds Snakemake's ``benchmark:`` recorded for one job."""
    tsv = paths.at(config, log_template(STAGES[stage_name], paths.BENCHMARK_T), **wildcards)
    if not tsv.is_file():
        sys.exit(f"{tsv} is missing: run the workflow with this config first (e.g. make demo)")
    return float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])


def grid_phases(config) -> pd.DataFrame:
    """Seconds per phase, summed over the grid: attribution jobs, then the ROAR jobs split
    into start-up, map loading, removal, retraining and evaluation."""
    methods = set(config["roar"]["methods"])
    attribution = [job_seconds(config, "attribute", wc) for wc in jobs(STAGES["attribute"], config)
                   if wc["method"] in methods]
    rows = {"attribution jobs (maps of roar.methods)": (sum(attribution), len(attribution))}
    roar_jobs = jobs(STAGES["roar"], config)
    phases = {"load": 0.0, "removal": 0.0, "train": 0.0, "evaluate": 0.0}
    startup = 0.0
    for wc in roar_jobs:
        result = read_json(paths.roar_result(config, **wc))
        for name, seconds in result["seconds_by_phase"].items():
            phases[name] += seconds
        startup += job_seconds(config, "roar", wc) - sum(result["seconds_by_phase"].values())
    n = len(roar_jobs)
    rows[STARTUP] = (startup, n)
    rows.update({f"roar: {name}": (seconds, n) for name, seconds in phases.items()})
    table = pd.DataFrame([(k, s, c) for k, (s, c) in rows.items()],
                         columns=["phase", "seconds", "jobs"])
    table["share"] = table["seconds"] / table["seconds"].sum()
    table["per_job"] = table["seconds"] / table["jobs"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config.yaml"),
                                                        str(REPO / "config" / "demo.yaml")])
    args = parser.parse_args()
    table = grid_phases(load_config(args.config))
    print(table.to_string(index=False, formatters={"seconds": "{:.1f}".format,
                                                   "share": "{:.1%}".format,
                                                   "per_job": "{:.2f}".format}))
    print(f"total {table['seconds'].sum():.1f} s of job time")
    print(f"fixed-cost share: {100 * table.loc[table['phase'] == STARTUP, 'share'].sum():.1f} %")


if __name__ == "__main__":
    main()
