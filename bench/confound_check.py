"""Confound check of the synthetic dataset (numbers quoted in docs/data-sources.md).

Generates the demo-sized synthetic dataset (config.yaml + config/demo.yaml: 10 classes,
96 px, 600 train / 200 val) through the real make_synthetic stage for several
``synthetic.bg_correlation`` values, reads the JPEG/PNG files back and fits a
nearest-centroid classifier on colour histograms of background-only and of object-only
pixels (``xaipipe.data.synthetic.colour_probe_accuracy``; train -> val accuracy).

    python bench/confound_check.py [--p 0.1 0.8 0.9 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from xaipipe import paths
from xaipipe.config import deep_merge, load_config, validate_config
from xaipipe.data import voc
from xaipipe.data.synthetic import Sample, colour_probe_accuracy, make_synthetic

REPO = Path(__file__).resolve().parents[1]


def read_back(root: Path, records: list[dict], split: str) -> list[Sample]:
    return [Sample(image=np.array(Image.open(voc.image_path(root, r["id"])).convert("RGB")),
                   seg=np.array(Image.open(voc.mask_path(root, r["id"]))),
                   label=r["label"], background=r["background"], objects=r["objects"])
            for r in records if r["split"] == split]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", nargs="+", type=float, default=[0.1, 0.8, 0.9, 1.0],
                        help="bg_correlation values to check")
    args = parser.parse_args()
    base = load_config([REPO / "config.yaml", REPO / "config" / "demo.yaml"])
    n = base["synthetic"]["num_classes"]
    print(f"classes={n} chance={1 / n:.3f}")
    print("p      own_bg(val)  background_acc  object_acc")
    for p in args.p:
        with tempfile.TemporaryDirectory() as tmp:
            config = validate_config(deep_merge(base, {"results_dir": tmp,
                                                       "synthetic": {"bg_correlation": p}}))
            manifest = make_synthetic(config)
            root = paths.dataset_root(config)
            train, val = (read_back(root, manifest["images"], s) for s in ("train", "val"))
            bg = colour_probe_accuracy(train, val, "background", n)
            obj = colour_probe_accuracy(train, val, "object", n)
        print(f"{p:<6} {manifest['own_background_fraction']['val']:<12.3f} {bg:<15.3f} {obj:.3f}")


if __name__ == "__main__":
    main()
