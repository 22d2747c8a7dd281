"""Measuring the device: images/s of the configured model forward, forward + backward and in
training, ROAD's imputation, a model load and a job's start-up (:class:`Rates`)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from xaipipe.architectures import configured_architecture
from xaipipe.config import train_settings
from xaipipe.cost.startup import (PYTHON, measure_forkserver_startup, measure_imports)
from xaipipe.cost.work import BG_ONLY_FRACTION, Work, counts
from xaipipe.errors import ConfigError
from xaipipe.pipeline import STAGES, active_stage_names


@dataclass(frozen=True)
class Rates:
    """What the device does per second, measured by :func:`measure_rates`; ``forward``,
    ``backward`` and ``train`` are images/s per torch thread count (a string key, for JSON)."""

    device: str
    arch: str
    resolution: int
    forward: Mapping[str, float]
    backward: Mapping[str, float]
    train: Mapping[str, float]
    impute_s: float
    model_load_s: float
    startup_s: Mapping[str, float]
    config_s: float
    forkserver: bool
    load: float
    measure_s: float = 0.0

    def of(self, table: Mapping[str, float], threads: int) -> float:
        """The rate at ``threads`` torch threads: its own entry, else the nearest measured
        thread count (on CUDA there is one entry, ``"0"``)."""
        return table[min(table, key=lambda t: (abs(int(t) - threads), int(t)))]

    def startup(self, modules: frozenset[str]) -> float:
        """A fresh job process's start-up: the interpreter and importing ``modules``
        (:func:`startup_modules`); with a fork server, the hand-off alone. Plus validating
        the config."""
        imports = 0.0 if self.forkserver else sum(self.startup_s.get(m, 0.0) for m in modules)
        return self.startup_s[PYTHON] + imports + self.config_s

    def seconds(self, work: Work, *, threads: int, modules: frozenset[str]) -> float:
        """One job's wall seconds: start-up, model loads and the work at these rates."""
        return (self.startup(modules) + work.models * self.model_load_s
                + work.forward / self.of(self.forward, threads)
                + work.backward / self.of(self.backward, threads)
                + work.train / self.of(self.train, threads)
                + work.imputations * self.impute_s + work.cpu_s)

    def check_fits(self, config: Mapping, source: str) -> None:
        """A :class:`ConfigError` when these rates were measured for another model or size."""
        if (self.arch, self.resolution) != (config["model"]["arch"], config["resolution"]):
            raise ConfigError(f"{source} holds rates of {self.arch} at {self.resolution} px but "
                              f"the config has model.arch {config['model']['arch']} at resolution "
                              f"{config['resolution']}; measure again (leave out --rates)")


def _timed(step: Callable[[], Any], sync: Callable[[], None]) -> float:
    tic = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - tic


def images_per_s(call: Callable[[], Any], *, batch: int, sync: Callable[[], None],
                 budget_s: float = 0.8) -> float:
    """Images/s of ``call()`` on a batch of ``batch``: one warm-up call excluded, then calls
    timed until ``budget_s`` has passed (at least two). The batch is the stages' own (a
    smaller one pays per-call overheads, and on a busy CPU the threads' synchronisation,
    far more often than a job does)."""
    call()
    sync()
    spent, done = 0.0, 0
    while done < 2 or spent < budget_s:
        spent += _timed(call, sync)
        done += 1
    return batch * done / spent


def _model_calls(config: Mapping, device, settings: Mapping) -> dict[str, tuple[int, Callable]]:
    """The three measured operations on a fresh model, each ``(batch, call)``: ``forward``
    and ``train`` at ``train.batch_size``, ``backward`` (Captum's Saliency: the target
    logit's gradient with respect to the input) at ``explain.batch_size``."""
    import torch
    import torch.nn.functional as F

    from xaipipe.augment import random_resized_crop_flip
    from xaipipe.models import build_model, images_to_float
    from xaipipe.train import build_optimizer

    res, classes = config["resolution"], counts(config).classes
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda and settings["channels_last"] else torch.contiguous_format
    amp = ((torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
           if cuda and settings["amp"] else None)
    torch.backends.cudnn.benchmark = cuda
    model = build_model(classes, configured_architecture(config)).to(device)
    optimizer = build_optimizer(model, settings)
    generator = torch.Generator().manual_seed(0)
    aug = settings["augment"]

    def data(batch: int):
        images = torch.randint(0, 256, (batch, 3, res, res), dtype=torch.uint8, device=device)
        return images, torch.randint(0, classes, (batch,), device=device)

    @torch.no_grad()
    def forward(images, labels):
        model.eval()
        model(images_to_float(images.clone()))

    def backward(images, labels):
        model.eval()
        x = images_to_float(images.clone()).requires_grad_(True)
        torch.autograd.grad(model(x).gather(1, labels[:, None]).sum(), x)

    def train(images, labels):
        model.train()
        x = random_resized_crop_flip(images_to_float(images.clone()),
                                     aug["random_resized_crop_scale"], aug["hflip"], generator)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x.contiguous(memory_format=memory_format)).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    batches = {"forward": settings["batch_size"], "backward": config["explain"]["batch_size"],
               "train": settings["batch_size"]}
    functions = {"forward": forward, "backward": backward, "train": train}
    calls = {}
    for name, batch in batches.items():
        tensors = data(batch)
        calls[name] = (batch, lambda f=functions[name], t=tensors: f(*t))
    return calls


