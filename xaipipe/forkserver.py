"""Warm start: a fork server pays Python's start-up once per workflow run, not once per job.

A stage job costs 3-4 s before it does anything on a small machine: importing torch,
torchvision, the ``xaipipe`` modules and validating the config. A workflow of many small
jobs on one machine pays that on every job. The fork server imports everything once and then
forks one child per job::

    python -m xaipipe.forkserver run -- snakemake --cores all --configfile config/demo.yaml

``run`` starts ``serve`` (below), runs the command with ``XAIPIPE_FORKSERVER`` naming the
server's socket, stops the server and returns the command's exit status. Every stage script
starts with ``hand_off(__file__)``: with a live server it sends the job (argv, working
directory, the whole environment, and stdin/stdout/stderr as file descriptors, ``SCM_RIGHTS``)
to the server, waits, and exits with the child's status; without one it returns and the
script runs in its own process exactly as before (SLURM jobs on other nodes, DVC, people).

The server never runs a torch operation and never initialises CUDA (forking after CUDA
initialisation is unsafe); each child sets its own torch threads (``--threads``) and
initialises CUDA itself. It refuses a job (the client then runs it normally, saying why on
stderr) when the client runs another Python or another copy of ``xaipipe``, when an
interpreter-level ``PYTHON*`` variable differs, or when an ``xaipipe`` source file changed
since the server imported it.

Cancelling works as for a normal job: SIGINT, SIGTERM and SIGHUP sent to the client are
forwarded to its child, and a client that dies (SIGKILL) gets its child terminated. In the
child SIGTERM and SIGHUP raise ``SystemExit`` so the atomic writers (:mod:`xaipipe.io`)
delete their temporary files before the process ends.

Hand-written because no library does this for arbitrary scripts: ``multiprocessing``'s
``forkserver`` context forks workers for pickled functions of one parent program and cannot
adopt another process's descriptors, environment and exit status.

This module must stay cheap to import (standard library only at module level): every stage
script imports it before anything heavy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

ENV = "XAIPIPE_FORKSERVER"
"""The environment variable that names the server's Unix socket."""

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
KILL_GRACE_S = 10.0
"""How long a child whose client died may clean up after SIGTERM before SIGKILL."""
IDLE_TIMEOUT_S = 600.0
CHILD_ENV = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
"""``PYTHON*`` variables a child applies itself; every other one must match the server's."""

_in_child = False
"""True in a forked child: its script's own ``hand_off`` must not hand off again."""


# --------------------------------------------------------------------------- client side

def hand_off(script: str) -> None:
    """Run this stage script in the fork server named by ``$XAIPIPE_FORKSERVER``, if any,
    and exit with its status; otherwise return and let the script run here.

    Call it first thing in a script, ``hand_off(__file__)``. It does nothing when the
    script is imported rather than run, inside a fork-server child, without the variable,
    when no server answers on the socket, or in an audited run (``XAIPIPE_AUDIT_DIR``:
    :mod:`xaipipe.io_audit` records the modules a fresh process imports).
    """
    path = os.environ.get(ENV)
    if _in_child or not path or not _is_program(script):
        return
    from xaipipe.io_audit import AUDIT_DIR_ENV

    if os.environ.get(AUDIT_DIR_ENV):
        return
    try:
        client = _Client(path, script)
    except OSError:
        return  # no server there (finished, or another machine): run normally
    try:
        reply = client.receive()
    except OSError:
        reply = None
    if reply is None or "refused" in reply:
        reason = "it closed the connection" if reply is None else reply["refused"]
        print(f"xaipipe.forkserver: running without the fork server: {reason}", file=sys.stderr)
        client.close()
        return
    _exit_like(client.wait())


def _is_program(script: str) -> bool:
    """Whether ``script`` is the file this interpreter was started to run."""
    return bool(sys.argv) and os.path.realpath(sys.argv[0]) == os.path.realpath(script)


def identity() -> dict:
    """What must match between a client and the server for a child to behave like the
    client's own process: interpreter, ``xaipipe`` source tree, interpreter variables."""
    return {"prefix": sys.prefix, "version": sys.version,
            "package": os.path.dirname(os.path.abspath(__file__)),
            "python_env": {k: v for k, v in os.environ.items()
                           if k.startswith("PYTHON") and k not in CHILD_ENV}}


