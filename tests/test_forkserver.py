"""The fork server (xaipipe/forkserver.py): a stage script handed off runs in a child of the
server as the client's own process would (argv, cwd, environment, stdio, exit status), jobs
run concurrently, a killed client takes its child with it and leaves no output, no server
means a normal run, and a stage trains byte for byte the same model either way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from xaipipe import forkserver

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HANDOFF = "from xaipipe.forkserver import hand_off; hand_off(__file__)\n"
FALLBACK_NOTE = "running without the fork server"

PROBE = HANDOFF + """\
import json, os, sys
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv[1:],
                  "cwd": os.getcwd(), "env": dict(os.environ)}))
print("a line on stderr", file=sys.stderr)
"""

ENDINGS = {
    "exit 3": (HANDOFF + "import sys\nsys.exit(3)\n", 3, ""),
    "uncaught error": (HANDOFF + "def f():\n    raise ValueError('boom')\nf()\n", 1,
                       "ValueError: boom"),
    "exit with a message": (HANDOFF + "import sys\nsys.exit('bye')\n", 1, "bye"),
}

SLOW_WRITER = HANDOFF + """\
import os, sys, time
from pathlib import Path
from xaipipe.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half of an output")
    Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(120)
"""

RENDEZVOUS = HANDOFF + """\
import sys, time
from pathlib import Path
me, other = sys.argv[1:]
Path(me).write_text("here")
deadline = time.monotonic() + 60
while not Path(other).exists():
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fork server on a socket in a private directory; its environment has one variable
    the clients do not, to show the child takes the client's environment wholesale."""
    directory = tmp_path_factory.mktemp("forkserver")
    directory.chmod(0o700)
    path = str(directory / "socket")
    with mock.patch.dict(os.environ, {"ONLY_IN_THE_SERVER": "1"}):
        proc = forkserver._start_server(path, idle_timeout=600, start_timeout=300)
    assert proc is not None, "the fork server did not start"
    yield proc, path
    forkserver.stop(path)
    proc.wait(60)


