"""The ``variant`` stage: the training sets of paper §IV (and any plug-in variant,
:mod:`xaipipe.registry`) as tensor stores.

Paper §IV ("Targeted Background Removal Creates Interpretable Feature Visualizations"): the
background is removed by "an elementwise multiplication between the image and the
segmentation map", so background pixels become zero and foreground pixels stay unchanged;
for the noise model "Gaussian noise [is added] to only the background pixels"; the mixed
model trains on a set of which "half ... is background removed and set to zero, while the
other half consists of unmodified images".

* ``standard`` - unchanged images.
* ``black`` - ``image x mask`` (mask = ``seg != 0``; void counts as foreground).
* ``noise`` - background pixels replaced by ``clip(N(noise_mean, noise_std), 0, 1) x 255``,
  drawn independently per pixel and channel from a generator seeded by (config seed, image
  id), so an image gets the same noise however the work is split or ordered.
* ``mixed`` - exactly ``round(mixed_fraction x N)`` (half rounded up) images black-background,
  chosen by a per-id seeded key (independent of row order), the rest unchanged.

Images are decoded and resized once (:func:`xaipipe.data.resize.load_resized`); the
treatments are cheap vectorised functions on the resized arrays, applied AFTER resizing so a
removed background is exactly 0 at the stored resolution (resizing first would blur object
pixels into the zero background). Splits written per variant: ``train`` (treated), ``val``
(always unmodified, as in the paper) and ``val_matched`` (val with the variant's treatment;
for ``mixed`` the same seeded-fraction rule applied to the val ids).
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaipipe import paths
from xaipipe.data.index import class_histogram, read_index
from xaipipe.data.resize import load_resized
from xaipipe.data.store import Split, write_split
from xaipipe.errors import ConfigError
from xaipipe.io import atomic_path, write_json
from xaipipe.registry import variant_function
from xaipipe.seeds import id_seed

log = logging.getLogger(__name__)

_NOISE_STREAM = 1
_MIXED_STREAM = 2


def remove_background(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Paper §IV: ``image x mask`` (``N x 3 x H x W`` times ``N x H x W`` of 0/1)."""
    return images * masks[:, None].astype(images.dtype)


def background_noise(image_id: str, shape: tuple[int, ...], seed: int, mean: float,
                     std: float) -> np.ndarray:
    """The uint8 noise image of one id: ``clip(N(mean, std), 0, 1) x 255`` rounded."""
    rng = np.random.default_rng(id_seed(seed, _NOISE_STREAM, image_id))
    noise = mean + std * rng.standard_normal(shape, dtype=np.float32)
    return np.rint(np.clip(noise, 0.0, 1.0) * 255.0).astype(np.uint8)


def noise_background(images: np.ndarray, masks: np.ndarray, ids: Sequence[str], seed: int,
                     mean: float, std: float) -> np.ndarray:
    """Paper §IV noise variant: foreground kept, background = per-image seeded Gaussian noise."""
    noise = np.stack([background_noise(i, images.shape[1:], seed, mean, std) for i in ids]) \
        if len(ids) else np.empty_like(images)
    return np.where(masks[:, None].astype(bool), images, noise)


def mixed_selection(ids: Sequence[str], seed: int, fraction: float) -> np.ndarray:
    """Boolean row mask of the images the ``mixed`` variant makes black-background.

    Exactly ``floor(fraction x N + 0.5)`` rows: those with the smallest per-id seeded key
    (ties by id), so the choice depends on the id set and seed, not on the row order.
    """
    count = int(np.floor(fraction * len(ids) + 0.5))
    keys = np.array([np.random.default_rng(id_seed(seed, _MIXED_STREAM, i)).random() for i in ids])
    chosen = np.lexsort((np.asarray(ids, dtype=object).astype(str), keys))[:count]
    selected = np.zeros(len(ids), dtype=bool)
    selected[chosen] = True
    return selected


# --- the built-in variants, each with the registry's signature (xaipipe.registry) -----------

def standard_variant(images, masks, ids, *, seed, settings):
    """``standard``: the images as they are."""
    return images


def black_variant(images, masks, ids, *, seed, settings):
    """``black``: background set to 0 (:func:`remove_background`)."""
    return remove_background(images, masks)


def noise_variant(images, masks, ids, *, seed, settings):
    """``noise``: background replaced by per-image seeded Gaussian noise
    (:func:`noise_background`, ``variant.noise_mean`` / ``noise_std``)."""
    return noise_background(images, masks, ids, seed, settings["noise_mean"], settings["noise_std"])


