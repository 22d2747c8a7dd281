"""What one job of each stage does, in the units :class:`~xaipipe.cost.rates.Rates` prices:
images through the model, training steps, ROAD imputations, model loads and CPU constants, all
read from the config (the model of a job is described in :mod:`xaipipe.cost`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from xaipipe.architectures import configured_architecture
from xaipipe.config import train_settings
from xaipipe.explain.oracle import REFERENCE_METHODS
from xaipipe.pipeline import STAGES

VOC_SPLITS = {"train": 1464, "val": 1449, "classes": 20}
"""PASCAL VOC 2012's segmentation train and val image lists and its classes (the index
drops images below ``dataset.min_fg_fraction``; the estimate does not)."""

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
