"""Benchmark: materialising the four variants with ``xaipipe.data.variants`` (one decode and
resize pass, vectorised treatments) against a naive per-image Pillow loop (each variant
re-opens, resizes and masks every image on its own with numpy).

    .venv/bin/python bench/bench_variants.py [--train 600 --val 200 --image-size 96 --resolution 64]

Generates a demo-sized synthetic VOC-format dataset in a temporary directory
(``xaipipe.data.synthetic``), indexes it, then times both ways of writing all four variants
(train, val, val_matched) and prints images/s and the ratio. Timing only; correctness is in
tests/test_variants.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from xaipipe import paths
from xaipipe.config import load_config
from xaipipe.data import voc
from xaipipe.data.index import read_index, write_index
from xaipipe.data.synthetic import make_synthetic
from xaipipe.data.variants import background_noise, materialise_variants, mixed_selection
from xaipipe.registry import BUILTIN_VARIANTS as VARIANTS

REPO = Path(__file__).resolve().parents[1]


def naive_variant(config, variant: str, devkit: Path, ids: list[str], treat: bool) -> np.ndarray:
    """One variant, one image at a time: open, resize, mask with numpy, stack."""
    size, seed, settings = config["resolution"], config["seed"], config["variant"]
    selected = mixed_selection(ids, seed, settings["mixed_fraction"]) if variant == "mixed" else None
    out = []
    for row, image_id in enumerate(ids):
        image = np.asarray(Image.open(voc.image_path(devkit, image_id)).convert("RGB")
                           .resize((size, size), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.open(voc.mask_path(devkit, image_id))
                          .resize((size, size), Image.Resampling.NEAREST)) != 0
        if treat and (variant == "black" or (variant == "mixed" and selected[row])):
            image = image * mask[..., None]
        elif treat and variant == "noise":
            noise = background_noise(image_id, (3, size, size), seed, settings["noise_mean"],
                                     settings["noise_std"]).transpose(1, 2, 0)
            image = np.where(mask[..., None], image, noise)
        out.append(image.transpose(2, 0, 1))
    return np.stack(out)


def naive_all(config, out_dir: Path) -> int:
    table, _ = read_index(config)
    devkit = paths.dataset_root(config)
    ids = {s: list(table[table["split"] == s]["image_id"]) for s in ("train", "val")}
    written = 0
    for variant in VARIANTS:
        for split, source, treat in (("train", "train", True), ("val", "val", False),
                                     ("val_matched", "val", True)):
            images = naive_variant(config, variant, devkit, ids[source], treat)
            np.save(out_dir / f"{variant}_{split}.npy", images)
            written += len(images)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config([REPO / "config.yaml", REPO / "config" / "demo.yaml"])
        config.update(results_dir=str(Path(tmp) / "results"), resolution=args.resolution)
        config["synthetic"].update(train_images=args.train, val_images=args.val, image_size=args.image_size)
        make_synthetic(config)
        write_index(config)

        start = time.perf_counter()
        summaries = materialise_variants(config, list(VARIANTS))
        ours_seconds = time.perf_counter() - start
        ours_images = sum(c["images"] for s in summaries.values() for c in s["splits"].values())

        naive_dir = Path(tmp) / "naive"
        naive_dir.mkdir()
        start = time.perf_counter()
        naive_images = naive_all(config, naive_dir)
        naive_seconds = time.perf_counter() - start

    ours, naive = ours_images / ours_seconds, naive_images / naive_seconds
    print(f"dataset: {args.train} train + {args.val} val synthetic images of {args.image_size} px "
          f"-> {args.resolution} px, 4 variants x (train, val, val_matched) = {ours_images} images")
    print(f"xaipipe.data.variants : {ours_seconds:7.2f} s  {ours:8.1f} images/s")
    print(f"naive per-image PIL   : {naive_seconds:7.2f} s  {naive:8.1f} images/s")
    print(f"speed-up: {ours / naive:.2f}x")


if __name__ == "__main__":
    main()
