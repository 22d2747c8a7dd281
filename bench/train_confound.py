"""Confound check on the synthetic dataset: does background removal take the background
shortcut away?

Generates the synthetic VOC-format dataset (each class shown on its "own" background texture
with probability ``synthetic.bg_correlation``), builds the ``standard`` and ``black`` tensor
stores and runs the real train stage for both, in a temporary results dir. Expected: the
``standard`` model classifies background-only val images (object removed as
``train.bg_only_fill`` says: imputed from the background by default, or black) well above
chance (it learned the context), the ``black`` model only at chance level. Numbers in
docs/training.md.

    python bench/train_confound.py [--config config.yaml config/demo.yaml] [--set train.epochs=4 ...]
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import yaml

from xaipipe.config import deep_merge, load_config, validate_config
from xaipipe.data.index import write_index
from xaipipe.data.synthetic import make_synthetic
from xaipipe.data.variants import materialise_variants
from xaipipe.train_stage import run_train_stage

COLUMNS = ("train_accuracy", "val_accuracy", "val_matched_accuracy", "fg_only_val_accuracy",
           "bg_only_val_accuracy", "chance_accuracy", "seconds")


def _override(dotted: str) -> dict:
    """``a.b=value`` (value parsed as YAML) -> ``{"a": {"b": value}}``."""
    key, _, value = dotted.partition("=")
    tree: dict = yaml.safe_load(value)
    for part in reversed(key.split(".")):
        tree = {part: tree}
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=["config.yaml", "config/demo.yaml"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. train.epochs=4 resolution=48")
    parser.add_argument("--keep", metavar="DIR", help="results dir to keep (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config)
    for item in args.set:
        config = deep_merge(config, _override(item))
    with tempfile.TemporaryDirectory() as tmp:
        config["results_dir"] = args.keep or tmp
        config["variants"] = ["standard", "black"]
        config = validate_config(config, source="train_confound")
        make_synthetic(config)
        write_index(config)
        materialise_variants(config, ["standard", "black"])
        rows = {variant: run_train_stage(config, variant, replicate=0)
                for variant in ("standard", "black")}
    print("variant   " + " ".join(f"{c:>22s}" for c in COLUMNS))
    for variant, metrics in rows.items():
        print(f"{variant:9s} " + " ".join(f"{metrics[c]:22.3f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
