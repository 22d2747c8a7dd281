"""Cost before running: jobs, seconds per job and totals per stage, from rates measured here.

Sizing a SLURM allocation (or deciding whether a config fits a weekend) needs the grid's
cost before the grid runs. This command counts every stage's jobs with the stage table
(:func:`xaipipe.pipeline.jobs`, so replicates, ROAR seeds, oracle grids and switched-off
stages are counted exactly as Snakemake and DVC will run them) and prices each job with a
model of what its library function does, in units measured on the current device::

    python -m xaipipe.cost --config config.yaml [config/demo.yaml ...]
    python -m xaipipe.cost --config config.yaml config/demo.yaml --check results

**Measured here** (about 15 s on an idle 2-core CPU for the demo, minutes when it is busy;
seconds on a GPU), on the device a
job of this config gets (``device``, :func:`xaipipe.device.claim_job_device`), at the
configured ``model.arch`` and ``resolution``, warm-up excluded:

* ``forward``: eval-mode forward passes, images/s (evaluation, prediction, occlusion,
  SCG/CCG, ROAD);
* ``backward``: forward + backward to the input, images/s (gradient-based attribution,
  feature visualisation, undesirable-pixel masks);
* ``train``: one training step as :func:`xaipipe.train.train_classifier` takes it
  (augmentation, ``train.amp`` / ``channels_last`` on CUDA, loss, backward, optimiser),
  images/s (train, ROAR/KAR retraining, the sanity check's shuffled-label model);
* ``impute``: seconds per (image, mask) system of ROAD's noisy linear imputation with
  ``roar.road_solver`` at the configured fractions (smooth attribution-like masks);
* ``model load``: building the model and loading its weights;
* ``start-up``: what a fresh stage process pays before it works. One Python process imports,
  one after the other, every module the active stages import at load time (torch,
  torchvision, pandas, scipy.stats, Captum, ... and the ``xaipipe`` modules;
  :func:`startup_modules` finds each stage's set in its script's import statements), so a
  stage's start-up is the interpreter's start plus the sum over its own modules, plus
  validating the config. With ``$XAIPIPE_FORKSERVER`` naming a live fork server (``make
  demo``; docs/orchestration.md, "Warm start") it is instead the wall time of handing
  ``workflow_scripts/<stage>.py --help`` to the server, the same for every stage.

On CPU the rates are measured at every thread count the active stages use (``Stage.threads``,
passed to the jobs as ``--threads``); on CUDA once.

**The model of a job** (:data:`WORK`, one function per stage): ``start-up + model load +
forward/forward_rate + backward/backward_rate + train/train_rate + imputations x impute + CPU
constants``. The image counts come from the config: the split sizes (``synthetic.*_images``;
VOC 2012's segmentation split, :data:`VOC_SPLITS`), ``train.epochs`` (per variant, with
``train_overrides``), ``roar.epochs``, ``explain.splits`` and the per-method cost
(:func:`method_passes`), ``featvis.steps`` x classes, ``undesirable.iterations`` x
``num_images`` x methods, the sanity cascade, SCG/CCG's kernels x rhos x mask sets x growth,
ROAD's fractions x 2 orders. The CPU constants (figures, the data stages' per-image work,
the report) were measured on the 2-core demo machine and are named below; they are small
next to the device work of a real grid.

**Assumptions**, each a source of error: jobs run alone on their threads (two jobs sharing a
core or a card each take longer); SCG/CCG items grow for :data:`CCG_GROWTH_SHARE` of
``max_growth`` on average (the real count depends on the model); a plug-in attribution
method costs one forward + backward per image; the VOC split sizes ignore
``dataset.min_fg_fraction``; downloading VOC is priced at :data:`VOC_DOWNLOAD_S`. Disk,
Snakemake's own scheduling and queueing are not included.

**Wall clock**: with ``--cores C`` and ``--gpus G`` (default: this machine's), a stage's
lower bound is ``max(total / slots, longest job)`` with ``slots = G x gpu.jobs_per_device``
for a GPU stage when ``G > 0``, else ``C // threads``; the whole run's lower bound is the
largest of the critical path (the longest chain of stage-to-stage dependencies, one job per
stage), the CPU core-seconds over ``C`` and the GPU seconds over the GPU slots.

``--check RESULTS_DIR`` compares every stage's estimate with Snakemake's benchmark files of a
finished run (``benchmarks/<stage>/<job>.tsv``, column ``s``, wall seconds) and flags stages
off by more than a factor of :data:`CHECK_FACTOR` (exit status 1).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from xaipipe import paths
from xaipipe.architectures import configured_architecture
from xaipipe.config import load_config, train_settings
from xaipipe.errors import ConfigError, XaipipeError
from xaipipe.explain.oracle import REFERENCE_METHODS
from xaipipe.pipeline import (STAGE_LIST, STAGES, Stage, active_stage_names, check_grid, jobs,
                              log_template)

REPO = Path(__file__).resolve().parents[1]

VOC_SPLITS = {"train": 1464, "val": 1449, "classes": 20}
"""PASCAL VOC 2012's segmentation train and val image lists and its classes (the index
drops images below ``dataset.min_fg_fraction``; the estimate does not)."""

CHECK_FACTOR = 2.0
"""``--check`` flags a stage whose estimate and measurement differ by more than this factor."""

# --- CPU constants, fitted to the demo on the 2-core machine (2026-12-04, seed 0) -----------

FIGURE_S = 0.6
"""One matplotlib figure saved as PNG (learning curve, cascade plot, saliency grid, ...)."""
SYNTHETIC_IMAGE_S = 0.004
"""make_synthetic: drawing and JPEG-encoding one image with its mask, per 64 x 64 pixels."""
INDEX_IMAGE_S = 0.0012
"""index: reading one image's annotation and mask."""
VARIANT_IMAGE_S = 0.0015
"""variant: decoding, resizing and storing one image of one split."""
VOC_DOWNLOAD_S = 900.0
"""download_voc without ``dataset.voc_root``: the 2 GB tarball at ~3 MB/s plus extraction
(network-dependent); with ``voc_root`` only the check, :data:`BOOKKEEPING_S`."""
BOOKKEEPING_S = 1.0
"""A CPU-only job's own work besides start-up when it only joins small files (roar_summary,
aggregate), per input job."""
BOOKKEEPING_PER_INPUT_S = 0.02
"""...plus this per file it reads."""
REPORT_S = 4.0
"""report: the HTML page with its figures (saliency grids, curves, tables)."""
SPEARMAN_PIXEL_S = 2e-7
"""sanity: one Spearman correlation, per pixel of the map (scipy ranks both maps)."""
CCG_GROWTH_SHARE = 0.2
"""SCG/CCG: on average an item stays in the growing set for this share of ``max_growth``
steps (items excluded by ``min_denominator`` never grow, most others stop after a few
dilations; the demo's models: 0.10-0.23 by variant, 0.02-0.06 with the Gaussian kernel and
0.17-0.43 with the zero kernel)."""
BG_ONLY_FRACTION = 0.3
"""The background-only images of the train and localisation stages impute the object's
pixels: priced as this share of one ROAD imputation per val image (the solver's work grows
with the pixels it fills; the demo's objects cover 0.31 of their image on average)."""


