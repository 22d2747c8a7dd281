"""Device claim (xaipipe.device): ``gpu.jobs_per_device`` flock slots per CUDA index, filled
least-loaded card first; a crashed job's slot is free again; a claim with every slot held waits
and then fails naming the ``--resources gpu=N`` that fits; under SLURM the locks are per
allocation. CUDA is faked with XAIPIPE_FAKE_CUDA_COUNT; locks live in a temporary
XAIPIPE_LOCK_DIR."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from xaipipe import device as device_module
from xaipipe.config import validate_config
from xaipipe.device import FAKE_COUNT_ENV, LOCK_DIR_ENV, claim_device, claim_job_device
from xaipipe.errors import XaipipeError

FORK = multiprocessing.get_context("fork")  # children inherit the imported modules: no start-up cost


def _hold(claimed: Path, release: Path, jobs_per_device: int) -> None:
    """Child process: note that it started, claim a device, write its index, hold until released."""
    Path(f"{claimed}.started").write_text("")
    with claim_device("auto", jobs_per_device=jobs_per_device, wait_s=60, poll_s=0.05) as device:
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


@pytest.fixture
def never_wait(monkeypatch):
    """A claim that finds every slot held raises instead of sleeping (so a wrong slot count
    fails the test at once instead of waiting for ``wait_s``)."""

    def _fail(seconds):
        raise AssertionError("the claim found every slot held and would wait")

    monkeypatch.setattr(device_module.time, "sleep", _fail)


def _start_holder(tmp_path: Path, name: str, jobs_per_device: int = 1):
    claimed = tmp_path / f"{name}.claimed"
    proc = FORK.Process(target=_hold, args=(claimed, tmp_path / "release", jobs_per_device), daemon=True)
    proc.start()
    return proc, claimed


def _wait_for(path: Path, proc, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.is_alive(), f"holder exited early with code {proc.exitcode}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
    return path.read_text()


def _release_all(tmp_path: Path, procs) -> None:
    (tmp_path / "release").write_text("")
    for proc in procs:
        proc.join(timeout=30)


def test_two_processes_get_distinct_devices(tmp_path, fake_gpus):
    fake_gpus(2)
    procs = [_start_holder(tmp_path, name) for name in ("a", "b")]
    try:
        indices = {_wait_for(claimed, proc) for proc, claimed in procs}
        assert indices == {"0", "1"}
    finally:
        _release_all(tmp_path, [proc for proc, _ in procs])
    assert [proc.exitcode for proc, _ in procs] == [0, 0]


def test_four_processes_share_two_cards_and_a_fifth_gets_the_slot_of_a_killed_one(tmp_path, fake_gpus):
    """2 cards x 2 slots: four concurrent jobs, two per card; the fifth waits until a holder
    is SIGKILLed (no cleanup code runs: only the kernel frees its lock), then takes that card."""
    fake_gpus(2)
    holders = [_start_holder(tmp_path, f"h{i}", jobs_per_device=2) for i in range(4)]
    fifth = None
    try:
        indices = [_wait_for(claimed, proc) for proc, claimed in holders]
        assert sorted(indices) == ["0", "0", "1", "1"]
        fifth, fifth_claimed = _start_holder(tmp_path, "fifth", jobs_per_device=2)
        _wait_for(Path(f"{fifth_claimed}.started"), fifth)
        time.sleep(0.5)  # the fifth is polling: all four slots are held
        assert not fifth_claimed.exists()
        victim = indices.index("1")
        os.kill(holders[victim][0].pid, signal.SIGKILL)
        holders[victim][0].join(timeout=30)
        assert _wait_for(fifth_claimed, fifth) == "1"
    finally:
        _release_all(tmp_path, [proc for proc, _ in holders] + ([fifth] if fifth else []))
    assert fifth.exitcode == 0


@pytest.mark.parametrize("jobs_per_device", [1, 2])
def test_sigkilled_holder_frees_its_slot(tmp_path, fake_gpus, jobs_per_device):
    fake_gpus(1)
    holders = [_start_holder(tmp_path, f"h{i}", jobs_per_device) for i in range(jobs_per_device)]
    waiting = None
    try:
        assert [_wait_for(claimed, proc) for proc, claimed in holders] == ["0"] * jobs_per_device
        waiting, waiting_claimed = _start_holder(tmp_path, "waiting", jobs_per_device)
        _wait_for(Path(f"{waiting_claimed}.started"), waiting)
        time.sleep(0.5)  # the card's slots are all held
        assert not waiting_claimed.exists()
        os.kill(holders[0][0].pid, signal.SIGKILL)
        holders[0][0].join(timeout=30)
        assert _wait_for(waiting_claimed, waiting) == "0"
    finally:
        _release_all(tmp_path, [proc for proc, _ in holders] + ([waiting] if waiting else []))
    assert waiting.exitcode == 0


def test_claims_spread_over_the_cards_before_sharing_one(fake_gpus, never_wait):
    fake_gpus(2)
    with contextlib.ExitStack() as stack:
        got = [stack.enter_context(claim_device("auto", jobs_per_device=2)).index for _ in range(4)]
        assert got == [0, 1, 0, 1]
        with pytest.raises(AssertionError, match="would wait"):
            with claim_device("auto", jobs_per_device=2):
                pass


def test_a_claim_goes_to_the_least_loaded_card(fake_gpus, never_wait):
    """cuda0 runs one job in its second slot and cuda1 none: the next job goes to cuda1, not
    to cuda0's free first slot (a slot-by-slot scan would pack it onto cuda0)."""
    fake_gpus(2)
    with contextlib.ExitStack() as keep:
        first = contextlib.ExitStack()
        first.enter_context(claim_device("auto", jobs_per_device=2))   # cuda0, slot 1
        first.enter_context(claim_device("auto", jobs_per_device=2))   # cuda1, slot 1
        assert keep.enter_context(claim_device("auto", jobs_per_device=2)) == torch.device("cuda", 0)
        first.close()  # cuda0 keeps the job in its slot 2, cuda1 is empty
        assert keep.enter_context(claim_device("auto", jobs_per_device=2)) == torch.device("cuda", 1)


