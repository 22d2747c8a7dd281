"""Shared fixtures: a validated tiny config in a temporary results dir and fake tensor stores,
so each stage's tests run without running the stages before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


def write_voc_root(devkit: Path, train_masks, val_masks=(), seed: int = 0) -> dict[str, list[str]]:
    """Write a tiny VOC-format dataset under ``devkit``: per segmentation array (H x W uint8
    class indices) a random RGB JPEG of the same size, a palette PNG and an entry in
    ``ImageSets/Segmentation/{train,val}.txt``. Ids are ``train_000``..., ``val_000``...;
    returns them per split."""
    from PIL import Image

    from xaipipe.data import voc

    rng = np.random.default_rng(seed)
    root = voc.voc2012_dir(devkit)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = {}
    for split, masks in (("train", train_masks), ("val", val_masks)):
        ids[split] = [f"{split}_{i:03d}" for i in range(len(masks))]
        for image_id, seg in zip(ids[split], masks):
            seg = np.asarray(seg, dtype=np.uint8)
            pixels = rng.integers(0, 256, size=(*seg.shape, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(voc.image_path(devkit, image_id), quality=95)
            png = Image.fromarray(seg, mode="P")
            png.putpalette(voc.palette().ravel().tolist())
            png.save(voc.mask_path(devkit, image_id))
        voc.split_list_path(devkit, split).write_text("".join(f"{i}\n" for i in ids[split]))
    return ids


@pytest.fixture
def make_voc_root(tmp_path):
    """``make_voc_root(train_masks, val_masks=())`` -> a VOCdevkit path in ``tmp_path`` built
    by :func:`write_voc_root` (use it as ``dataset.voc_root`` with ``dataset.name: voc2012``)."""

    def _make(train_masks, val_masks=(), seed: int = 0) -> Path:
        devkit = tmp_path / "VOCdevkit"
        write_voc_root(devkit, train_masks, val_masks, seed)
        return devkit

    return _make


@pytest.fixture(scope="session")
def voc_sample_stores(tmp_path_factory) -> dict:
    """The real VOC sample indexed and materialised in all four variants (config.yaml +
    config/voc-sample.yaml, 64 px) in a session-wide temporary results dir; returns the
    validated config, so ``paths.variant_split_dir(config, v, split)`` holds each store.
    Skips (visibly) when the sample is absent. For the training/attribution tests on real files."""
    if not (VOC_SAMPLE / "VOC2012").is_dir():
        pytest.skip(f"real VOC sample not found at {VOC_SAMPLE} (only present beside this repo's CI)")
    from xaipipe.data.index import write_index
    from xaipipe.data.variants import materialise_variants

    config = load_config([REPO / "config.yaml", REPO / "config" / "voc-sample.yaml"])
    config["results_dir"] = str(tmp_path_factory.mktemp("voc_sample") / "results")
    config["dataset"]["voc_root"] = str(VOC_SAMPLE)
    config = validate_config(config, source="voc_sample_stores")
    write_index(config)
    materialise_variants(config, config["variants"])
    return config


@pytest.fixture
def fake_variant_store():
    """``fake_variant_store(config, variant, splits={"train": 64, "val": 32}, size=32,
    num_classes=4)`` writes learnable :func:`fake_split` s (different seeds per split) to
    ``paths.variant_split_dir`` and returns them as ``{split: Split}``."""
    from xaipipe import paths
    from xaipipe.data.store import write_split

    def _make(config: dict, variant: str = "standard", splits: dict | None = None,
              size: int = 32, num_classes: int = 4) -> dict:
        written = {}
        for seed, (split, n) in enumerate((splits or {"train": 64, "val": 32}).items()):
            written[split] = fake_split(n=n, size=size, num_classes=num_classes, seed=seed,
                                        variant=variant, split=split)
            write_split(paths.variant_split_dir(config, variant, split), written[split])
        return written

    return _make


def run_workflow_script(name: str, argv: list[str]) -> int:
    """Run ``workflow_scripts/<name>.py`` in-process (no interpreter start-up) as if called
    with ``argv`` and return its exit status (the scripts end in ``sys.exit(run_stage(...))``)."""
    import runpy
    import sys

    saved = sys.argv
    sys.argv = [f"{name}.py", *argv]
    try:
        runpy.run_path(str(REPO / "workflow_scripts" / f"{name}.py"), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0


@pytest.fixture
def save_untrained_model():
    """``save_untrained_model(config, variant, num_classes=4, replicate=0)`` writes a freshly
    initialised (seed 0) ResNet18 to ``paths.model_weights`` of that replicate, the model input
    of the explanation stages."""
    import torch

    from xaipipe import paths
    from xaipipe.models import build_model, save_model

    def _save(config: dict, variant: str, num_classes: int = 4, *, replicate: int = 0) -> None:
        torch.manual_seed(0)
        save_model(paths.model_weights(config, variant, replicate=replicate),
                   build_model(num_classes),
                   {"num_classes": num_classes, "class_names": [f"class{c}" for c in range(num_classes)],
                    "resolution": config["resolution"], "variant": variant})

    return _save


@pytest.fixture
def one_torch_thread():
    """One torch CPU thread for this test (restored afterwards): what a one-thread job gets
    from ``--threads 1``, the only setting of torch's thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Run a module's torch work on one CPU thread (restored afterwards): on a shared, loaded
    2-core machine torch's default thread pool oversubscribes and small CPU ops get ~10x slower.
    Use with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class GuidedReLU(torch.autograd.Function):
    """Springenberg et al. 2015: pass only positive gradients where the input was positive
    (the tests' hand-written reference for guided backprop)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)