# --- image counts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Images per split and classes, from the config."""

    train: int
    val: int
    classes: int

    def split(self, name: str) -> int:
        """Images of a store split (``val_matched`` holds the val images)."""
        return self.train if name == "train" else self.val


def counts(config: Mapping) -> Counts:
    """Split sizes of the configured dataset (synthetic: its config; VOC: :data:`VOC_SPLITS`)."""
    if config["dataset"]["name"] == "synthetic":
        synthetic = config["synthetic"]
        return Counts(train=synthetic["train_images"], val=synthetic["val_images"],
                      classes=synthetic["num_classes"])
    return Counts(train=VOC_SPLITS["train"], val=VOC_SPLITS["val"], classes=VOC_SPLITS["classes"])


# --- the work of one job ----------------------------------------------------------------------

@dataclass(frozen=True)
class Work:
    """What one job does, in the units :class:`Rates` prices: images through the model
    (``forward``, ``backward`` = forward + backward to the input, ``train`` = training steps'
    images), ``imputations`` (ROAD (image, mask) systems), ``models`` loaded or built, and
    ``cpu_s`` seconds of other CPU work."""

    forward: float = 0.0
    backward: float = 0.0
    train: float = 0.0
    imputations: float = 0.0
    models: float = 0.0
    cpu_s: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                       for f in dataclasses.fields(self)})

    def times(self, k: float) -> "Work":
        return Work(**{f.name: getattr(self, f.name) * k for f in dataclasses.fields(self)})