def test_in_process_claims_are_exclusive_and_released(fake_gpus):
    fake_gpus(2)
    with claim_device("auto") as first, claim_device("auto") as second:
        assert (first, second) == (torch.device("cuda", 0), torch.device("cuda", 1))
        with pytest.raises(XaipipeError, match=r"all 2 CUDA devices x 1 slots .*stayed busy.*"
                                               r"at most 2 GPU jobs at once: --resources gpu=N"):
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


def test_claim_job_device_takes_the_slots_from_the_config(fake_gpus, never_wait):
    fake_gpus(1)
    config = validate_config({"device": "auto", "gpu": {"jobs_per_device": 3}})
    with claim_job_device(config) as a, claim_job_device(config) as b, claim_job_device(config) as c:
        assert a == b == c == torch.device("cuda", 0)
    assert validate_config({})["gpu"]["jobs_per_device"] == 1  # default: a card per job
    with pytest.raises(ValueError, match="at least 1"):
        with claim_device("auto", jobs_per_device=0):
            pass


def test_preferences_cpu_and_cuda(fake_gpus):
    fake_gpus(0)
    with claim_device("auto") as device:
        assert device == torch.device("cpu")
    with pytest.raises(XaipipeError, match="no CUDA device is visible"):
        with claim_device("cuda"):
            pass
    fake_gpus(3)
    with claim_device("cpu") as device:
        assert device == torch.device("cpu")


def test_slurm_locks_are_per_allocation(tmp_path, fake_gpus, monkeypatch, never_wait):
    """Two SLURM jobs given one card each both see it as cuda:0 (CUDA_VISIBLE_DEVICES) and must
    not block each other; jobs inside one allocation share its cards with the slots."""
    fake_gpus(1)
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    with claim_device("auto") as first:
        monkeypatch.setenv("SLURM_JOB_ID", "456")
        with claim_device("auto") as second:
            assert first == second == torch.device("cuda", 0)
    assert (tmp_path / "locks" / "slurm-123" / "cuda0.0.lock").is_file()
    assert (tmp_path / "locks" / "slurm-456" / "cuda0.0.lock").is_file()
    fake_gpus(2)
    monkeypatch.setenv("SLURM_JOB_ID", "789")  # e.g. a local Snakemake inside `sbatch --gpus=2`
    with claim_device("auto") as first, claim_device("auto") as second:
        assert (first, second) == (torch.device("cuda", 0), torch.device("cuda", 1))
