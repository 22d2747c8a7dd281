"""Is the demo's answer stable? The headline verdicts of ``make demo`` for several data seeds.

Runs the demo preset once per master seed (the seed draws the synthetic world, the model
initialisations, the maps' random baselines and every bootstrap), each into its own
``results/stability/seed<s>/``, through the warm fork server as ``make demo`` does, then
compares the ``verdict`` column of ``effects.csv`` for the headline metrics
(:func:`xaipipe.report.effects.headline_metrics`) across the seeds::

    .venv/bin/python bench/demo_stability.py                  # seeds 0 1 2, about 30 minutes
    .venv/bin/python bench/demo_stability.py --seeds 0 1 2 --reuse   # compare finished runs

Prints one row per (metric, method, variant) with the verdict of every seed and whether they
agree, the effect and CI of every seed, each run's wall time, and last the agreement:
``effect signs agree: K of N`` (the direction of every effect) and
``headline verdicts agree: K of N (P %)``. Exit status 1 when they do not all agree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xaipipe.report.effects import headline_metrics  # noqa: E402


def run_demo(seed: int, root: Path, cores: str) -> float:
    """One demo run with master seed ``seed`` into ``root/seed<seed>``; its wall seconds."""
    overlay = root / f"seed{seed}.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text(yaml.safe_dump({"seed": seed, "results_dir": str(root / f"seed{seed}")}))
    started = time.perf_counter()
    command = [sys.executable, "-m", "xaipipe.forkserver", "run", "--",
               str(Path(sys.executable).parent / "snakemake"), "--cores", cores,
               "--scheduler", "greedy", "--configfile", "config/demo.yaml", str(overlay)]
    subprocess.run(command, cwd=REPO, check=True)
    return time.perf_counter() - started


def headline_verdicts(root: Path, seed: int) -> pd.DataFrame:
    effects = pd.read_csv(root / f"seed{seed}" / "report" / "effects.csv")
    return effects[effects["metric"].isin(headline_metrics())].assign(seed=seed)


def compare(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, int, int]:
    """Per (metric, method, variant): each seed's verdict and effect [CI]; how many agree."""
    long = pd.concat(frames, ignore_index=True)
    long["shown"] = [f"{v} {e:+.3f} [{lo:+.3f}, {hi:+.3f}]" for v, e, lo, hi in
                     zip(long["verdict"], long["effect"], long["ci_low"], long["ci_high"])]
    wide = long.pivot_table(index=["metric", "method", "variant"], columns="seed",
                            values="shown", aggfunc="first")
    verdicts = long.pivot_table(index=["metric", "method", "variant"], columns="seed",
                                values="verdict", aggfunc="first")
    agree = verdicts.notna().all(axis=1) & (verdicts.nunique(axis=1) == 1)
    signs = np.sign(long.pivot_table(index=["metric", "method", "variant"], columns="seed",
                                     values="effect", aggfunc="first"))
    wide["agree"] = agree
    wide["same sign"] = signs.notna().all(axis=1) & (signs.nunique(axis=1) == 1)
    return wide.reset_index(), int(agree.sum()), len(agree)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=REPO / "results" / "stability",
                        help="where the runs go (one results_dir per seed)")
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    parser.add_argument("--reuse", action="store_true",
                        help="do not run; compare the runs already under --root")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    for seed in args.seeds:
        if not args.reuse:
            print(f"seed {seed}: demo run took {run_demo(seed, root, args.cores) / 60:.1f} min",
                  flush=True)
    table, agree, total = compare([headline_verdicts(root, s) for s in args.seeds])
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    same_sign = int(table["same sign"].sum())
    print(f"effect signs agree: {same_sign} of {total} (the direction; a verdict also needs "
          "its CI to exclude 0)")
    print(f"headline verdicts agree: {agree} of {total} ({100 * agree / max(total, 1):.0f} %)")
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(main())
