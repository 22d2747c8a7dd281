"""Choose the compute device for a job and claim it exclusively.

Snakemake's ``resources: gpu=1`` is only a counter; it never says *which* card a job may use.
So a GPU job claims a free CUDA device itself: it takes a non-blocking ``flock`` on
``<lock_dir>/cuda<index>.lock`` for the first index nobody holds. The kernel releases a flock
when the process exits, crash included, so a dead job can never keep a card. Under SLURM
(``SLURM_JOB_ID`` set) the scheduler already restricted ``CUDA_VISIBLE_DEVICES``, and the job
uses ``cuda:0`` of what it was given.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from xaipipe.errors import XaipipeError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "XAIPIPE_LOCK_DIR"
FAKE_COUNT_ENV = "XAIPIPE_FAKE_CUDA_COUNT"
"""Tests set this to pretend there are N CUDA devices (the claimed device is then reported
but never used for computation)."""


def lock_dir() -> Path:
    path = Path(os.environ.get(LOCK_DIR_ENV, Path(tempfile.gettempdir()) / "xaipipe-device-locks"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cuda_device_count() -> int:
    fake = os.environ.get(FAKE_COUNT_ENV)
    if fake is not None:
        return int(fake)
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def claim_device(preference: str = "auto", wait_s: float = 3600.0, poll_s: float = 2.0) -> Iterator[torch.device]:
    """Yield the device a job should use, holding its lock for the duration.

    ``preference``: ``cpu`` (always CPU), ``cuda`` (a CUDA device is required; error if none)
    or ``auto`` (CUDA if present, else CPU). If every device is held, waits up to ``wait_s``.
    """
    count = 0 if preference == "cpu" else cuda_device_count()
    if count == 0:
        if preference == "cuda":
            raise XaipipeError("config asks for device: cuda but no CUDA device is visible; "
                               "set device: auto or cpu, or run on a GPU node")
        yield torch.device("cpu")
        return
    if os.environ.get("SLURM_JOB_ID"):
        yield torch.device("cuda", 0)
        return
    deadline = time.monotonic() + wait_s
    waiting_logged = False
    while True:
        for index in range(count):
            handle = open(lock_dir() / f"cuda{index}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                log.info("claimed cuda:%d (lock %s)", index, handle.name)
                yield torch.device("cuda", index)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waiting_logged:
            log.info("all %d CUDA devices are claimed (locks in %s); waiting up to %.0f s",
                     count, lock_dir(), wait_s)
            waiting_logged = True
        if time.monotonic() > deadline:
            raise XaipipeError(f"all {count} CUDA devices stayed busy for {wait_s:.0f} s "
                               f"(locks in {lock_dir()}); lower --resources gpu=N")
        time.sleep(poll_s)