def client(script: Path, args=(), socket_path: str | None = None, cwd: Path | None = None,
           extra_env: dict | None = None, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != forkserver.ENV}
    if socket_path:
        env[forkserver.ENV] = socket_path
    env.update(extra_env or {})
    return subprocess.Popen([PYTHON, str(script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_handed_off_script_runs_in_a_server_child_as_the_client(server, tmp_path):
    proc_server, path = server
    probe = script(tmp_path, "probe.py", PROBE)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = client(probe, ["--x", "1"], socket_path=path, cwd=workdir, extra_env={"ONLY_HERE": "2"})
    code, out, err = finish(proc)
    assert code == 0, err
    assert FALLBACK_NOTE not in err
    seen = json.loads(out)
    assert seen["ppid"] == proc_server.pid  # a direct child: the script did not hand off again
    assert seen["pid"] != proc.pid
    assert seen["argv"] == ["--x", "1"]
    assert seen["cwd"] == str(workdir)
    assert seen["env"]["ONLY_HERE"] == "2"
    assert "ONLY_IN_THE_SERVER" not in seen["env"]
    assert err == "a line on stderr\n"


@pytest.mark.parametrize("ending", ENDINGS)
def test_exit_status_and_stderr_come_back(server, tmp_path, ending):
    text, expected_code, expected_err = ENDINGS[ending]
    code, _, err = finish(client(script(tmp_path, "end.py", text), socket_path=server[1]))
    assert FALLBACK_NOTE not in err
    assert code == expected_code
    assert expected_err in err
    assert "forkserver.py" not in err and "runpy" not in err  # the script's traceback only


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_client_ends_its_child_and_leaves_no_output(server, tmp_path, kill):
    writer = script(tmp_path, "writer.py", SLOW_WRITER)
    output, marker = tmp_path / "out" / "result.json", tmp_path / "child.pid"
    proc = client(writer, [output, marker], socket_path=server[1])
    child = int(_wait_for(marker, proc).read_text())
    assert child != proc.pid
    proc.send_signal(kill)
    assert proc.wait(60) == -kill  # a client sent SIGTERM ends by SIGTERM, as a plain job
    _wait_gone(child)
    assert list(output.parent.iterdir()) == []  # neither the output nor its temporary


def test_jobs_run_concurrently(server, tmp_path):
    meet = script(tmp_path, "meet.py", RENDEZVOUS)
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [client(meet, pair, socket_path=server[1]) for pair in ([a, b], [b, a])]
    assert [finish(p)[0] for p in procs] == [0, 0]


def test_without_a_server_the_script_runs_in_its_own_process(tmp_path):
    missing = str(tmp_path / "no-server" / "socket")
    proc = client(script(tmp_path, "probe.py", PROBE), socket_path=missing)
    code, out, err = finish(proc)
    assert code == 0 and json.loads(out)["pid"] == proc.pid
    assert FALLBACK_NOTE not in err


def test_a_client_the_server_cannot_mimic_runs_itself_and_says_why(server, tmp_path):
    seed = "0" if os.environ.get("PYTHONHASHSEED") != "0" else "1"
    proc = client(script(tmp_path, "probe.py", PROBE), socket_path=server[1],
                  extra_env={"PYTHONHASHSEED": seed})
    code, out, err = finish(proc)
    assert code == 0 and json.loads(out)["pid"] == proc.pid
    assert FALLBACK_NOTE in err and "PYTHON*" in err, err


def test_run_wraps_a_command_and_returns_its_status(tmp_path):
    probe = script(tmp_path, "probe.py", PROBE + "raise SystemExit(7)\n")
    wrapper = subprocess.Popen(
        [PYTHON, "-m", "xaipipe.forkserver", "run", "--", PYTHON, str(probe)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != forkserver.ENV})
    code, out, err = finish(wrapper, timeout=300)
    assert code == 7, err
    assert FALLBACK_NOTE not in err
    seen = json.loads(out)
    assert seen["ppid"] != wrapper.pid  # not the client the wrapper started: the server's child
    _wait_gone(seen["ppid"])  # the server was stopped...
    assert not Path(seen["env"][forkserver.ENV]).parent.exists()  # ...and its directory removed


def test_training_through_the_server_is_byte_identical(server, tmp_path):
    """make_synthetic, index and variant through the server, then the train stage of
    config/ci.yaml once normally and once through the server, as Snakemake runs it (its
    thread variables, ``--threads 2``). Every output is compared byte for byte except the
    timings and the model file's archive names; the model's tensors bit for bit."""
    results = tmp_path / "results"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"results_dir: {results}\n")
    config = ["--config", "config.yaml", "config/ci.yaml", str(overlay)]
    snakemake_env = {name: "2" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                            "MKL_NUM_THREADS", "GOTO_NUM_THREADS")}

    def stage(name: str, *args: str, socket_path: str | None) -> None:
        proc = client(REPO / "workflow_scripts" / f"{name}.py", [*args, *config, "--threads", "2"],
                      socket_path=socket_path, cwd=REPO, extra_env=snakemake_env)
        code, _, err = finish(proc, timeout=300)
        assert code == 0, err[-3000:]
        assert FALLBACK_NOTE not in err

    for name, *args in (["make_synthetic"], ["index"], ["variant", "--variant", "standard"]):
        stage(name, *args, socket_path=server[1])
    runs = {}
    for how, socket_path in (("normal", None), ("server", server[1])):
        for leftover in ("models", "checkpoints"):  # a rerun would resume from the checkpoint
            _remove(results / leftover)
        stage("train", "--variant", "standard", "--replicate", "0", socket_path=socket_path)
        runs[how] = results.parent / how
        (results / "models").rename(runs[how])
    _assert_same_outputs(runs["normal"], runs["server"])


# --------------------------------------------------------------------------- helpers

def _timing(name: str) -> bool:
    """A wall-clock measurement (``seconds``, ``seconds_by_phase``, ``images_per_s``...)."""
    return "seconds" in name or name.endswith("per_s")


def _assert_same_outputs(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert any(f.suffix == ".pt" for f in files)
    for rel in files:
        if rel.suffix == ".pt":
            _assert_same_model(a / rel, b / rel)
        elif rel.suffix == ".json":
            assert _untimed(json.loads((a / rel).read_text())) == \
                _untimed(json.loads((b / rel).read_text())), rel
        elif rel.suffix == ".csv":
            assert _untimed_csv(a / rel) == _untimed_csv(b / rel), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def _assert_same_model(a: Path, b: Path) -> None:
    """Same tensors bit for bit and same metadata (torch.save names its archive entries
    after the temporary file and adds a random serialization id, so the bytes differ)."""
    x, y = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    assert x["meta"] == y["meta"]
    assert x["state_dict"].keys() == y["state_dict"].keys()
    for name, tensor in x["state_dict"].items():
        bits = [np.atleast_1d(t.numpy()).view(np.uint8) for t in (tensor, y["state_dict"][name])]
        assert np.array_equal(*bits), name


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not _timing(k)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _untimed_csv(path: Path) -> str:
    import pandas as pd

    table = pd.read_csv(path)
    return table[[c for c in table.columns if not _timing(c)]].to_csv(index=False)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"client ended early: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path


def _wait_gone(pid: int, timeout: float = 60) -> None:
    """Wait until ``pid`` has ended (and been reaped by its parent)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)
