"""Train a classifier (``model.arch``) on a device-resident uint8 tensor store, resumably.

The paper (Nielsen et al., section IV-V) trains torchvision's ResNet18 for 100 epochs with
identical hyper-parameters for all four variants and reports train accuracy, val accuracy and
loss (Table I). It does not name the optimiser, schedule or augmentation; they come from the
``train`` config section (see ``docs/training.md`` for the choices).

Speed: the whole uint8 split is loaded once and kept on the device (CUDA) or in memory (CPU);
each step gathers a batch by index, converts it to float and augments it with one batched
affine resampling on the device (:mod:`xaipipe.augment`); normalisation is inside the model.
On CUDA: autocast (bf16, or fp16 with a gradient scaler where bf16 is unsupported),
channels_last and optional ``torch.compile``.

Determinism and resume: one CPU ``torch.Generator`` seeded from ``seed`` drives shuffling
and augmentation; the model is initialised under ``torch.manual_seed(seed)``. Every
``checkpoint_every`` epochs the complete state is saved (:mod:`xaipipe.checkpoint`), so on
CPU a run killed and restarted ends with exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xaipipe import checkpoint
from xaipipe.architectures import Architecture
from xaipipe.augment import random_resized_crop_flip
from xaipipe.data.store import Split
from xaipipe.errors import ConfigError, DataError
from xaipipe.models import DEFAULT_ARCH, build_model, images_to_float
from xaipipe.pretrained import weights_file

log = logging.getLogger(__name__)

FAIL_AFTER_EPOCH_ENV = "XAIPIPE_TRAIN_FAIL_AFTER_EPOCH"
"""Test hook: when set to k, training raises after finishing (and checkpointing) epoch k
(1-based), simulating a job killed mid-run."""


class SimulatedKill(RuntimeError):
    """Raised by the :data:`FAIL_AFTER_EPOCH_ENV` test hook."""


@dataclass
class TrainResult:
    model: nn.Module
    """Trained model in eval mode, on the training device (unwrapped from torch.compile)."""
    history: list[dict]
    """One row per epoch: epoch, loss, train_acc, lr, seconds, images_per_s, ``<split>_acc``."""
    final: dict = field(default_factory=dict)
    """The last history row plus ``total_seconds``, ``resumed_from_epoch`` and the
    eval accuracies (also present when ``epochs`` is 0)."""


# --- evaluation -------------------------------------------------------------------------

def _batches(images: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        yield chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
            batch_size: int = 256) -> torch.Tensor:
    """Logits (CPU float32, N x num_classes) of ``model`` for images N x 3 x H x W, uint8 in
    [0, 255] or floating in [0, 1]. The model is evaluated in eval mode (its previous mode is
    restored afterwards)."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for batch in _batches(images, batch_size):
            batch = batch.to(device, non_blocking=True)
            x = images_to_float(batch) if batch.dtype == torch.uint8 else batch.float()
            outputs.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


