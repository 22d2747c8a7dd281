"""Time one ROAR and one KAR job and extrapolate to the configured ROAR grid.

Builds a learnable fake tensor store (``tests/conftest.py::fake_split``) at the config's
resolution in a temporary results dir, writes a ``random`` attribution map for it, runs
``run_roar`` for each kind and reports how a job's time splits between reading the maps
(``load``), the vectorised removal, retraining and evaluation, plus the grid estimate
``jobs x mean job time``. Default: the demo config scaled down (see ``--train``/``--epochs``)::

    .venv/bin/python bench/bench_roar.py --config config.yaml config/demo.yaml
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import fake_split  # noqa: E402
from xaipipe import paths  # noqa: E402
from xaipipe.config import load_config, validate_config  # noqa: E402
from xaipipe.data.store import write_split  # noqa: E402
from xaipipe.device import claim_job_device  # noqa: E402
from xaipipe.evaluate.roar import run_roar  # noqa: E402
from xaipipe.pipeline import roar_kinds  # noqa: E402
from xaipipe.io import save_npy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config.yaml"),
                                                        str(REPO / "config" / "demo.yaml")])
    parser.add_argument("--train", type=int, default=128, help="training images (scaled down)")
    parser.add_argument("--val", type=int, default=64, help="val images")
    parser.add_argument("--epochs", type=int, default=1, help="retraining epochs per job")
    parser.add_argument("--fraction", type=float, default=0.5)
    args = parser.parse_args()

    config = load_config(args.config)
    grid_epochs = config["roar"]["epochs"] or config["train"]["epochs"]
    with tempfile.TemporaryDirectory() as tmp:
        config["results_dir"] = tmp
        config["roar"]["epochs"] = args.epochs
        config = validate_config(config, source="bench")
        size, variant = config["resolution"], config["variants"][0]
        rng = np.random.default_rng(0)
        for seed, (split, n) in enumerate((("train", args.train), ("val", args.val))):
            store = fake_split(n=n, size=size, num_classes=10, seed=seed, variant=variant, split=split)
            write_split(paths.variant_split_dir(config, variant, split), store)
            save_npy(paths.attribution_map(config, variant, "random", split, replicate=0),
                     rng.random((n, size, size)).astype(np.float16))
        rows = []
        with claim_job_device(config) as device:
            for kind in ("roar", "kar"):
                result = run_roar(config, kind, variant, "random", args.fraction, 0, device)
                rows.append(result)
                phases = result["seconds_by_phase"]
                share = ", ".join(f"{k} {v:.2f} s ({v / result['seconds']:.1%})"
                                  for k, v in phases.items())
                print(f"{kind}: {result['seconds']:.2f} s on {device} "
                      f"({args.train} train / {args.val} val at {size} px, {args.epochs} epoch): {share}")
    roar = config["roar"]
    jobs = (len(roar_kinds(config)) * len(config["variants"]) * len(roar["methods"])
            * len(roar["fractions"]) * roar["seeds"])
    mean_job = float(np.mean([r["seconds"] for r in rows]))
    print(f"grid: {jobs} jobs x {mean_job:.2f} s = {jobs * mean_job / 60:.1f} min at this scale "
          f"(retraining scales with images x epochs; the full grid uses "
          f"{config['synthetic']['train_images'] if config['dataset']['name'] == 'synthetic' else 'all'} "
          f"train images and {grid_epochs} epochs)")


if __name__ == "__main__":
    main()
