"""The estimate: every job of every active stage priced at the measured rates, per-stage
totals, the wall-clock lower bound, and the comparison with a finished run's benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from xaipipe import paths
from xaipipe.cost.rates import Rates
from xaipipe.cost.startup import startup_modules
from xaipipe.cost.work import WORK
from xaipipe.pipeline import STAGE_LIST, STAGES, Stage, active_stage_names, jobs, log_template

CHECK_FACTOR = 2.0
"""``--check`` flags a stage whose estimate and measurement differ by more than this factor."""


def stage_jobs_seconds(config: Mapping, rates: Rates, stage: Stage) -> list[float]:
    """Estimated wall seconds of every job of ``stage`` (one per :func:`jobs` entry)."""
    modules = startup_modules(stage.name)
    return [rates.seconds(WORK[stage.name](config, job), threads=stage.threads, modules=modules)
            for job in jobs(stage, config)]


def estimate(config: Mapping, rates: Rates) -> pd.DataFrame:
    """One row per active stage: ``stage``, ``jobs``, ``gpu``, ``threads``, ``startup_s`` (a
    job's start-up), ``per_job_s`` (mean, start-up included), ``longest_s``, ``total_s``."""
    rows = []
    for name in active_stage_names(config):
        stage = STAGES[name]
        seconds = stage_jobs_seconds(config, rates, stage)
        rows.append({"stage": name, "jobs": len(seconds), "gpu": stage.gpu,
                     "threads": stage.threads, "startup_s": rates.startup(startup_modules(name)),
                     "per_job_s": sum(seconds) / max(len(seconds), 1),
                     "longest_s": max(seconds, default=0.0), "total_s": sum(seconds)})
    return pd.DataFrame(rows)


def stage_dependencies() -> dict[str, set[str]]:
    """Stage -> the stages whose outputs it reads (matching path templates of the table)."""
    producers: dict[str, str] = {}
    for stage in STAGE_LIST:
        for entry in stage.outputs.values():
            if entry.template:
                producers[entry.template] = stage.name
    return {stage.name: {producers[e.template] for e in stage.inputs.values()
                         if e.template in producers and producers[e.template] != stage.name}
            for stage in STAGE_LIST}


def critical_path(table: pd.DataFrame) -> tuple[float, list[str]]:
    """The longest chain of dependent stages, one (longest) job per stage: seconds, stages."""
    longest = dict(zip(table["stage"], table["longest_s"]))
    needs = stage_dependencies()
    best: dict[str, tuple[float, list[str]]] = {}
    for name in longest:  # the table is in stage-table order: producers come first
        before = max((best[d] for d in needs[name] if d in best), default=(0.0, []))
        best[name] = (before[0] + longest[name], before[1] + [name])
    return max(best.values(), default=(0.0, []))


@dataclass(frozen=True)
class Slots:
    """Parallel capacity: CPU cores, GPUs and jobs per GPU (``gpu.jobs_per_device``)."""

    cores: int
    gpus: int
    jobs_per_gpu: int

    def of(self, gpu: bool, threads: int) -> int:
        """Jobs of a stage that can run at once."""
        if gpu and self.gpus:
            return self.gpus * self.jobs_per_gpu
        return max(1, self.cores // max(1, threads))


def with_wall_clock(table: pd.DataFrame, slots: Slots) -> pd.DataFrame:
    """Add ``slots`` and ``wall_s = max(total / slots, longest job)`` per stage."""
    table = table.copy()
    table["slots"] = [slots.of(g, t) for g, t in zip(table["gpu"], table["threads"])]
    table["wall_s"] = [max(total / s, longest) for total, s, longest in
                       zip(table["total_s"], table["slots"], table["longest_s"])]
    return table


def totals(table: pd.DataFrame, slots: Slots) -> dict[str, float]:
    """GPU seconds, CPU core-seconds and the whole run's wall-clock lower bound."""
    on_gpu = table["gpu"] & (slots.gpus > 0)
    gpu_s = float(table.loc[on_gpu, "total_s"].sum())
    cpu_core_s = float((table.loc[~on_gpu, "total_s"] * table.loc[~on_gpu, "threads"]).sum())
    path_s, path = critical_path(table)
    bounds = [path_s, cpu_core_s / slots.cores]
    if slots.gpus:
        bounds.append(gpu_s / (slots.gpus * slots.jobs_per_gpu))
    return {"jobs": int(table["jobs"].sum()), "job_s": float(table["total_s"].sum()),
            "gpu_s": gpu_s, "cpu_core_s": cpu_core_s, "critical_path_s": path_s,
            "critical_path": path, "wall_lower_bound_s": max(bounds)}


# --- checking against a finished run ---------------------------------------------------------

def measured(config: Mapping, results_dir: str | Path) -> pd.DataFrame:
    """Per active stage: ``measured_jobs`` (benchmark files found), ``measured_per_job_s`` and
    ``measured_total_s`` (column ``s`` of Snakemake's ``benchmarks/<stage>/<job>.tsv``)."""
    config = {**config, "results_dir": str(results_dir)}
    rows = []
    for name in active_stage_names(config):
        stage = STAGES[name]
        template = log_template(stage, paths.BENCHMARK_T)
        seconds = []
        for job in jobs(stage, config):
            tsv = paths.at(config, template, **job)
            if tsv.is_file():
                seconds.append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
        rows.append({"stage": name, "measured_jobs": len(seconds),
                     "measured_per_job_s": sum(seconds) / len(seconds) if seconds else math.nan,
                     "measured_total_s": sum(seconds)})
    return pd.DataFrame(rows)


def compare(table: pd.DataFrame, found: pd.DataFrame, factor: float = CHECK_FACTOR) -> pd.DataFrame:
    """The estimate beside the measurement: ``ratio`` = estimated / measured seconds per job,
    ``flag`` where it is above ``factor`` or below ``1 / factor`` (or nothing was measured)."""
    both = table.merge(found, on="stage")
    both["ratio"] = both["per_job_s"] / both["measured_per_job_s"]
    both["flag"] = [("no benchmark files" if n == 0 else
                     f"off by more than {factor:g}x" if not 1 / factor <= r <= factor else "")
                    for n, r in zip(both["measured_jobs"], both["ratio"])]
    return both