def mixed_variant(images, masks, ids, *, seed, settings):
    """``mixed``: the :func:`mixed_selection` rows black-background, the rest unchanged; the
    selection is the treated rows (an image that is all object stays as it was, but was
    chosen: exactly half are chosen)."""
    selected = mixed_selection(ids, seed, settings["mixed_fraction"])
    return np.where(selected[:, None, None, None], remove_background(images, masks), images), selected


def apply_variant(variant: str, images: np.ndarray, masks: np.ndarray, ids: Sequence[str],
                  config: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Return (treated images, boolean 'background replaced' per row) for the registered
    ``variant`` (:mod:`xaipipe.registry`, plug-ins included). A variant function returns the
    images, or ``(images, treated rows)``; without the rows, a row counts as replaced when
    the treatment changed any of its pixels."""
    treat = variant_function(variant, config)
    result = treat(images, masks, list(ids), seed=config["seed"], settings=config["variant"])
    out, treated = result if isinstance(result, tuple) else (result, None)
    out = np.asarray(out)
    if out.shape != images.shape or out.dtype != np.uint8:
        raise ConfigError(f"variant {variant!r} returned {out.dtype} {out.shape} for uint8 "
                          f"{images.shape}; it must return uint8 N x 3 x H x W (see "
                          "xaipipe.registry)")
    if treated is not None:
        return out, np.asarray(treated, dtype=bool)
    replaced = (out != images).reshape(len(out), -1).any(axis=1) if len(out) else \
        np.zeros(0, dtype=bool)
    return out, replaced


def _split_meta(config: Mapping, variant: str, split: str, ids: list[str], class_names: list[str],
                treated: np.ndarray) -> dict:
    return {"ids": ids, "class_names": class_names, "variant": variant, "split": split,
            "resolution": config["resolution"], "resize": config["dataset"]["resize"],
            "background_replaced": treated.tolist()}


def materialise_variants(config: Mapping, variants: Sequence[str]) -> dict[str, dict]:
    """Write the tensor stores of ``variants`` from one decode/resize pass over the index.

    Each variant directory (``train``, ``val``, ``val_matched``) is assembled under a
    temporary name and renamed into place whole; the summary JSON
    (``paths.variant_summary``) is written after it and marks the variant complete.
    Returns ``{variant: summary}``.
    """
    for variant in variants:
        variant_function(variant, config)  # an unknown name or a broken plug-in stops here
    start = time.perf_counter()
    table, index_log = read_index(config)
    class_names = list(index_log["class_names"])
    resolution, resize = config["resolution"], config["dataset"]["resize"]
    devkit = paths.dataset_root(config)
    rows = {split: table[table["split"] == split] for split in ("train", "val")}
    decoded = {split: load_resized(devkit, list(part["image_id"]), resolution, resize,
                                   desc=f"decode+resize {split}")
               for split, part in rows.items()}
    decode_seconds = time.perf_counter() - start
    summaries = {}
    for variant in variants:
        variant_start = time.perf_counter()
        counts = {}
        paths.variant_summary(config, variant).unlink(missing_ok=True)  # not complete until rewritten
        with atomic_path(paths.variant_dir(config, variant)) as tmp:
            tmp.mkdir()
            for split, source, treat in (("train", "train", True), ("val", "val", False),
                                         ("val_matched", "val", True)):
                images, masks = decoded[source]
                ids = list(rows[source]["image_id"])
                out, treated = (apply_variant(variant, images, masks, ids, config) if treat
                                else (images, np.zeros(len(ids), dtype=bool)))
                labels = rows[source]["label"].to_numpy(dtype=np.int64)
                write_split(tmp / split, Split(out, masks, labels,
                                               _split_meta(config, variant, split, ids, class_names, treated)))
                counts[split] = {"images": len(ids), "background_replaced": int(treated.sum())}
        seconds = decode_seconds + time.perf_counter() - variant_start
        written = sum(c["images"] for c in counts.values())
        summaries[variant] = {
            "variant": variant, "complete": True, "resolution": resolution, "resize": resize,
            "splits": counts, "class_names": class_names,
            "class_histogram": _histogram_by_store_split(table, class_names),
            "variant_settings": dict(config["variant"]), "seed": config["seed"],
            "decode_seconds": round(decode_seconds, 3), "seconds": round(seconds, 3),
            "images_per_s": round(written / seconds, 1) if seconds > 0 else None,
        }
        write_json(paths.variant_summary(config, variant), summaries[variant])
        log.info("variant %s: %s in %.1f s", variant, counts, seconds)
    return summaries


def _histogram_by_store_split(table: pd.DataFrame, class_names: list[str]) -> dict:
    by_index_split = class_histogram(table, class_names)
    return {"train": by_index_split["train"], "val": by_index_split["val"],
            "val_matched": by_index_split["val"]}
