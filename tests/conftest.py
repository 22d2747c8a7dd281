"""Shared fixtures: a validated tiny config in a temporary results dir and fake tensor stores,
so each stage's tests run without running the stages before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xaipipe.config import deep_merge, load_config, validate_config
from xaipipe.data.store import Split

REPO = Path(__file__).resolve().parents[1]
VOC_SAMPLE = REPO.parent / "shared" / "data" / "voc2012-sample" / "VOCdevkit"


@pytest.fixture
def make_config(tmp_path):
    """``make_config(overrides)`` -> the demo config (config.yaml + config/demo.yaml) with
    ``results_dir`` in a temporary directory and ``overrides`` deep-merged on top."""

    def _make(overrides: dict | None = None) -> dict:
        base = load_config([REPO / "config.yaml", REPO / "config" / "demo.yaml"])
        base["results_dir"] = str(tmp_path / "results")
        return validate_config(deep_merge(base, overrides or {}), source="test config")

    return _make


def fake_split(n: int = 16, size: int = 32, num_classes: int = 4, seed: int = 0,
               variant: str = "standard", split: str = "train") -> Split:
    """A learnable toy split: each image holds a square whose colour encodes the class on a
    random-noise background; the mask marks the square."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % num_classes
    for i, label in enumerate(labels):
        colour = np.array([(label * 67) % 256, (label * 131 + 50) % 256, (label * 29 + 100) % 256], dtype=np.uint8)
        y, x = rng.integers(0, size // 2, size=2)
        side = size // 2
        images[i, :, y:y + side, x:x + side] = colour[:, None, None]
        masks[i, y:y + side, x:x + side] = 1
    names = [f"class{c}" for c in range(num_classes)]
    meta = {"ids": [f"img{i:05d}" for i in range(n)], "class_names": names,
            "variant": variant, "split": split, "resolution": size}
    return Split(images=images, masks=masks, labels=labels, meta=meta)


@pytest.fixture
def voc_sample() -> Path:
    if not (VOC_SAMPLE / "VOC2012").is_dir():
        pytest.skip(f"real VOC sample not found at {VOC_SAMPLE} (only present beside this repo's CI)")
    return VOC_SAMPLE
