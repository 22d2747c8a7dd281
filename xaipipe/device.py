"""Choose the compute device for a job and claim a slot on it.

Snakemake's ``resources: gpu=1`` is only a counter; it never says *which* card a job may use.
So a GPU job claims a CUDA device itself. Each card has ``gpu.jobs_per_device`` slots (default
1: a job has its card to itself), and a slot is a non-blocking ``flock`` on
``<lock_dir>/cuda<index>.<slot>.lock``. The kernel releases a flock when the process exits,
crash included, so a dead job can never keep a slot.

Placement spreads first: a job goes to the card with the fewest held slots (ties: the lowest
index), so with two cards and two slots each, four jobs land on cuda0, cuda1, cuda0, cuda1 and
the cards stay evenly loaded (packing would leave cuda1 idle while cuda0 runs two jobs). The
choice is made under one more lock, ``claim.lock``, held only while choosing, so jobs starting
at the same moment see each other's claims. When every slot is held the job waits (polling)
up to ``wait_s`` and then fails with a message naming the ``--resources gpu=N`` that fits.

Under SLURM (``SLURM_JOB_ID`` set) the scheduler already chose the cards and renumbered them
through ``CUDA_VISIBLE_DEVICES``, so the locks are kept per allocation
(``<lock_dir>/slurm-<job id>/``): a job given one card gets ``cuda:0``, and several jobs run
inside one allocation (a local Snakemake inside ``sbatch``, or a group job) share its cards
with the same slots. Sharing one card between separate SLURM jobs is the scheduler's business
(``gres`` shard or mps; docs/orchestration.md, "GPUs").

No library offers this: ``torch.cuda`` has no cross-process device reservation, and the
Snakemake resource counter cannot name a device (docs/orchestration.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Mapping

import torch

from xaipipe.errors import XaipipeError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "XAIPIPE_LOCK_DIR"
FAKE_COUNT_ENV = "XAIPIPE_FAKE_CUDA_COUNT"
"""Tests set this to pretend there are N CUDA devices (the claimed device is then reported
but never used for computation)."""
CHOICE_LOCK = "claim.lock"


def lock_dir() -> Path:
    """Where the slot locks live: ``$XAIPIPE_LOCK_DIR`` (default ``<tmp>/xaipipe-device-locks``),
    plus ``slurm-<job id>/`` inside a SLURM allocation, whose card numbers are its own."""
    path = Path(os.environ.get(LOCK_DIR_ENV, Path(tempfile.gettempdir()) / "xaipipe-device-locks"))
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if slurm_job:
        path = path / f"slurm-{slurm_job}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cuda_device_count() -> int:
    fake = os.environ.get(FAKE_COUNT_ENV)
    if fake is not None:
        return int(fake)
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def slot_lock(directory: Path, index: int, slot: int) -> Path:
    return directory / f"cuda{index}.{slot}.lock"


def _try_lock(path: Path) -> IO | None:
    """The open, exclusively flocked file, or None if another process holds it."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _release(handle: IO) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def _slot_is_held(path: Path) -> bool:
    handle = _try_lock(path)
    if handle is None:
        return True
    _release(handle)
    return False


def _take_slot(directory: Path, count: int, slots: int) -> tuple[int, int, IO] | None:
    """Lock a free slot of the least-loaded card: ``(index, slot, open lock file)``, or None
    when all ``count * slots`` slots are held."""
    with open(directory / CHOICE_LOCK, "a+") as choice:
        fcntl.flock(choice, fcntl.LOCK_EX)  # blocking: other jobs hold it only while choosing
        best = None  # (held slots, index, first free slot)
        for index in range(count):
            held = [_slot_is_held(slot_lock(directory, index, s)) for s in range(slots)]
            if not all(held) and (best is None or sum(held) < best[0]):
                best = (sum(held), index, held.index(False))
        if best is None:
            return None
        _, index, slot = best
        handle = _try_lock(slot_lock(directory, index, slot))  # free: all claimants choose under `choice`
        if handle is None:
            return None
        return index, slot, handle


@contextlib.contextmanager
def claim_device(preference: str = "auto", *, jobs_per_device: int = 1, wait_s: float = 3600.0,
                 poll_s: float = 2.0) -> Iterator[torch.device]:
    """Yield the device a job should use, holding a slot on it for the duration.

    ``preference``: ``cpu`` (always CPU), ``cuda`` (a CUDA device is required; error if none)
    or ``auto`` (CUDA if present, else CPU). ``jobs_per_device``: slots per card. If every
    slot is held, waits up to ``wait_s``, checking every ``poll_s``.
    """
    if jobs_per_device < 1:
        raise ValueError(f"jobs_per_device must be at least 1, got {jobs_per_device}")
    count = 0 if preference == "cpu" else cuda_device_count()
    if count == 0:
        if preference == "cuda":
            raise XaipipeError("config asks for device: cuda but no CUDA device is visible; "
                               "set device: auto or cpu, or run on a GPU node")
        yield torch.device("cpu")
        return
    directory = lock_dir()
    deadline = time.monotonic() + wait_s
    waiting_logged = False
    while (taken := _take_slot(directory, count, jobs_per_device)) is None:
        if not waiting_logged:
            log.info("all %d CUDA devices x %d slots are claimed (locks in %s); waiting up to %.0f s",
                     count, jobs_per_device, directory, wait_s)
            waiting_logged = True
        if time.monotonic() > deadline:
            raise XaipipeError(
                f"all {count} CUDA devices x {jobs_per_device} slots (gpu.jobs_per_device) stayed "
                f"busy for {wait_s:.0f} s (locks in {directory}); run at most "
                f"{count * jobs_per_device} GPU jobs at once: --resources gpu=N with "
                f"N = cards x gpu.jobs_per_device")
        time.sleep(poll_s)
    index, slot, handle = taken
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        log.info("claimed cuda:%d, slot %d of %d (lock %s)", index, slot + 1, jobs_per_device, handle.name)
        yield torch.device("cuda", index)
    finally:
        _release(handle)


def claim_job_device(config: Mapping) -> contextlib.AbstractContextManager[torch.device]:
    """The claim a stage makes: ``config["device"]`` with ``gpu.jobs_per_device`` slots per card."""
    return claim_device(config["device"], jobs_per_device=config["gpu"]["jobs_per_device"])