def accuracy(model: nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
             device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``images`` (see :func:`predict`)."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if labels.numel() == 0:
        return float("nan")
    logits = predict(model, images, device, batch_size)
    return float((logits.argmax(1) == labels).float().mean())


# --- optimiser and schedule ---------------------------------------------------------------

def build_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW from ``train.optimizer``; decoupled weight decay for
    AdamW, L2 weight decay otherwise (the usual definitions of each)."""
    name, lr, wd = settings["optimizer"], settings["lr"], settings["weight_decay"]
    params = model.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=settings["momentum"], weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ConfigError(f"train.optimizer: unknown optimiser {name!r}; use sgd, adam or adamw")


def lr_factor(epoch: int, settings: Mapping[str, Any]) -> float:
    """Multiplier of ``train.lr`` for 0-based ``epoch``: linear warm-up over
    ``warmup_epochs`` (from 1/(w+1) up to 1), then ``cosine`` (to 0 at the last epoch),
    ``step`` (times ``step_gamma`` every ``step_epochs``) or ``constant``."""
    warmup, total = settings["warmup_epochs"], settings["epochs"]
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    t = epoch - warmup
    schedule = settings["schedule"]
    if schedule == "cosine":
        span = max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * t / span))
    if schedule == "step":
        return settings["step_gamma"] ** (t // settings["step_epochs"])
    return 1.0


# --- model initialisation -----------------------------------------------------------------

def initial_model(num_classes: int, pretrained: str, seed: int,
                  arch: Architecture | str = DEFAULT_ARCH) -> nn.Module:
    """A classifier of architecture ``arch``: random init under ``torch.manual_seed(seed)``, or
    with the backbone loaded from ``pretrained`` (``imagenet`` = torchvision's IMAGENET1K_V1
    weights of ``arch`` from the local torch hub cache, never downloaded; or a path to a
    torchvision state dict of ``arch`` or an xaipipe model file). The classification head
    (``arch.head``, e.g. ResNet's ``fc``) is always fresh (``num_classes`` outputs)."""
    torch.manual_seed(seed)
    model = build_model(num_classes, arch)
    arch = model.arch
    path = weights_file(pretrained, arch)
    if path is None:
        return model
    head = {f"{arch.head}.weight", f"{arch.head}.bias"}
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob["state_dict"] if "state_dict" in blob else blob
        state = {k.removeprefix("backbone."): v for k, v in state.items()
                 if not k.startswith("normalize.")}
        state = {k: v for k, v in state.items() if k not in head}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    except Exception as exc:
        raise ConfigError(f"train.pretrained: {path} is not a readable {arch.title} state dict "
                          f"({type(exc).__name__}: {exc})") from exc
    if unexpected or set(missing) != head:
        raise ConfigError(f"train.pretrained: {path} does not match {arch.title} (model.arch "
                          f"{arch.name}; missing {sorted(set(missing) - head)[:5]}, unexpected "
                          f"{sorted(unexpected)[:5]})")
    log.info("initialised the backbone from %s (%s fresh, %d classes)", path, arch.head, num_classes)
    return model


# --- the training loop --------------------------------------------------------------------

@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the duration (restored afterwards)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _amp_dtype(device: torch.device, settings: Mapping[str, Any]) -> torch.dtype | None:
    if device.type != "cuda" or not settings["amp"]:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded permutation cut into batches; a trailing batch of one image is dropped because
    BatchNorm cannot normalise a single sample."""
    order = torch.randperm(n, generator=generator)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks.pop()
    return chunks


def spread_indices(n: int, k: int) -> torch.Tensor:
    """``min(k, n)`` indices spread evenly over ``range(n)`` (``floor(i * n / k)``)."""
    k = min(k, n)
    return torch.arange(k) * n // k


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int,
                          amp_dtype: torch.dtype | None = None,
                          memory_format: torch.memory_format = torch.contiguous_format) -> None:
    """Replace every BatchNorm's running mean/variance by the average of its batch statistics
    over ``images`` (uint8, un-augmented), in batches of ``batch_size``: "precise BN"
    (Wu & Johnson 2021, Rethinking "Batch" in BatchNorm, section 3).

    After a short training (a few dozen steps, as in CPU-sized ROAR retrains) the exponential
    moving averages still lag the weights, and so does eval-mode accuracy; recomputing them
    from the final weights removes that noise. Weights are unchanged; the model is left in
    eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    try:
        for start in range(0, len(images), batch_size):
            x = images_to_float(images[start:start + batch_size]).contiguous(memory_format=memory_format)
            with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()


def train_classifier(train: Split, settings: Mapping[str, Any], *, num_classes: int, seed: int,
                     device: torch.device, evals: Mapping[str, Split] | None = None,
                     checkpoint_dir: Path | None = None, desc: str = "",
                     arch: Architecture | str = DEFAULT_ARCH) -> TrainResult:
    """Train a classifier of architecture ``arch`` (a description, or a built-in's name) on
    ``train`` (uint8 N x 3 x H x W at training resolution) with the ``train`` config section
    ``settings``; evaluate on every split of ``evals`` after each epoch (history column
    ``<name>_acc``).

    With ``checkpoint_dir``, the full state is saved there every ``checkpoint_every`` epochs
    and a matching checkpoint found there is resumed; the checkpoint is deleted once training
    finishes. Same inputs + seed on CPU give identical numbers, interrupted or not.
    """
    evals = dict(evals or {})
    if len(train) == 0:
        raise DataError(f"training split {train.meta.get('split', '')!r} of "
                        f"{train.meta.get('variant', '?')!r} has no images")
    if int(train.labels.max()) >= num_classes or int(train.labels.min()) < 0:
        raise DataError(f"training labels span {int(train.labels.min())}..{int(train.labels.max())} "
                        f"but num_classes is {num_classes}")
    with _deterministic(device.type == "cpu"):
        return _train(train, settings, num_classes, seed, device, evals, checkpoint_dir, desc, arch)


def _train(train: Split, settings: Mapping[str, Any], num_classes: int, seed: int,
           device: torch.device, evals: dict[str, Split], checkpoint_dir: Path | None,
           desc: str, arch: Architecture | str) -> TrainResult:
    generator = _seed_everything(seed)
    model = initial_model(num_classes, settings["pretrained"], seed, arch).to(device)
    memory_format = (torch.channels_last if device.type == "cuda" and settings["channels_last"]
                     else torch.contiguous_format)
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, settings))
    amp_dtype = _amp_dtype(device, settings)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    history: list[dict] = []
    start_epoch = 0
    host_images = np.array(train.images, order="C")  # the one read of the (memory-mapped) store
    fp = (checkpoint.fingerprint(settings, seed, num_classes, host_images, train.labels,
                                 arch=model.arch.name)
          if checkpoint_dir is not None else "")
    if checkpoint_dir is not None:
        state = checkpoint.load_checkpoint(checkpoint_dir, fp)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            checkpoint.restore_rng_states(state["rng"], generator)
            history = list(state["history"])
            start_epoch = int(state["epoch"])
            log.info("%sresuming from %s/%s after epoch %d", f"{desc}: " if desc else "",
                     checkpoint_dir, checkpoint.CHECKPOINT_FILE, start_epoch)

    step_model = torch.compile(model) if settings["compile"] and device.type == "cuda" else model
    images = torch.from_numpy(host_images).to(device)  # whole split resident on the device
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64)).to(device)
    aug = settings["augment"]
    epochs = settings["epochs"]
    fail_after = int(os.environ.get(FAIL_AFTER_EPOCH_ENV, "0") or 0)

    for epoch in range(start_epoch, epochs):
        tic = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        batches = epoch_batches(len(train), settings["batch_size"], generator)
        bar = tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{epochs}".strip(), leave=False,
                   unit="batch", mininterval=1.0)
        for step, index in enumerate(bar):
            index = index.to(device, non_blocking=True)
            x = images_to_float(images[index])
            x = random_resized_crop_flip(x, aug["random_resized_crop_scale"], aug["hflip"], generator)
            x = x.contiguous(memory_format=memory_format)
            y = labels[index]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = step_model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=settings["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
            seen += y.shape[0]
            if step % 10 == 9:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}")
        bar.close()
        scheduler.step()
        train_seconds = time.perf_counter() - tic
        row = {"epoch": epoch + 1, "loss": float(loss_sum) / seen, "train_acc": int(correct) / seen,
               "lr": lr, "seconds": train_seconds, "images_per_s": seen / train_seconds}
        if settings["recalibrate_bn_images"] and (evals or epoch + 1 == epochs):
            recalibrate_batchnorm(model, images[spread_indices(len(images), settings["recalibrate_bn_images"])],
                                  settings["batch_size"], amp_dtype, memory_format)
        for name, split in evals.items():
            row[f"{name}_acc"] = accuracy(model, split.images, split.labels, device)
        history.append(row)
        log.info("%sepoch %d/%d: loss %.4f, train acc %.3f%s, %.0f img/s", f"{desc}: " if desc else "",
                 epoch + 1, epochs, row["loss"], row["train_acc"],
                 "".join(f", {n} acc {row[f'{n}_acc']:.3f}" for n in evals), row["images_per_s"])
        done = epoch + 1
        if checkpoint_dir is not None and done % settings["checkpoint_every"] == 0 and done < epochs:
            checkpoint.save_checkpoint(checkpoint_dir, {
                "fingerprint": fp, "epoch": done, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": checkpoint.rng_states(generator)})
        if fail_after and done == fail_after:
            raise SimulatedKill(f"{FAIL_AFTER_EPOCH_ENV}={fail_after}: simulated kill after epoch {done}")

    model.eval()
    if checkpoint_dir is not None:
        checkpoint.remove_checkpoint(checkpoint_dir)
    final = dict(history[-1]) if history else {"epoch": 0}
    for name, split in evals.items():
        final.setdefault(f"{name}_acc", accuracy(model, split.images, split.labels, device))
    final["total_seconds"] = float(sum(r["seconds"] for r in history))
    final["resumed_from_epoch"] = start_epoch
    summary = ", ".join(f"{k} {v:.3f}" for k, v in final.items() if k.endswith("_acc") or k == "loss")
    log.info("%s trained %d epochs in %.1f s: %s", desc or "model", epochs, final["total_seconds"], summary)
    return TrainResult(model=model, history=history, final=final)
