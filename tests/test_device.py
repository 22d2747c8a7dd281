"""Device claim (xaipipe.device): per-index flock so concurrent jobs never share a GPU, and a
crashed job's card is free again. CUDA is faked with XAIPIPE_FAKE_CUDA_COUNT; locks live in a
temporary XAIPIPE_LOCK_DIR."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from xaipipe.device import FAKE_COUNT_ENV, LOCK_DIR_ENV, claim_device
from xaipipe.errors import XaipipeError

FORK = multiprocessing.get_context("fork")  # children inherit the imported modules: no start-up cost


def _hold(claimed: Path, release: Path) -> None:
    """Child process: note that it started, claim a device, write its index, hold until released."""
    Path(f"{claimed}.started").write_text("")
    with claim_device("auto", wait_s=60, poll_s=0.05) as device:
        Path(f"{claimed}.tmp").write_text(str(device.index))
        os.replace(f"{claimed}.tmp", claimed)  # appears complete
        while not release.exists():
            time.sleep(0.02)


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """``fake_gpus(n)`` pretends there are ``n`` CUDA devices, locks in ``tmp_path/locks``."""

    def _set(count: int) -> None:
        monkeypatch.setenv(FAKE_COUNT_ENV, str(count))
        monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)

    return _set


def _start_holder(tmp_path: Path, name: str):
    claimed = tmp_path / f"{name}.claimed"
    proc = FORK.Process(target=_hold, args=(claimed, tmp_path / "release"), daemon=True)
    proc.start()
    return proc, claimed


def _wait_for(path: Path, proc, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.is_alive(), f"holder exited early with code {proc.exitcode}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
    return path.read_text()


def test_two_processes_get_distinct_devices(tmp_path, fake_gpus):
    fake_gpus(2)
    procs = [_start_holder(tmp_path, name) for name in ("a", "b")]
    try:
        indices = {_wait_for(claimed, proc) for proc, claimed in procs}
        assert indices == {"0", "1"}
    finally:
        (tmp_path / "release").write_text("")
        for proc, _ in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0


def test_sigkilled_holder_frees_its_device(tmp_path, fake_gpus):
    fake_gpus(1)
    first, first_claimed = _start_holder(tmp_path, "first")
    assert _wait_for(first_claimed, first) == "0"
    second, second_claimed = _start_holder(tmp_path, "second")
    try:
        _wait_for(Path(f"{second_claimed}.started"), second)
        time.sleep(0.5)  # second is polling the held lock
        assert not second_claimed.exists()
        os.kill(first.pid, signal.SIGKILL)  # no cleanup code runs: only the kernel frees the lock
        first.join(timeout=30)
        assert _wait_for(second_claimed, second) == "0"
    finally:
        (tmp_path / "release").write_text("")
        second.join(timeout=30)
        assert second.exitcode == 0


def test_in_process_claims_are_exclusive_and_released(fake_gpus):
    fake_gpus(2)
    with claim_device("auto") as first, claim_device("auto") as second:
        assert (first, second) == (torch.device("cuda", 0), torch.device("cuda", 1))
        with pytest.raises(XaipipeError, match=r"all 2 CUDA devices stayed busy.*gpu=N"):
            with claim_device("auto", wait_s=0):
                pass
    with claim_device("cuda") as again:  # both released on exit
        assert again == torch.device("cuda", 0)


def test_released_after_an_exception_in_the_job(fake_gpus):
    fake_gpus(1)
    with pytest.raises(RuntimeError):
        with claim_device("auto"):
            raise RuntimeError("job failed")
    with claim_device("auto", wait_s=0) as device:
        assert device == torch.device("cuda", 0)


def test_preferences_cpu_cuda_and_slurm(fake_gpus, monkeypatch):
    fake_gpus(0)
    with claim_device("auto") as device:
        assert device == torch.device("cpu")
    with pytest.raises(XaipipeError, match="no CUDA device is visible"):
        with claim_device("cuda"):
            pass
    fake_gpus(3)
    with claim_device("cpu") as device:
        assert device == torch.device("cpu")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    with claim_device("auto") as first, claim_device("auto") as second:
        assert first == second == torch.device("cuda", 0)  # SLURM already chose the card