class _Client:
    """One job's connection to the server: send the request, forward signals, get the status."""

    def __init__(self, path: str, script: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buffer = b""
        self.forwarded: int | None = None
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        request = {"script": os.path.abspath(script), "argv": sys.argv, "cwd": os.getcwd(),
                   "env": dict(os.environ), "path": sys.path, "identity": identity()}
        data = json.dumps(request).encode() + b"\n"
        try:
            sent = socket.send_fds(self.sock, [data], [0, 1, 2])
            if sent < len(data):
                self.sock.sendall(data[sent:])
        except OSError:
            pass  # the server answered (a refusal) and closed early: receive() reads it

    def receive(self) -> dict | None:
        """The server's next message, None when it closed the connection."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def wait(self) -> dict:
        """Forward SIGINT/SIGTERM/SIGHUP to the child until it ends; its status, plus the
        signal forwarded last (this process then ends by that signal, as it would have)."""
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, self._forward)
        try:
            status = self.receive()
        except OSError:
            status = None
        if status is None:
            print("xaipipe.forkserver: the fork server went away while running this job",
                  file=sys.stderr)
            status = {"exit": 1}
        status["forwarded"] = self.forwarded
        self.close()
        return status

    def _forward(self, signum, frame) -> None:
        self.forwarded = signum
        try:
            self.sock.sendall(json.dumps({"signal": signum}).encode() + b"\n")
        except OSError:
            pass  # the server is gone: receive() reports it

    def close(self) -> None:
        self.sock.close()


def _exit_like(status: dict) -> None:
    """End this process as the child ended: with its exit code, or killed by its signal. A
    child that exits 128 + N after this client forwarded signal N (SIGTERM, SIGHUP: the
    child's clean-up handler) counts as killed by N, as this process would have been."""
    signum = status.get("signal")
    forwarded = status.get("forwarded")
    if forwarded and status.get("exit") == 128 + forwarded:
        signum = forwarded
    sys.stdout.flush()
    sys.stderr.flush()
    if signum:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(128 + signum if signum else status.get("exit", 1))


# --------------------------------------------------------------------------- server side

def serve(socket_path: str, idle_timeout: float = IDLE_TIMEOUT_S,
          ready_fd: int | None = None) -> int:
    """Import everything the stages use, then serve jobs until ``stop``, SIGTERM/SIGINT or
    ``idle_timeout`` seconds without a job. In a forked child, run the job and exit."""
    _limit_numpy_blas_threads()
    _preload()
    job = _Server(socket_path, idle_timeout).run(ready_fd)
    if job is None:
        return 0
    _exit_child(_run_job(job))


def _limit_numpy_blas_threads() -> None:
    """numpy's OpenBLAS reads its thread count once, when it is loaded, here in the server;
    Snakemake gives a job ``OPENBLAS_NUM_THREADS=<threads>`` too late for a child to change
    it. One thread never oversubscribes the job's cores (torch's own threads are set per
    child, from ``--threads``)."""
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def _preload() -> None:
    """Import every ``xaipipe`` module and every module they import lazily (inside a
    function: torchvision's models, Captum, matplotlib...), so that no child pays for it.
    A module that fails to import is left to the job, which then reports the error itself."""
    import ast
    import importlib
    import pkgutil

    import xaipipe

    names = [info.name for info in
             pkgutil.walk_packages(xaipipe.__path__, "xaipipe.", onerror=lambda name: None)]
    for name in names:
        _try_import(importlib, name)
    for name in names:
        module = sys.modules.get(name)
        source = getattr(module, "__file__", None)
        if source and source.endswith(".py"):
            with open(source, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                for imported in _imported_names(node):
                    _try_import(importlib, imported)
    import gc

    gc.collect()
    gc.freeze()  # keep the preloaded objects out of the children's collections (less copying)


def _imported_names(node) -> list[str]:
    """Absolute module names an ``import`` / ``from ... import`` node loads (submodules
    named in a ``from`` included, guessed: names that are not modules fail quietly)."""
    import ast

    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _try_import(importlib, name: str) -> None:
    if name in sys.modules or name == __name__:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # not a module (a function imported by name) or not installed
    except Exception as exc:  # noqa: BLE001 - the job will raise it with its own context
        print(f"xaipipe.forkserver: preloading {name} failed ({exc!r}); jobs import it "
              "themselves", file=sys.stderr)


class _Job:
    """A request the server accepted: the client's connection, its file descriptors and the
    child's pid once forked."""

    def __init__(self, conn: socket.socket, request: dict, fds: list[int]):
        self.conn, self.request, self.fds = conn, request, fds
        self.pid = 0
        self.kill_at: float | None = None


class _Server:
    """Single-threaded: one ``select`` loop over the listening socket, the clients'
    connections and a signal wake-up pipe (forking from a threaded process is unsafe)."""

    def __init__(self, socket_path: str, idle_timeout: float):
        import selectors

        self.path, self.idle_timeout = socket_path, idle_timeout
        self.pid = os.getpid()
        self.jobs: dict[socket.socket, _Job] = {}
        self.pending: set[socket.socket] = set()  # accepted, request not read yet
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = _listen(socket_path)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.wake_r, self.wake_w = socket.socketpair()
        for end in (self.wake_r, self.wake_w):
            end.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.terminating = False
        self.sources = _source_mtimes()
        self.last_activity = time.monotonic()

    # -- main loop

    def run(self, ready_fd: int | None) -> _Job | None:
        """Serve until told to stop; in a forked child return that child's job."""
        old_wakeup = signal.set_wakeup_fd(self.wake_w.fileno())
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self._announce(ready_fd)
        try:
            while self.listener is not None or self.jobs:
                job = self._step()
                if job is not None:
                    return job
            return None
        finally:
            if os.getpid() == self.pid:
                signal.set_wakeup_fd(old_wakeup)
                self._close_listener()

    def _announce(self, ready_fd: int | None) -> None:
        if ready_fd is None:
            print(f"xaipipe.forkserver: serving on {self.path}", file=sys.stderr, flush=True)
        else:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    def _step(self) -> _Job | None:
        """Wait for one round of events and handle them; a job in a forked child."""
        for key, _ in self.selector.select(self._timeout()):
            if key.fileobj is self.wake_r:
                self._drain_wakeups()
            elif key.fileobj is self.listener:
                self._accept()
            elif key.fileobj in self.pending:
                job = self._on_request(key.fileobj)
                if job is not None:
                    return job
            elif key.fileobj in self.jobs:
                self._on_client(self.jobs[key.fileobj])
        self._reap()
        self._enforce_deadlines()
        return None

    def _timeout(self) -> float:
        deadlines = [job.kill_at for job in self.jobs.values() if job.kill_at is not None]
        if not self.jobs:
            deadlines.append(self.last_activity + self.idle_timeout)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def _on_signal(self, signum, frame) -> None:
        if signum != signal.SIGCHLD:
            self.terminating = True

    def _drain_wakeups(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if self.terminating and self.listener is not None:
            self._close_listener()
            for job in self.jobs.values():
                self._kill(job, signal.SIGTERM)

    # -- connections

    def _accept(self) -> None:
        import selectors

        conn, _ = self.listener.accept()
        if not _same_user(conn):
            conn.close()
            return
        self.last_activity = time.monotonic()
        self.pending.add(conn)
        self.selector.register(conn, selectors.EVENT_READ)

    def _on_client(self, job: _Job) -> None:
        """A signal the client forwards, or the client gone."""
        try:
            data = job.conn.recv(4096)
        except OSError:
            data = b""
        if not data:  # the client died: end its child as a killed job would end
            self._forget_client(job)
            self._kill(job, signal.SIGTERM)
            return
        for line in data.splitlines():
            try:
                signum = json.loads(line).get("signal")
            except ValueError:
                continue  # not a message of ours
            if signum in [int(s) for s in FORWARDED_SIGNALS]:
                _signal(job.pid, signum)  # as the client got it; the client still waits

    def _on_request(self, conn: socket.socket) -> _Job | None:
        """A job (fork a child for it; the job in the child) or ``stop``."""
        self.pending.discard(conn)
        self.selector.unregister(conn)
        try:
            request, fds = _read_request(conn)
        except (OSError, ValueError):
            conn.close()
            return None
        if request.get("op") == "stop":
            _send(conn, {"stopping": True})
            conn.close()
            self._close_listener()
            return None
        refusal = self._refusal(request)
        if refusal:
            _send(conn, {"refused": refusal})
            conn.close()
            _close_fds(fds)
            return None
        return self._fork(_Job(conn, request, fds))

    def _refusal(self, request: dict) -> str | None:
        """Why a child could not behave like the client's own process, or None."""
        mine, theirs = identity(), request.get("identity", {})
        for key, what in (("prefix", "another Python environment"),
                          ("version", "another Python version"),
                          ("package", "another copy of xaipipe"),
                          ("python_env", "other PYTHON* environment variables")):
            if mine[key] != theirs.get(key):
                return (f"the client uses {what} than the server "
                        f"({theirs.get(key)!r} vs {mine[key]!r})")
        if _source_mtimes() != self.sources:
            return "xaipipe's source files changed since the fork server imported them"
        return None

    def _fork(self, job: _Job) -> _Job | None:
        import selectors

        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_child(job)
            return job
        _close_fds(job.fds)
        job.pid = pid
        self.jobs[job.conn] = job
        self.selector.register(job.conn, selectors.EVENT_READ)
        _send(job.conn, {"pid": pid})
        return None

    def _become_child(self, job: _Job) -> None:
        """Drop everything of the server (its sockets, signal handlers) in a forked child."""
        global _in_child
        _in_child = True
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in [self.listener, self.wake_r, self.wake_w, job.conn, *self.jobs, *self.pending]:
            if sock is not None:
                sock.close()
        self.selector.close()
        _die_with_parent(self.pid)

    # -- children

    def _reap(self) -> None:
        """Collect every finished child and tell its client how it ended."""
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = next((j for j in self.jobs.values() if j.pid == pid), None)
            if job is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if job.conn.fileno() != -1:
                _send(job.conn, {"exit": code} if code >= 0 else {"signal": -code})
                self._forget_client(job)
            del self.jobs[job.conn]
            self.last_activity = time.monotonic()

    def _forget_client(self, job: _Job) -> None:
        if job.conn.fileno() != -1:
            self.selector.unregister(job.conn)
            job.conn.close()

    def _kill(self, job: _Job, signum: int) -> None:
        """Send ``signum`` now and SIGKILL after the grace period if the child still runs."""
        if _signal(job.pid, signum) and job.kill_at is None:
            job.kill_at = time.monotonic() + KILL_GRACE_S

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for job in self.jobs.values():
            if job.kill_at is not None and now >= job.kill_at:
                _signal(job.pid, signal.SIGKILL)
                job.kill_at = None
        if not self.jobs and self.listener is not None and \
                now >= self.last_activity + self.idle_timeout:
            self._close_listener()

    def _close_listener(self) -> None:
        """Stop taking jobs: new clients find no socket and run normally."""
        if self.listener is None:
            return
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _signal(pid: int, signum: int) -> bool:
    """Send ``signum`` to ``pid``; False when it has already ended."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _listen(path: str) -> socket.socket:
    """A listening socket at ``path`` in a private directory (created 0700 when missing)."""
    import stat

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise SystemExit(f"error: {directory} must be a directory only you can use (mode 0700), "
                         "since any process that can reach the socket runs code as you: "
                         "choose a socket path in a private directory")
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise SystemExit(f"error: a fork server already listens on {path}; "
                             f"stop it with `python -m xaipipe.forkserver stop --socket {path}`")
        except ConnectionRefusedError:
            os.unlink(path)  # left behind by a server that was killed
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener


def _same_user(conn: socket.socket) -> bool:
    """The connecting process runs as this user (Linux; elsewhere the 0700 directory guards)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """One JSON line and the descriptors sent with it (none for ``stop``)."""
    conn.settimeout(10)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            _close_fds(fds)
            raise ValueError("request cut short")
        data += chunk
    conn.settimeout(None)
    request = json.loads(data)
    if request.get("op") != "stop" and len(fds) != 3:
        _close_fds(fds)
        raise ValueError("a job request carries stdin, stdout and stderr")
    return request, fds


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the client is gone; its child is handled by the loop


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _source_mtimes() -> dict[str, int]:
    """Modification times of the loaded ``xaipipe`` modules' files."""
    stamps = {}
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        if (name == "xaipipe" or name.startswith("xaipipe.")) and source:
            try:
                stamps[source] = os.stat(source).st_mtime_ns
            except OSError:
                stamps[source] = -1
    return stamps


def _die_with_parent(server_pid: int) -> None:
    """Linux: the kernel sends SIGTERM to this child if the server dies (prctl
    PR_SET_PDEATHSIG), so no orphan keeps writing after its client was told the job failed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != server_pid:
        os._exit(1)


# --------------------------------------------------------------------------- the child

def _run_job(job: _Job) -> int:
    """In the child: become the client's process, run its script, return its exit status."""
    _adopt(job.request, job.fds)
    script = job.request["script"]
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as ended:
        return _exit_code(ended.code)
    except KeyboardInterrupt:
        raise  # the interpreter then ends this process by SIGINT, as a plain run would
    except BaseException as exc:  # noqa: BLE001 - an uncaught error of the script
        trimmed = _script_traceback(exc.__traceback__, script)
        sys.excepthook(type(exc), exc.with_traceback(trimmed), trimmed)
        return 1
    return 0


def _adopt(request: dict, fds: list[int]) -> None:
    """The client's stdin/stdout/stderr, working directory, environment, argv and sys.path;
    SIGTERM/SIGHUP as ``SystemExit`` so the atomic writers clean up; a fresh process's
    thread count and random state."""
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    sys.path[:] = request["path"]
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    _reopen_std_streams(unbuffered=bool(os.environ.get("PYTHONUNBUFFERED")))
    unwind_on_termination()
    _fresh_process_state()


def _reopen_std_streams(unbuffered: bool) -> None:
    """New ``sys.stdin/stdout/stderr`` on descriptors 0-2, buffered as Python buffers them
    for a process started on those files (line-buffered on a terminal)."""
    import io

    def text(fd: int, mode: str, old) -> io.TextIOWrapper:
        binary = open(fd, mode + "b", closefd=False)
        interactive = os.isatty(fd)
        return io.TextIOWrapper(binary, encoding=getattr(old, "encoding", None),
                                errors=getattr(old, "errors", None),
                                line_buffering=interactive or fd == 2,
                                write_through=unbuffered and fd != 0)

    sys.stdin = sys.__stdin__ = text(0, "r", sys.__stdin__)
    sys.stdout = sys.__stdout__ = text(1, "w", sys.__stdout__)
    sys.stderr = sys.__stderr__ = text(2, "w", sys.__stderr__)


def _fresh_process_state() -> None:
    """What a new process would have and a forked one inherits: numpy's global random state
    (seeded from the OS at import) and torch's intra-op thread count (``OMP_NUM_THREADS``
    of this job's environment, read once when torch is loaded). Python's ``random`` reseeds
    itself on fork."""
    import numpy as np
    import torch

    np.random.seed()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def _exit_child(code: int) -> None:
    """End the child as the interpreter ends a process (wait for its non-daemon threads, run
    the ``atexit`` functions: logging's flush, multiprocessing's joins; flush stdout and
    stderr) but without tearing down the thousands of preloaded modules one by one, which
    takes about a second."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def unwind_on_termination() -> None:
    """SIGTERM and SIGHUP (Snakemake cancelling a job, a closed terminal) raise
    ``SystemExit(128 + N)`` instead of killing the process outright, so ``finally`` blocks run
    and the atomic writers (:mod:`xaipipe.io`) delete their temporaries: no partial output.
    Every stage installs it (:func:`xaipipe.cli.run_stage`), handed off or not."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _exit_code(code) -> int:
    """The exit status ``SystemExit(code)`` gives a Python process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _script_traceback(tb, script: str):
    """The traceback from the script's first frame on (without this module and runpy)."""
    script = os.path.realpath(script)
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return tb


# --------------------------------------------------------------------------- commands

def stop(socket_path: str) -> int:
    """Ask the server on ``socket_path`` to take no more jobs and exit once its jobs end."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
        sock.sendall(json.dumps({"op": "stop"}).encode() + b"\n")
        sock.recv(4096)
    except OSError as exc:
        print(f"xaipipe.forkserver: no fork server on {socket_path} ({exc.strerror})",
              file=sys.stderr)
        return 1
    finally:
        sock.close()
    return 0


def run(command: list[str], idle_timeout: float = IDLE_TIMEOUT_S,
        start_timeout: float = 300) -> int:
    """Start a server on a socket in a new private directory, run ``command`` with
    ``$XAIPIPE_FORKSERVER`` naming it, stop the server; the command's exit status."""
    import shutil
    import subprocess
    import tempfile

    directory = tempfile.mkdtemp(prefix="xaipipe-forkserver-")
    path = os.path.join(directory, "socket")
    try:
        server = _start_server(path, idle_timeout, start_timeout)
        env = dict(os.environ, **({ENV: path} if server else {}))
        code = _run_command(command, env)
        if server:
            stop(path)
            _wait_or_terminate(server)
        return code
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _start_server(path: str, idle_timeout: float, start_timeout: float):
    """``serve`` in its own session (a Ctrl-C reaches the jobs through their clients, not
    the server); None, with a warning, when it is not ready in ``start_timeout`` s."""
    import selectors
    import subprocess

    ready_r, ready_w = os.pipe()
    server = subprocess.Popen(
        [sys.executable, "-m", "xaipipe.forkserver", "serve", "--socket", path,
         "--idle-timeout", str(idle_timeout), "--ready-fd", str(ready_w)],
        pass_fds=[ready_w], start_new_session=True, stdin=subprocess.DEVNULL)
    os.close(ready_w)
    with selectors.DefaultSelector() as selector, os.fdopen(ready_r, "rb") as ready:
        selector.register(ready, selectors.EVENT_READ)
        line = ready.readline() if selector.select(start_timeout) else b""
    if line == b"ready\n":
        return server
    print("xaipipe.forkserver: the fork server did not start; running without it",
          file=sys.stderr)
    _wait_or_terminate(server, timeout=0)
    return None


def _run_command(command: list[str], env: dict) -> int:
    """Run ``command``; SIGTERM/SIGHUP are passed on, and a Ctrl-C, which the command gets
    from the terminal itself, leaves this process waiting for it."""
    import subprocess

    proc = subprocess.Popen(command, env=env)
    previous = {signum: signal.signal(signum, lambda s, f: proc.send_signal(s))
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code if code >= 0 else 128 - code


def _wait_or_terminate(server, timeout: float = 30) -> None:
    import subprocess

    try:
        server.wait(timeout)
    except subprocess.TimeoutExpired:
        server.terminate()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xaipipe.forkserver",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="import everything once and fork a child per job")
    stop_p = sub.add_parser("stop", help="ask a server to exit once its running jobs end")
    for p in (serve_p, stop_p):
        p.add_argument("--socket", default=os.environ.get(ENV),
                       help=f"the server's Unix socket (default: ${ENV}); its directory must be "
                            "private (mode 0700)")
    serve_p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="S",
                         help="exit after S seconds without a job (default %(default)s)")
    serve_p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    run_p = sub.add_parser("run", help="start a server, run a command with it, stop it")
    run_p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="S",
                       help="the server exits after S idle seconds if never stopped")
    run_p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    if args.command == "run":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("run needs a command: run -- snakemake --cores all ...")
        return run(cmd, idle_timeout=args.idle_timeout)
    if not args.socket:
        parser.error(f"give --socket PATH or set ${ENV}")
    if args.command == "stop":
        return stop(args.socket)
    return serve(args.socket, idle_timeout=args.idle_timeout, ready_fd=args.ready_fd)


if __name__ == "__main__":
    from xaipipe.forkserver import main as _main  # the importable module, not a __main__ copy

    sys.exit(_main())
