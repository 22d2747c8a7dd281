"""Feature visualisation by activation maximisation, one image per class.

Nielsen et al., "Targeted Background Removal Creates Interpretable Feature Visualizations",
section IV-V: every variant's model (theirs a ResNet18; here ``model.arch``) is visualised
with "activation maximization with L2 regularization" (Simonyan et al. 2014, their [18]), with
equal settings for all variants::

    I*_c = argmax_I  S_c(I) - lambda * ||I||_2^2                     (Simonyan et al., Eq. 1)

where ``S_c`` is the (pre-softmax) logit of class ``c``. All ``C`` classes are optimised at
once as one batch of ``C`` images (row ``c`` maximises logit ``c``). Optimisation happens in
pixel space ``[0, 1]`` (the models normalise internally) with Adam, projecting back onto
``[0, 1]`` after every step (``mode: l2``, the paper's method).

``mode: regularised`` is a separate, clearly non-paper mode that adds the usual Distill
regularisers (Olah et al. 2017, the paper's [1]): random jitter, a total-variation penalty
and, optionally, a 1/f-scaled Fourier parameterisation behind a sigmoid.

Library functions here are hand-written: neither Captum nor torchvision ships activation
maximisation (Captum's ``optim`` module is not part of its stable API).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from xaipipe import paths
from xaipipe.data.store import read_split
from xaipipe.device import claim_job_device
from xaipipe.errors import DataError
from xaipipe.io import atomic_path, write_json
from xaipipe.models import IMAGENET_MEAN, IMAGENET_STD, images_to_float, load_model

log = logging.getLogger(__name__)

FEATVIS_ARRAY = "featvis.npy"
SUMMARY_FILE = "summary.json"
TOP_IMAGES_FILE = "top_images.png"
FOURIER_INIT_STD = 0.01
"""Spectrum start of the Fourier parameterisation (the value Lucid/Lucent use)."""


# --- parameterisations -------------------------------------------------------------------

class PixelImage(nn.Module):
    """Images optimised directly as pixels; :meth:`project` clamps them back into [0, 1]."""

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.pixels = nn.Parameter(start.clone())

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def project(self) -> None:
        self.pixels.clamp_(0.0, 1.0)


class FourierImage(nn.Module):
    """Images as a real-FFT spectrum scaled by 1/frequency, mapped to [0, 1] by a sigmoid
    (Olah et al. 2017, "Feature Visualization", section "Preconditioning and
    parameterization"; the scaling follows Lucid's ``fft_image``)."""

    def __init__(self, num: int, size: tuple[int, int], generator: torch.Generator):
        super().__init__()
        height, width = size
        freqs = torch.sqrt(torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2)
        self.register_buffer("scale", 1.0 / freqs.clamp(min=1.0 / max(height, width)))
        self.size = size
        start = FOURIER_INIT_STD * torch.randn(num, 3, height, width // 2 + 1, 2, generator=generator)
        self.spectrum = nn.Parameter(start)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return torch.sigmoid(torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0)

    def project(self) -> None:
        """Nothing to project: the sigmoid keeps every pixel in (0, 1)."""


# --- objective terms ---------------------------------------------------------------------

def target_logits(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``S_c(I)`` of Simonyan et al. Eq. 1: row ``i``'s logit of class ``classes[i]``."""
    return logits.gather(1, classes.view(-1, 1)).squeeze(1)


def l2_penalty(images: torch.Tensor, reference: str = "normalized") -> torch.Tensor:
    """``||I||_2^2`` per image (Simonyan et al. Eq. 1), summed over channels and pixels.

    ``reference="normalized"`` measures ``I`` as the network sees it, ``(I - mean) / std``
    (Simonyan et al. optimise the mean-subtracted image, so zero is the mean colour);
    ``"pixel"`` measures the raw [0, 1] image, which pulls towards black.
    """
    if reference == "normalized":
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        images = (images - mean) / std
    elif reference != "pixel":
        raise ValueError(f"unknown l2 reference {reference!r} (normalized or pixel)")
    return images.pow(2).flatten(1).sum(1)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertical and horizontal neighbours, per image
    (the anisotropic TV penalty of Mahendran & Vedaldi 2016 with exponent 1)."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def jitter(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Roll the whole batch by a random offset in ``[-max_shift, max_shift]`` per axis."""
    if max_shift == 0:
        return images
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))


# --- optimisation ------------------------------------------------------------------------

@dataclass
class FeatvisResult:
    """``images`` C x 3 x H x W in [0, 1]; logits C x C of the start and final images."""

    images: torch.Tensor
    initial_logits: torch.Tensor
    final_logits: torch.Tensor

    def summary(self, class_names: Sequence[str]) -> dict:
        """Per class: initial/final target logit and softmax probability."""
        classes = torch.arange(len(class_names))
        out = {}
        for name, logits in (("initial", self.initial_logits), ("final", self.final_logits)):
            out[f"{name}_logit"] = target_logits(logits, classes).tolist()
            out[f"{name}_prob"] = target_logits(logits.softmax(1), classes).tolist()
        return {
            str(c): {"class_name": class_names[c], **{key: values[c] for key, values in out.items()}}
            for c in range(len(class_names))
        }


def _parameterisation(num: int, size: tuple[int, int], settings: Mapping, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    if settings["mode"] == "regularised" and settings["fourier"]:
        return FourierImage(num, size, generator)
    start = 0.5 + settings["init_std"] * torch.randn(num, 3, *size, generator=generator)
    return PixelImage(start.clamp(0.0, 1.0))


def visualise_classes(model: nn.Module, num_classes: int, size: tuple[int, int], settings: Mapping,
                      seed: int, device: torch.device | str = "cpu", progress: bool = True) -> FeatvisResult:
    """Maximise every class logit of ``model`` at once (one batch row per class).

    ``settings`` is the ``featvis`` config section. The random start depends only on
    ``seed``, so every variant starts from the same images. ``model`` must take [0, 1]
    images; it is put in eval mode with its parameters frozen (``requires_grad=False``).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    image = _parameterisation(num_classes, size, settings, seed).to(device)
    classes = torch.arange(num_classes, device=device)
    regularised = settings["mode"] == "regularised"
    jitter_generator = torch.Generator().manual_seed(seed + 1)
    optimiser = torch.optim.Adam(image.parameters(), lr=settings["lr"])
    with torch.no_grad():
        initial_logits = model(image()).float().cpu()
    for _ in tqdm(range(settings["steps"]), desc="featvis", disable=not progress, leave=False):
        optimiser.zero_grad(set_to_none=True)
        images = image()
        seen = jitter(images, settings["jitter"], jitter_generator) if regularised else images
        objective = target_logits(model(seen), classes) - settings["l2_weight"] * l2_penalty(images, settings["l2_reference"])
        if regularised:
            objective = objective - settings["tv_weight"] * total_variation(images)
        (-objective.sum()).backward()
        optimiser.step()
        image.project()
    with torch.no_grad():
        images = image().detach()
        final_logits = model(images).float().cpu()
    return FeatvisResult(images=images.cpu(), initial_logits=initial_logits, final_logits=final_logits)


@torch.no_grad()
def class_scores(model: nn.Module, images: np.ndarray, batch_size: int,
                 device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """Logits (N x C, float32) of uint8 N x 3 x H x W images, in batches."""
    device = torch.device(device)
    model = model.to(device).eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="score val", disable=not progress, leave=False):
        batch = images_to_float(torch.from_numpy(np.array(images[start:start + batch_size]))).to(device)
        chunks.append(model(batch).float().cpu())
    return torch.cat(chunks).numpy()


def top_activating(scores: np.ndarray, k: int) -> np.ndarray:
    """C x min(k, N) row indices with the highest logit per class, best first (Fig. 1 left).
    Ties keep the lower row index first (stable sort), so the choice is deterministic."""
    order = np.argsort(-scores, axis=0, kind="stable")[:k]
    return order.T


# --- outputs -----------------------------------------------------------------------------

def class_file_name(index: int, name: str) -> str:
    """``class_<idx>_<name>.png`` with anything but letters, digits, ``-`` and ``_`` replaced."""
    return f"class_{index}_{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}.png"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 [0, 255] (rounded)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def _hwc(image: np.ndarray) -> np.ndarray:
    """3 x H x W -> H x W x 3 for matplotlib."""
    return np.transpose(np.asarray(image), (1, 2, 0))


def top_images_figure(images: np.ndarray, top: np.ndarray, scores: np.ndarray,
                      class_names: Sequence[str], out_png: str | Path) -> None:
    """One row per class: its top-activating uint8 images side by side, logit in the label."""
    num_classes, k = top.shape
    fig = Figure(figsize=(1.3 * k + 1.5, 1.3 * num_classes), layout="constrained")
    axes = fig.subplots(num_classes, 1, squeeze=False)[:, 0]
    for c, ax in enumerate(axes):
        row = np.concatenate([_hwc(images[i]) for i in top[c]], axis=1)
        ax.imshow(row)
        ax.set_xticks([])
        ax.set_yticks([])
        logits = ", ".join(f"{scores[i, c]:.1f}" for i in top[c])
        ax.set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=8)
        ax.set_title(f"logits: {logits}", fontsize=6, loc="left")
    _save_figure(fig, out_png)


def featvis_grid(featvis_dirs_by_variant: Mapping[str, str | Path], class_names: Sequence[str],
                 out_png: str | Path, classes: Sequence[int] | None = None) -> None:
    """The paper's Fig. 4: rows = variants, columns = classes, from each variant's
    ``featvis.npy``. ``classes`` picks columns (default: all)."""
    columns = list(range(len(class_names))) if classes is None else list(classes)
    rows = {variant: load_featvis(directory, len(class_names)) for variant, directory in featvis_dirs_by_variant.items()}
    fig = Figure(figsize=(1.4 * len(columns) + 1.0, 1.5 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, (variant, images) in enumerate(rows.items()):
        for col, c in enumerate(columns):
            ax = axes[r, col]
            ax.imshow(_hwc(images[c].astype(np.float32).clip(0, 1)))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(class_names[c], fontsize=8)
            if col == 0:
                ax.set_ylabel(variant, fontsize=8)
    _save_figure(fig, out_png)


def load_featvis(directory: str | Path, num_classes: int | None = None) -> np.ndarray:
    """The float16 C x 3 x H x W array of a featvis directory, checked."""
    path = Path(directory) / FEATVIS_ARRAY
    if not path.is_file():
        raise DataError(f"{path} does not exist; run the featvis stage for this variant first")
    array = np.load(path)
    if array.ndim != 4 or array.shape[1] != 3 or (num_classes is not None and array.shape[0] != num_classes):
        raise DataError(f"{path} has shape {array.shape}, expected {num_classes or 'C'} x 3 x H x W; "
                        "rerun the featvis stage")
    return array


def _save_figure(fig: Figure, out_png: str | Path) -> None:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_featvis_dir(out_dir: str | Path, result: FeatvisResult, class_names: Sequence[str],
                      val_images: np.ndarray, scores: np.ndarray, settings: Mapping) -> None:
    """Write the stage's output directory atomically: PNG per class, ``featvis.npy``,
    ``summary.json`` and ``top_images.png``."""
    top = top_activating(scores, settings["top_images"])
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        pixels = to_uint8(result.images).numpy()
        for c, name in enumerate(class_names):
            Image.fromarray(np.ascontiguousarray(_hwc(pixels[c]))).save(tmp / class_file_name(c, name), format="png")
        np.save(tmp / FEATVIS_ARRAY, result.images.numpy().astype(np.float16))
        write_json(tmp / SUMMARY_FILE, {
            "classes": result.summary(class_names),
            "top_images": {class_names[c]: top[c].tolist() for c in range(len(class_names))},
            "settings": dict(settings),
        })
        top_images_figure(val_images, top, scores, class_names, tmp / TOP_IMAGES_FILE)


def run_featvis_stage(config: Mapping, variant: str, *, replicate: int,
                      progress: bool = True) -> Path:
    """The ``featvis`` stage of one model: inputs are replicate ``replicate`` of the variant's
    model and its store's ``val`` split; output is ``paths.featvis_dir``. Every replicate starts
    from the same seeded image parameterisation, so replicates differ by their model only."""
    weights = paths.model_weights(config, variant, replicate=replicate)
    model, meta = load_model(weights, config=config)
    val = read_split(paths.variant_split_dir(config, variant, "val"))
    class_names = list(meta.get("class_names") or val.class_names)
    num_classes = int(meta["num_classes"])
    if len(class_names) != num_classes:
        raise DataError(f"{weights} has {num_classes} outputs but "
                        f"{len(class_names)} class names; retrain the model for this dataset")
    settings = config["featvis"]
    size = tuple(val.images.shape[2:])
    with claim_job_device(config) as device:
        result = visualise_classes(model, num_classes, size, settings, config["seed"], device, progress)
        scores = class_scores(model, val.images, settings["batch_size"], device, progress)
    out = paths.featvis_dir(config, variant, replicate=replicate)
    write_featvis_dir(out, result, class_names, val.images, scores, settings)
    gains = (result.final_logits - result.initial_logits).diagonal()
    log.info("featvis %s: mean target-logit gain %.2f over %d classes -> %s",
             variant, gains.mean().item(), num_classes, out)
    return out