def method_passes(config: Mapping, method: str) -> Work:
    """One image's attribution by ``method`` (Captum's cost per image): gradient, guided
    backprop and Grad-CAM one forward + backward, c-MWP two (its contrastive pass),
    integrated gradients ``ig_steps``, the noise tunnels ``noise_tunnel_samples``, occlusion
    one forward per window position plus the unoccluded one, random and the oracles no
    model pass; a plug-in method is assumed to cost one forward + backward."""
    explain = config["explain"]
    if method in REFERENCE_METHODS:
        return Work()
    if method == "integrated_gradients":
        return Work(backward=explain["ig_steps"])
    if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        return Work(backward=explain["noise_tunnel_samples"])
    if method == "cmwp":
        return Work(backward=2)
    if method == "occlusion":
        from xaipipe.explain.attribution import occlusion_window

        window, stride = occlusion_window(config["resolution"], explain["occlusion_patch"])
        positions = ((config["resolution"] - window) // stride + 1) ** 2
        return Work(forward=positions + 1)
    return Work(backward=1)


def _target_passes(config: Mapping) -> Work:
    """``explain.target: predicted`` costs one forward per image to choose the class."""
    return Work(forward=1) if config["explain"]["target"] == "predicted" else Work()


def _attribution(config: Mapping, methods: Sequence[str], images: int) -> Work:
    per_image = _target_passes(config)
    for method in methods:
        per_image = per_image + method_passes(config, method)
    return per_image.times(images)


def _training(config: Mapping, variant: str, epochs: int | None, *, evals: int) -> Work:
    """``epochs`` epochs (None: the variant's ``train.epochs``) on the train split
    (:func:`xaipipe.train.train_classifier`): the training steps, and after every epoch (only
    after the last without ``evals`` images) the precise-BN pass and the evaluation of
    ``evals`` images."""
    n = counts(config).train
    settings = train_settings(config, variant, epochs=epochs)
    recalibrate = min(settings["recalibrate_bn_images"], n)
    passes = settings["epochs"] if evals else min(settings["epochs"], 1)
    return Work(train=settings["epochs"] * n, forward=passes * (recalibrate + evals))


def _bg_only(config: Mapping, variant: str) -> Work:
    """Background-only val images (:func:`xaipipe.train_stage.background_only`): one
    imputation per val image with ``bg_only_fill: impute``."""
    impute = train_settings(config, variant)["bg_only_fill"] == "impute"
    return Work(imputations=counts(config).val * BG_ONLY_FRACTION if impute else 0.0)


def train_work(config: Mapping, job: Mapping) -> Work:
    """train / train_reference: ``train.epochs`` x train images of training steps, the val and
    val_matched evaluation after every epoch, then train accuracy, foreground-only,
    background-only (imputed) and prediction passes, and the learning-curve figure."""
    c = counts(config)
    variant = job.get("variant", "standard")
    return (_training(config, variant, None, evals=2 * c.val)
            + Work(forward=c.train + 3 * c.val, cpu_s=FIGURE_S) + _bg_only(config, variant))


def attribute_work(config: Mapping, job: Mapping) -> Work:
    """attribute: one method on every split of ``explain.splits``."""
    c = counts(config)
    images = sum(c.split(s) for s in config["explain"]["splits"])
    return _attribution(config, [job["method"]], images) + Work(models=1)


def featvis_work(config: Mapping, job: Mapping) -> Work:
    """featvis: ``featvis.steps`` steps on one image per class, class scores of the val
    images, a PNG per class and the top-images figure."""
    c = counts(config)
    return Work(backward=config["featvis"]["steps"] * c.classes, forward=c.val, models=1,
                cpu_s=FIGURE_S)


def undesirable_work(config: Mapping, job: Mapping) -> Work:
    """undesirable: per method (F-TC, F-NTC) ``iterations`` mask steps on ``num_images``
    images, plus the prediction before and after; the examples figure."""
    settings = config["undesirable"]
    n = min(settings["num_images"], counts(config).val)
    per_method = Work(backward=settings["iterations"] * n, forward=3 * n)
    return per_method.times(len(settings["methods"])) + Work(models=1, cpu_s=FIGURE_S)


def sanity_work(config: Mapping, job: Mapping) -> Work:
    """sanity: the maps of ``sanity.methods`` on ``num_images`` images for the trained model and
    after every cascade step; the shuffled-label model (``data_randomisation_epochs`` epochs,
    its train accuracy, its maps and the trained model's once more); the saliency figure's
    maps (``explain.methods``); Spearman correlations; one figure per method plus one."""
    options, explain = config["sanity"], config["explain"]
    c = counts(config)
    n = min(options["num_images"], c.val)
    steps = len(configured_architecture(config).cascade)
    maps = _attribution(config, options["methods"], n)
    comparisons = (steps + 1) * len(options["methods"]) * n
    work = maps.times(steps + 1) + Work(forward=n, models=2)
    if options["data_randomisation"]:
        epochs = options["data_randomisation_epochs"]  # null: train.epochs
        work = (work + _training(config, job["variant"], epochs, evals=0)
                + Work(forward=c.train) + maps.times(2))
        comparisons += len(options["methods"]) * n
    figure_images = min(explain["saliency_figure_images"], c.val)
    spearman = 2 * comparisons * config["resolution"] ** 2 * SPEARMAN_PIXEL_S
    return (work + _attribution(config, explain["methods"], figure_images)
            + Work(cpu_s=spearman + FIGURE_S * (len(options["methods"]) + 1)))


def roar_work(config: Mapping, job: Mapping) -> Work:
    """roar: retrain a fresh model for ``roar.epochs`` (null: the variant's ``train.epochs``)
    on the modified train split, precise BN at the end, evaluate on ``roar.eval_split``."""
    n_eval = counts(config).split(config["roar"]["eval_split"])
    return _training(config, job["variant"], config["roar"]["epochs"], evals=0) + Work(forward=n_eval)


def road_work(config: Mapping, job: Mapping) -> Work:
    """road: every fraction in both orders (MoRF, LeRF): one imputation and one forward per
    image of ``roar.eval_split``."""
    points = 2 * len(config["roar"]["fractions"])
    n_eval = counts(config).split(config["roar"]["eval_split"])
    return Work(forward=points * n_eval, imputations=points * n_eval, models=1)


def _gain(config: Mapping, sets: int) -> Work:
    """SCG/CCG of ``sets`` mask sets: per (kernel, rho) the image and base passes, one hybrid
    pass per item and the growth steps (:data:`CCG_GROWTH_SHARE` of ``max_growth``)."""
    settings = config["confidence_gain"]
    n = min(settings["num_images"], counts(config).val)
    growth = CCG_GROWTH_SHARE * settings["max_growth"]
    per_setting = 2 * n + sets * n * (1 + growth)
    return Work(forward=len(settings["kernels"]) * len(settings["rhos"]) * per_setting, models=1)


def confidence_gain_work(config: Mapping, job: Mapping) -> Work:
    """confidence_gain: SCG/CCG of every mask set (single methods at their heat-map
    dilations, and with ``agreement`` every pair)."""
    from xaipipe.evaluate.confidence_gain import mask_sets

    settings = config["confidence_gain"]
    sets = mask_sets(config["explain"]["methods"], settings["agreement"],
                     settings["heatmap_dilations"], settings["agreement_dilations"])
    return _gain(config, len(sets))


def localisation_work(config: Mapping, job: Mapping) -> Work:
    """localisation: full, foreground-only and background-only (imputed) val predictions."""
    return Work(forward=3 * counts(config).val, models=1) + _bg_only(config, job["variant"])


def localisation_untrained_work(config: Mapping, job: Mapping) -> Work:
    """localisation_untrained: an untrained model's maps of every model-dependent method of
    ``explain.methods`` on the val images."""
    methods = [m for m in config["explain"]["methods"] if m not in REFERENCE_METHODS]
    return _attribution(config, methods, counts(config).val) + Work(models=1)


def metric_validation_work(config: Mapping, job: Mapping) -> Work:
    """metric_validation: SCG/CCG of the two oracles and random, single undilated masks."""
    return _gain(config, len(REFERENCE_METHODS))


def featvis_metrics_work(config: Mapping, job: Mapping) -> Work:
    """featvis_metrics: every model (and the reference) judges every visualisation."""
    models = len(config["variants"]) * config["replicates"] + 1
    return Work(forward=models * models * counts(config).classes, models=models)


def make_synthetic_work(config: Mapping, job: Mapping) -> Work:
    """make_synthetic: draw and encode every image (per 64 x 64 pixels)."""
    c, size = counts(config), config["synthetic"]["image_size"]
    return Work(cpu_s=(c.train + c.val) * SYNTHETIC_IMAGE_S * (size / 64) ** 2)


def download_voc_work(config: Mapping, job: Mapping) -> Work:
    """download_voc: the download (:data:`VOC_DOWNLOAD_S`) or only the check of voc_root."""
    return Work(cpu_s=BOOKKEEPING_S if config["dataset"]["voc_root"] else VOC_DOWNLOAD_S)


def index_work(config: Mapping, job: Mapping) -> Work:
    c = counts(config)
    return Work(cpu_s=(c.train + c.val) * INDEX_IMAGE_S)


def variant_work(config: Mapping, job: Mapping) -> Work:
    """variant: the train, val and val_matched stores of one variant."""
    c = counts(config)
    return Work(cpu_s=(c.train + 2 * c.val) * VARIANT_IMAGE_S)


def _joining(stage_name: str) -> Callable[[Mapping, Mapping], Work]:
    """A bookkeeping stage that reads its inputs' small files: a constant plus per file."""
    def work(config: Mapping, job: Mapping) -> Work:
        from xaipipe.pipeline import job_files

        stage = STAGES[stage_name]
        inputs = sum(len(v) for v in job_files(stage, config, job, "inputs").values())
        return Work(cpu_s=BOOKKEEPING_S + BOOKKEEPING_PER_INPUT_S * inputs)
    work.__doc__ = f"{stage_name}: joins its inputs' small files (a constant plus per file)."
    return work


def report_work(config: Mapping, job: Mapping) -> Work:
    """report: the HTML page (:data:`REPORT_S`), its tables read per input file."""
    return _joining("report")(config, job) + Work(cpu_s=REPORT_S)


WORK: dict[str, Callable[[Mapping, Mapping], Work]] = {
    "download_voc": download_voc_work,
    "make_synthetic": make_synthetic_work,
    "index": index_work,
    "variant": variant_work,
    "train": train_work,
    "train_reference": train_work,
    "attribute": attribute_work,
    "featvis": featvis_work,
    "undesirable": undesirable_work,
    "sanity": sanity_work,
    "roar": roar_work,
    "road": road_work,
    "roar_summary": _joining("roar_summary"),
    "confidence_gain": confidence_gain_work,
    "localisation": localisation_work,
    "localisation_untrained": localisation_untrained_work,
    "metric_validation": metric_validation_work,
    "featvis_metrics": featvis_metrics_work,
    "aggregate": _joining("aggregate"),
    "report": report_work,
}
"""Stage name -> the :class:`Work` of one of its jobs (a test checks every stage has one)."""


# --- rates ------------------------------------------------------------------------------------

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


# --- start-up -------------------------------------------------------------------------------

PYTHON = "python"
"""The :attr:`Rates.startup_s` entry of the interpreter's own start (with a fork server: the
whole hand-off of a job to the warm server)."""
OWN = "xaipipe"


def _module_file(name: str) -> Path | None:
    """The source file of ``xaipipe`` module ``name`` (a package's ``__init__.py``), if any."""
    base = REPO.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _executed(body: Sequence[ast.stmt]):
    """The statements of ``body`` that run when the module is imported (function bodies do
    not; class bodies, ``if`` / ``try`` / ``with`` blocks do)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        for name in ("body", "orelse", "finalbody", "handlers"):
            yield from _executed([n for n in getattr(node, name, []) if isinstance(n, ast.stmt)])


def _imported_at_load(path: Path) -> set[str]:
    """Dotted names of the modules ``path`` imports when it is loaded."""
    names: set[str] = set()
    for node in _executed(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names
                      if _module_file(f"{node.module}.{alias.name}")}
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def _loads(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(third-party modules, ``xaipipe`` modules) that loading ``path`` imports, transitively
    through the ``xaipipe`` modules; lazy imports inside functions are left out."""
    seen: set[Path] = set()
    todo, third = [path], set()
    while todo:
        for name in _imported_at_load(todo.pop()):
            parts = name.split(".")
            if parts[0] != OWN:
                if parts[0] not in sys.stdlib_module_names and parts[0] != "__future__":
                    third.add(name)
                continue
            for depth in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return frozenset(third), frozenset(_module_name(f) for f in seen)


MODEL_IMPORTS = frozenset({"torch", "torchvision"})
"""What a stage that builds a model (``Stage.gpu``) imports besides its load-time imports:
:mod:`xaipipe.architectures` imports torchvision when it builds one."""


@functools.lru_cache(maxsize=None)
def startup_modules(stage_name: str) -> frozenset[str]:
    """The modules a fresh process of the stage imports before it works: those its script
    imports when loaded, transitively through the ``xaipipe`` modules it loads (third-party
    ones by the dotted name the import statement gives), plus :data:`MODEL_IMPORTS` for a
    stage that builds a model. Hand-written because :func:`xaipipe.dvcgen.library_modules`
    follows lazy imports inside functions too, which a start-up does not pay."""
    stage = STAGES[stage_name]
    third, own = _loads(REPO / stage.script)
    return third | own | (MODEL_IMPORTS if stage.gpu else frozenset())


IMPORT_PROBE = """import importlib, json, sys, time
seconds = {}
for name in sys.argv[1:]:
    tic = time.perf_counter()
    importlib.import_module(name)
    seconds[name] = time.perf_counter() - tic
print(json.dumps(seconds))
"""


def _run_timed(command: list[str], what: str) -> tuple[float, str]:
    tic = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        raise XaipipeError(f"measuring {what}: {' '.join(command[:3])} ... exited "
                           f"{done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def import_order(stage_names: Sequence[str]) -> list[str]:
    """Every start-up module of the stages, each after what it needs: third-party modules
    first, the most widely used first (numpy before pandas, torch before torchvision and
    Captum), then the ``xaipipe`` modules, those that load fewer others first."""
    modules = set().union(*(startup_modules(name) for name in stage_names))
    users = {top: sum(any(m.split(".")[0] == top for m in startup_modules(name))
                      for name in stage_names) for top in {m.split(".")[0] for m in modules}}
    third = sorted((m for m in modules if m.split(".")[0] != OWN),
                   key=lambda m: (-users[m.split(".")[0]], m.split(".")[0], m.count("."), m))
    own = sorted((m for m in modules if m.split(".")[0] == OWN),
                 key=lambda m: (len(_loads(_module_file(m))[1]), m))
    return third + own


def measure_imports(stage_names: Sequence[str]) -> dict[str, float]:
    """Seconds a fresh process spends importing each start-up module of the stages
    (:func:`startup_modules`) and starting and ending the interpreter (:data:`PYTHON`): one
    process imports them in :func:`import_order`, so each figure is what that module adds to
    what came before it, and a stage's start-up is the sum over its own modules."""
    order = import_order(stage_names)
    seconds = json.loads(_run_timed([sys.executable, "-c", IMPORT_PROBE, *order], "import times")[1])
    return {**seconds, PYTHON: _run_timed([sys.executable, "-c", "pass"], "Python's start-up")[0]}


def measure_forkserver_startup(config_files: Sequence[str], stage: Stage) -> dict[str, float]:
    """With a live fork server: the wall seconds of handing ``python workflow_scripts/<stage>.py
    --help`` to it (every package is already imported there), as the :data:`PYTHON` entry."""
    command = [sys.executable, str(REPO / stage.script), "--config", *config_files, "--help"]
    return {PYTHON: _run_timed(command, "the fork server's start-up")[0]}


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


# --- the estimate -----------------------------------------------------------------------------

def stage_jobs_seconds(config: Mapping, rates: Rates, stage: Stage) -> list[float]:
    """Estimated wall seconds of every job of ``stage`` (one per :func:`jobs` entry)."""
    modules = startup_modules(stage.name)
    return [rates.seconds(WORK[stage.name](config, job), threads=stage.threads, modules=modules)
            for job in jobs(stage, config)]


def estimate(config: Mapping, rates: Rates) -> pd.DataFrame:
    """One row per active stage: ``stage``, ``jobs``, ``gpu``, ``threads``, ``startup_s`` (a
    job's start-up), ``per_job_s`` (mean, start-up included), ``longest_s``, ``total_s``."""
    rows = []
    for name in active_stage_names(config):
        stage = STAGES[name]
        seconds = stage_jobs_seconds(config, rates, stage)
        rows.append({"stage": name, "jobs": len(seconds), "gpu": stage.gpu,
                     "threads": stage.threads, "startup_s": rates.startup(startup_modules(name)),
                     "per_job_s": sum(seconds) / max(len(seconds), 1),
                     "longest_s": max(seconds, default=0.0), "total_s": sum(seconds)})
    return pd.DataFrame(rows)


def stage_dependencies() -> dict[str, set[str]]:
    """Stage -> the stages whose outputs it reads (matching path templates of the table)."""
    producers: dict[str, str] = {}
    for stage in STAGE_LIST:
        for entry in stage.outputs.values():
            if entry.template:
                producers[entry.template] = stage.name
    return {stage.name: {producers[e.template] for e in stage.inputs.values()
                         if e.template in producers and producers[e.template] != stage.name}
            for stage in STAGE_LIST}


def critical_path(table: pd.DataFrame) -> tuple[float, list[str]]:
    """The longest chain of dependent stages, one (longest) job per stage: seconds, stages."""
    longest = dict(zip(table["stage"], table["longest_s"]))
    needs = stage_dependencies()
    best: dict[str, tuple[float, list[str]]] = {}
    for name in longest:  # the table is in stage-table order: producers come first
        before = max((best[d] for d in needs[name] if d in best), default=(0.0, []))
        best[name] = (before[0] + longest[name], before[1] + [name])
    return max(best.values(), default=(0.0, []))


@dataclass(frozen=True)
class Slots:
    """Parallel capacity: CPU cores, GPUs and jobs per GPU (``gpu.jobs_per_device``)."""

    cores: int
    gpus: int
    jobs_per_gpu: int

    def of(self, gpu: bool, threads: int) -> int:
        """Jobs of a stage that can run at once."""
        if gpu and self.gpus:
            return self.gpus * self.jobs_per_gpu
        return max(1, self.cores // max(1, threads))


def with_wall_clock(table: pd.DataFrame, slots: Slots) -> pd.DataFrame:
    """Add ``slots`` and ``wall_s = max(total / slots, longest job)`` per stage."""
    table = table.copy()
    table["slots"] = [slots.of(g, t) for g, t in zip(table["gpu"], table["threads"])]
    table["wall_s"] = [max(total / s, longest) for total, s, longest in
                       zip(table["total_s"], table["slots"], table["longest_s"])]
    return table


def totals(table: pd.DataFrame, slots: Slots) -> dict[str, float]:
    """GPU seconds, CPU core-seconds and the whole run's wall-clock lower bound."""
    on_gpu = table["gpu"] & (slots.gpus > 0)
    gpu_s = float(table.loc[on_gpu, "total_s"].sum())
    cpu_core_s = float((table.loc[~on_gpu, "total_s"] * table.loc[~on_gpu, "threads"]).sum())
    path_s, path = critical_path(table)
    bounds = [path_s, cpu_core_s / slots.cores]
    if slots.gpus:
        bounds.append(gpu_s / (slots.gpus * slots.jobs_per_gpu))
    return {"jobs": int(table["jobs"].sum()), "job_s": float(table["total_s"].sum()),
            "gpu_s": gpu_s, "cpu_core_s": cpu_core_s, "critical_path_s": path_s,
            "critical_path": path, "wall_lower_bound_s": max(bounds)}


# --- checking against a finished run ---------------------------------------------------------

def measured(config: Mapping, results_dir: str | Path) -> pd.DataFrame:
    """Per active stage: ``measured_jobs`` (benchmark files found), ``measured_per_job_s`` and
    ``measured_total_s`` (column ``s`` of Snakemake's ``benchmarks/<stage>/<job>.tsv``)."""
    config = {**config, "results_dir": str(results_dir)}
    rows = []
    for name in active_stage_names(config):
        stage = STAGES[name]
        template = log_template(stage, paths.BENCHMARK_T)
        seconds = []
        for job in jobs(stage, config):
            tsv = paths.at(config, template, **job)
            if tsv.is_file():
                seconds.append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
        rows.append({"stage": name, "measured_jobs": len(seconds),
                     "measured_per_job_s": sum(seconds) / len(seconds) if seconds else math.nan,
                     "measured_total_s": sum(seconds)})
    return pd.DataFrame(rows)


def compare(table: pd.DataFrame, found: pd.DataFrame, factor: float = CHECK_FACTOR) -> pd.DataFrame:
    """The estimate beside the measurement: ``ratio`` = estimated / measured seconds per job,
    ``flag`` where it is above ``factor`` or below ``1 / factor`` (or nothing was measured)."""
    both = table.merge(found, on="stage")
    both["ratio"] = both["per_job_s"] / both["measured_per_job_s"]
    both["flag"] = [("no benchmark files" if n == 0 else
                     f"off by more than {factor:g}x" if not 1 / factor <= r <= factor else "")
                    for n, r in zip(both["measured_jobs"], both["ratio"])]
    return both


# --- the command ------------------------------------------------------------------------------

def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe_rates(rates: Rates) -> str:
    per_threads = "; ".join(
        f"{'' if t == '0' else f'{t} thread(s): '}forward {rates.forward[t]:.0f}, "
        f"forward+backward {rates.backward[t]:.0f}, train {rates.train[t]:.0f} images/s"
        for t in rates.forward)
    heaviest = sorted((s, m) for m, s in rates.startup_s.items() if m != PYTHON)[-4:]
    startup = ("through the fork server" if rates.forkserver else
               "heaviest imports " + ", ".join(f"{m} {s:.2f} s" for s, m in reversed(heaviest)))
    return (f"rates on {rates.device} ({rates.arch}, {rates.resolution} px; load average "
            f"{rates.load:.1f}; measured in {rates.measure_s:.1f} s): {per_threads}\n"
            f"ROAD imputation {rates.impute_s * 1000:.1f} ms per image and mask; model load "
            f"{rates.model_load_s:.2f} s; job start-up: Python {rates.startup_s[PYTHON]:.2f} s "
            f"({startup}), config {rates.config_s:.2f} s")


def report(table: pd.DataFrame, slots: Slots) -> str:
    """The printed table and totals."""
    shown = table.assign(on=["gpu" if g else "cpu" for g in table["gpu"]])
    seconds = ("startup_s", "per_job_s", "total_s", "wall_s")
    text = shown.to_string(index=False, columns=["stage", "jobs", "on", "threads", *seconds[:2],
                                                 "total_s", "slots", "wall_s"],
                           formatters={c: "{:.1f}".format for c in seconds})
    t = totals(table, slots)
    return (f"{text}\n\n{t['jobs']} jobs, {t['job_s']:.0f} s of job time "
            f"({t['job_s'] / 3600:.2f} h)\n"
            f"GPU time: {t['gpu_s'] / 3600:.2f} GPU-hours"
            f"{'' if slots.gpus else ' (no GPU counted: every stage on CPU)'}; "
            f"CPU time: {t['cpu_core_s'] / 3600:.2f} core-hours\n"
            f"critical path {_hms(t['critical_path_s'])} ({' -> '.join(t['critical_path'])})\n"
            f"wall clock with {slots.cores} cores and {slots.gpus} GPU(s) x "
            f"{slots.jobs_per_gpu} job(s): at least {_hms(t['wall_lower_bound_s'])}"
            + "".join(f"\n{line}" for line in runtime_warnings(table)))


def runtime_warnings(table: pd.DataFrame) -> list[str]:
    """A line per stage whose longest job is estimated to outlast its rule's ``runtime``
    (``Stage.runtime`` minutes, the SLURM time limit the profile requests)."""
    return [f"{name}: the longest job is estimated at {longest / 60:.0f} min but the rule asks "
            f"for runtime={STAGES[name].runtime} min: raise it in the profile's set-resources"
            for name, longest in zip(table["stage"], table["longest_s"])
            if longest > 60 * STAGES[name].runtime]


def report_check(both: pd.DataFrame) -> str:
    text = both.to_string(index=False, columns=["stage", "jobs", "measured_jobs", "per_job_s",
                                                "measured_per_job_s", "ratio", "flag"],
                          formatters={"per_job_s": "{:.1f}".format,
                                      "measured_per_job_s": "{:.1f}".format,
                                      "ratio": "{:.2f}".format})
    est = (both["per_job_s"] * both["measured_jobs"]).sum()
    found = both["measured_total_s"].sum()
    return (f"{text}\n\nthe {int(both['measured_jobs'].sum())} measured jobs: estimated "
            f"{est:.0f} s, measured {found:.0f} s of job time "
            f"(ratio {est / found if found else math.nan:.2f})")


def _default_gpus() -> int:
    from xaipipe.device import cuda_device_count

    return cuda_device_count()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xaipipe.cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", default=["config.yaml"], metavar="YAML",
                   help="config files, merged in order (as --configfile)")
    p.add_argument("--cores", type=int, default=os.cpu_count(), metavar="C",
                   help="CPU cores for the wall-clock bound (default: this machine's)")
    p.add_argument("--gpus", type=int, default=None, metavar="G",
                   help="GPUs for the wall-clock bound (default: this machine's; 0 = all "
                        "stages on CPU)")
    p.add_argument("--rates", metavar="JSON", help="use rates saved by --save-rates instead "
                   "of measuring (e.g. measured on a GPU node, estimated on the login node)")
    p.add_argument("--save-rates", metavar="JSON", help="write the measured rates here")
    p.add_argument("--check", metavar="RESULTS_DIR",
                   help="compare with the benchmark files of a finished run of this config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        tic = time.perf_counter()
        config = load_config(args.config)
        check_grid(config)
        config_s = time.perf_counter() - tic
        if args.rates:
            rates = read_rates(args.rates)
            rates.check_fits(config, args.rates)
        else:
            rates = measure_rates(config, args.config, config_s=config_s)
        if args.save_rates:
            from xaipipe.io import write_json

            write_json(args.save_rates, dataclasses.asdict(rates))
        slots = Slots(cores=max(1, args.cores), jobs_per_gpu=config["gpu"]["jobs_per_device"],
                      gpus=_default_gpus() if args.gpus is None else args.gpus)
        table = with_wall_clock(estimate(config, rates), slots)
        print(describe_rates(rates), end="\n\n")
        print(report(table, slots))
        if args.check:
            both = compare(table, measured(config, args.check))
            print(f"\ncheck against {args.check}/benchmarks (ratio = estimated / measured "
                  "seconds per job):")
            print(report_check(both))
            return 1 if both["flag"].astype(bool).any() else 0
    except XaipipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
