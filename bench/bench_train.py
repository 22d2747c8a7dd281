"""Training throughput: xaipipe's device-resident loop vs a conventional JPEG pipeline vs the
model's pure compute rate, side by side in one run (same ResNet18, resolution, batch size).

- ``xaipipe``: :func:`xaipipe.train.train_classifier` on a uint8 tensor store (batched
  random-resized-crop + flip on the device); the rate of its second (warm) epoch.
- ``baseline``: the usual torchvision recipe: an ImageFolder-style Dataset that opens and
  decodes every JPEG with PIL each epoch, ``RandomResizedCrop`` + ``RandomHorizontalFlip`` +
  ``ToTensor``, a ``DataLoader`` (``--workers``), then the same model/optimiser step. The JPEGs
  are written at VOC's typical 500 x 375 size, as the original files would be read.
- ``compute``: forward + backward + optimiser step on one pre-made batch, repeated: the upper
  bound for any data pipeline.

On a CPU the ResNet step dominates, so both full loops sit near ``compute``; the data-only
rows (batches produced, no model) show what each pipeline costs and so how far each would
stay from the accelerator's compute rate on a GPU.

    python bench/bench_train.py [--images 512] [--size 64] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from xaipipe.augment import random_resized_crop_flip
from xaipipe.config import validate_config
from xaipipe.data.store import Split
from xaipipe.models import build_model, images_to_float
from xaipipe.train import build_optimizer, epoch_batches, train_classifier

SETTINGS = {**validate_config({})["train"], "epochs": 2, "schedule": "constant",
            "checkpoint_every": 100}
"""The schema's training defaults (so the bench cannot drift from the pipeline), two epochs."""
JPEG_SIZE = (500, 375)


class JpegFolder(Dataset):
    """ImageFolder-style: one JPEG per sample, decoded with PIL on every access."""

    def __init__(self, files: list[Path], labels: np.ndarray, transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB")), int(self.labels[i])


def make_data(n: int, size: int, num_classes: int, directory: Path) -> tuple[Split, list[Path]]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, n)
    files = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(JPEG_SIZE[1] // 8, JPEG_SIZE[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize(JPEG_SIZE, Image.BILINEAR)  # smooth, JPEG-like content
        files.append(directory / f"{i:05d}.jpg")
        image.save(files[-1], quality=90)
    store = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in files])
    split = Split(images=store.transpose(0, 3, 1, 2).copy(), masks=np.ones((n, size, size), np.uint8),
                  labels=labels.astype(np.int64), meta={"class_names": [str(c) for c in range(num_classes)]})
    return split, files


def xaipipe_rate(split: Split, settings: dict, num_classes: int) -> float:
    result = train_classifier(split, settings, num_classes=num_classes, seed=0, device=torch.device("cpu"))
    return result.history[-1]["images_per_s"]


def xaipipe_data_rate(split: Split, settings: dict) -> float:
    """Batches as the training loop makes them (gather, to float, batched crop + flip), no model."""
    images = torch.from_numpy(split.images)
    generator = torch.Generator().manual_seed(0)
    aug = settings["augment"]
    tic = time.perf_counter()
    for index in epoch_batches(len(split), settings["batch_size"], generator):
        random_resized_crop_flip(images_to_float(images[index]), aug["random_resized_crop_scale"],
                                 aug["hflip"], generator)
    return len(split) / (time.perf_counter() - tic)


def _baseline_loader(files: list[Path], labels: np.ndarray, settings: dict, size: int,
                     workers: int) -> DataLoader:
    transform = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=tuple(settings["augment"]["random_resized_crop_scale"])),
        transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    return DataLoader(JpegFolder(files, labels, transform), batch_size=settings["batch_size"],
                      shuffle=True, num_workers=workers, drop_last=False)


def baseline_data_rate(files: list[Path], labels: np.ndarray, settings: dict, size: int,
                       workers: int) -> float:
    tic = time.perf_counter()
    for _ in _baseline_loader(files, labels, settings, size, workers):
        pass
    return len(files) / (time.perf_counter() - tic)


def _step(model, optimizer, x, y) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def baseline_rate(files: list[Path], labels: np.ndarray, settings: dict, size: int,
                  num_classes: int, workers: int) -> float:
    loader = _baseline_loader(files, labels, settings, size, workers)
    model = build_model(num_classes).train()
    optimizer = build_optimizer(model, settings)
    rates = []
    for _ in range(settings["epochs"]):
        tic, seen = time.perf_counter(), 0
        for x, y in loader:
            _step(model, optimizer, x, y)
            seen += y.shape[0]
        rates.append(seen / (time.perf_counter() - tic))
    return rates[-1]


def compute_rate(n: int, size: int, settings: dict, num_classes: int) -> float:
    model = build_model(num_classes).train()
    optimizer = build_optimizer(model, settings)
    batch = settings["batch_size"]
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, num_classes, (batch,))
    _step(model, optimizer, x, y)  # warm-up
    steps = max(n // batch, 1)
    tic = time.perf_counter()
    for _ in range(steps):
        _step(model, optimizer, x, y)
    return steps * batch / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for all three")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = dict(SETTINGS, batch_size=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        split, files = make_data(args.images, args.size, args.classes, Path(tmp))
        compute_before = compute_rate(args.images, args.size, settings, args.classes)
        rates = {
            "xaipipe": xaipipe_rate(split, settings, args.classes),
            "baseline": baseline_rate(files, split.labels, settings, args.size, args.classes, args.workers),
            "xaipipe data only": xaipipe_data_rate(split, settings),
            "baseline data only": baseline_data_rate(files, split.labels, settings, args.size, args.workers),
        }
        # measured before and after the others; the faster one is the less disturbed (shared machines)
        rates["compute"] = max(compute_before, compute_rate(args.images, args.size, settings, args.classes))
    print(f"{args.images} images, {args.size} px, batch {args.batch}, {args.threads} thread(s), "
          f"baseline workers {args.workers}; warm-epoch images/s:")
    for name, rate in rates.items():
        print(f"  {name:18s} {rate:9.1f}")
    print(f"xaipipe / baseline = {rates['xaipipe'] / rates['baseline']:.2f}x (full loop), "
          f"{rates['xaipipe data only'] / rates['baseline data only']:.1f}x (data only); "
          f"xaipipe / compute = {100 * rates['xaipipe'] / rates['compute']:.0f}%")


if __name__ == "__main__":
    main()
