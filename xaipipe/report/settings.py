"""The run settings a reader needs before any number: what data, what model, what training,
which config files, which seeds, which code (``docs/report.md``, "Run settings").

The aggregate stage writes them into ``sources.csv`` (rows with ``table = run_settings``,
``path`` = the setting, ``status`` = its value) and the report shows them as its header
block, so both say the same.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from xaipipe import paths
from xaipipe.architectures import configured_architecture
from xaipipe.io import read_json

TABLE = "run_settings"


def git_commit(directory: str | Path = ".") -> str:
    """``<commit>`` of the checkout at ``directory``, ``+ uncommitted changes`` when the work
    tree differs from it; ``unknown (...)`` outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                              text=True, timeout=20, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git rev-parse HEAD failed: not a git checkout, no commit yet, or no git)"
    return commit + (" + uncommitted changes" if dirty else "")


def _split_counts(config: Mapping) -> str:
    for variant in config["variants"]:
        summary = paths.variant_summary(config, variant)
        if summary.is_file():
            counts = read_json(summary).get("splits", {})
            return ", ".join(f"{split} {c.get('images')}" for split, c in counts.items())
    return "not available (variant stage)"


def _epochs(config: Mapping) -> str:
    text = f"{config['train']['epochs']} (train.epochs)"
    overrides = {v: o["epochs"] for v, o in config["train_overrides"].items() if "epochs" in o}
    if overrides:
        text += "; " + ", ".join(f"{v}: {e}" for v, e in overrides.items())
    roar = config["roar"]["epochs"]
    return text + f"; ROAR/KAR retraining {roar if roar is not None else 'the same'}"


def _architecture(config: Mapping) -> str:
    """What :func:`xaipipe.models.build_model` builds for ``model.arch``."""
    arch = configured_architecture(config)
    return f"{arch.title} ({arch.origin}, normalisation inside the model; model.arch {arch.name})"


def _model_seeds(table1: pd.DataFrame) -> str:
    seeds = [f"{name} {seed}" for name, seed in zip(table1["variant"], table1["seed"])]
    return ", ".join(seeds) or "not available (train stage)"


def run_settings(config: Mapping, config_files: Sequence[str],
                 table1: pd.DataFrame) -> list[tuple[str, str]]:
    """``(setting, value)`` pairs, in reading order; the model seeds come from the aggregate's
    Table I (every trained model's metrics.json, already read)."""
    dataset = config["dataset"]
    return [
        ("dataset", dataset["name"]),
        ("dataset root", str(paths.dataset_root(config))),
        ("images per split", _split_counts(config)),
        ("variants", ", ".join(config["variants"])),
        ("resolution", f"{config['resolution']} px ({dataset['resize']})"),
        ("architecture", _architecture(config)),
        ("pretrained start", str(config["train"]["pretrained"])),
        ("epochs", _epochs(config)),
        ("config files merged", " + ".join(config_files) or "not recorded"),
        ("master seed", str(config["seed"])),
        ("replicates per variant", str(config["replicates"])),
        ("model seeds", _model_seeds(table1)),
        ("ROAR/KAR seeds", str(config["roar"]["seeds"])),
        ("git commit", git_commit()),
    ]
