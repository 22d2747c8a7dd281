"""Resume checkpoints for training: everything needed to continue a run bit-for-bit.

A checkpoint holds the model, optimiser, scheduler and AMP-scaler states, the number of
finished epochs, the history so far and every random-number state (the training generator
that drives shuffling and augmentation, torch's global CPU/CUDA states, NumPy's and Python's).
It also stores a *fingerprint* of the run (settings that change the result, seed, number of
classes, architecture, a hash of the training data): a checkpoint whose fingerprint differs from the
current run's is ignored with a warning, because it belongs to a different experiment (for
example the config changed and Snakemake reran the job). A file that cannot be read is an
error: the message names it and says to delete it.

Files are written atomically (:func:`xaipipe.io.atomic_path`), so a job killed while saving
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from xaipipe.errors import DataError
from xaipipe.io import atomic_path
from xaipipe.models import DEFAULT_ARCH

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"

NON_RESULT_SETTINGS = ("checkpoint_every", "compile", "bg_only_fill")
"""Train settings that change speed, bookkeeping or the after-training probes but not the
trained weights; a checkpoint stays valid when only these differ."""


def fingerprint(settings: Mapping[str, Any], seed: int, num_classes: int,
                images: np.ndarray, labels: np.ndarray, *, arch: str = DEFAULT_ARCH) -> str:
    """A hex digest identifying a training run: result-relevant settings, seed, number of
    classes, the architecture (``model.arch``) and the exact training data (BLAKE2b over the
    image and label bytes)."""
    relevant = {k: v for k, v in settings.items() if k not in NON_RESULT_SETTINGS}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([relevant, seed, num_classes, list(images.shape), arch],
                             sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """All random states a training run touches, in a form ``torch.load(weights_only=True)``
    accepts (tensors, lists, ints)."""
    np_state = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    states = {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any], generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(directory: Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically; return the path."""
    path = Path(directory) / CHECKPOINT_FILE
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def load_checkpoint(directory: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` if there is one for this run, else ``None``.

    A checkpoint of a different run (fingerprint mismatch) is ignored with a warning and will
    be overwritten by the next save. An unreadable file raises :class:`DataError`.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        stored = state["fingerprint"]
        int(state["epoch"])
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(
            f"resume checkpoint {path} is unreadable ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200]}); delete it "
            "(training then starts from epoch 0) and rerun"
        ) from exc
    if stored != expected_fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to a different run (settings, seed or "
                    "training data changed); training starts from epoch 0 and will overwrite it",
                    path)
        return None
    return state


def remove_checkpoint(directory: Path) -> None:
    """Delete the checkpoint of a finished run (the caller has the trained model)."""
    (Path(directory) / CHECKPOINT_FILE).unlink(missing_ok=True)