def measure_impute(config: Mapping, device) -> float:
    """Seconds per (image, mask) system of ROAD's imputation (``roar.road_solver``) at every
    configured fraction in both orders, on smooth random maps of 2 images (upsampled 8 x 8
    noise, like attribution maps: the solver's iterations depend on the masks' shape, and
    scattered random-pixel masks are solved faster than the blobs of a real map)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from xaipipe.evaluate.road import batch_linear_imputation
    from xaipipe.evaluate.removal import pixel_count, rank_mask, tie_orders

    res, roar = config["resolution"], config["roar"]
    fractions = [f for f in roar["fractions"] if 0 < f < 1] or [BG_ONLY_FRACTION]
    generator = torch.Generator().manual_seed(0)
    maps = F.interpolate(torch.rand(2, 1, 8, 8, generator=generator), size=(res, res),
                         mode="bilinear", align_corners=False)[:, 0]
    ties = tie_orders(["a", "b"], res * res, 0)
    removed = np.stack([rank_mask(maps, pixel_count(f, res, res), most_relevant=order, ties=ties).numpy()
                        for f in fractions for order in (True, False)])
    images = np.random.default_rng(0).random((2, 3, res, res))
    tic = time.perf_counter()
    batch_linear_imputation(images, removed, solver=roar["road_solver"],
                            tolerance=roar["road_tolerance"], device=device)
    return (time.perf_counter() - tic) / removed.shape[0] / removed.shape[1]


def measure_model_load(config: Mapping) -> float:
    """Seconds to build the model and load a state dict into it (as every stage's load_model)."""
    import io

    import torch

    from xaipipe.models import build_model

    arch, classes = configured_architecture(config), counts(config).classes
    buffer = io.BytesIO()
    torch.save(build_model(classes, arch).state_dict(), buffer)
    tic = time.perf_counter()
    buffer.seek(0)
    build_model(classes, arch).load_state_dict(torch.load(buffer, weights_only=True))
    return time.perf_counter() - tic


def thread_counts(config: Mapping) -> list[int]:
    """The torch thread counts of the active stages that use a model (``Stage.threads``)."""
    return sorted({STAGES[name].threads for name in active_stage_names(config)
                   if STAGES[name].gpu})


def measure_rates(config: Mapping, config_files: Sequence[str], *, config_s: float) -> Rates:
    """Measure every rate of :class:`Rates` on the device a job of ``config`` gets."""
    import torch

    from xaipipe.device import claim_job_device
    from xaipipe.forkserver import ENV as FORKSERVER_ENV

    started = time.perf_counter()
    settings = train_settings(config, config["variants"][0])
    rates: dict[str, dict[str, float]] = {"forward": {}, "backward": {}, "train": {}}
    before = torch.get_num_threads()
    with claim_job_device(config) as device:
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        threads = [0] if device.type == "cuda" else thread_counts(config)
        try:
            for count in threads:
                if count:
                    torch.set_num_threads(count)
                for name, (batch, call) in _model_calls(config, device, settings).items():
                    rates[name][str(count)] = images_per_s(call, batch=batch, sync=sync)
            torch.set_num_threads(min(threads) or before)
            impute_s = measure_impute(config, device)
        finally:
            torch.set_num_threads(before)
    active = active_stage_names(config)
    forkserver = bool(os.environ.get(FORKSERVER_ENV))
    startup = (measure_forkserver_startup(config_files, STAGES[active[0]]) if forkserver
               else measure_imports(active))
    return Rates(device=str(device), arch=config["model"]["arch"], resolution=config["resolution"],
                 forward=rates["forward"], backward=rates["backward"], train=rates["train"],
                 impute_s=impute_s, model_load_s=measure_model_load(config), startup_s=startup,
                 config_s=config_s, forkserver=forkserver,
                 load=os.getloadavg()[0], measure_s=time.perf_counter() - started)


def read_rates(path: str | Path) -> Rates:
    """Rates saved by ``--save-rates``."""
    try:
        return Rates(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--rates {path}: not a rates file written by --save-rates "
                          f"({type(exc).__name__}: {exc}); measure again without --rates") from exc
