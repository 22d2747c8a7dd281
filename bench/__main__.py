"""Run the benchmarks: ``python -m bench [NAME ...]`` (``make bench`` runs all of them).

Each ``bench/<name>.py`` is a script with its own ``--help``; this runner starts each with its
defaults, one after the other, and prints what it prints. ``roar_grid_time`` reads a finished
run's ``results/`` (e.g. after ``make demo``) and is skipped with a note when there is none.
Numbers are wall-clock ratios on the current machine: run on an otherwise idle machine and
compare side by side in one run.

    python -m bench --list
    python -m bench bench_variants bench_train
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEEDS_RESULTS = {"roar_grid_time": Path("results") / "benchmarks" / "roar"}
BY_NAME_ONLY = {"demo_stability": "runs the demo three times (about 30 minutes)"}
"""Benchmarks too long for a plain ``python -m bench``: they run when named."""


def benches() -> list[str]:
    """Every benchmark script of this directory, by name."""
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    known = benches()
    if args.list:
        print("\n".join(known))
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(known)}")
    failed = []
    for name in args.names or known:
        if not args.names and name in BY_NAME_ONLY:
            print(f"== {name}: skipped, {BY_NAME_ONLY[name]}; run `python -m bench {name}`")
            continue
        needs = NEEDS_RESULTS.get(name)
        if needs is not None and not needs.is_dir():
            print(f"== {name}: skipped, needs a finished run's {needs} (make demo first)")
            continue
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / f"{name}.py")]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
