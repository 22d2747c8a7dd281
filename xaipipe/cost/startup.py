"""What a fresh job process pays before it works: the interpreter and the imports of its
stage's script (found by reading the import statements), measured in one probe process; or,
with a live fork server, the hand-off of a job to it."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from xaipipe.dvcgen import PACKAGE, REPO_DIR, module_file, module_name
from xaipipe.errors import XaipipeError
from xaipipe.pipeline import STAGES, Stage

PYTHON = "python"
"""The :attr:`Rates.startup_s` entry of the interpreter's own start (with a fork server: the
whole hand-off of a job to the warm server)."""


def _executed(body: Sequence[ast.stmt]):
    """The statements of ``body`` that run when the module is imported (function bodies do
    not; class bodies, ``if`` / ``try`` / ``with`` blocks do)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        for name in ("body", "orelse", "finalbody", "handlers"):
            yield from _executed([n for n in getattr(node, name, []) if isinstance(n, ast.stmt)])


def _imported_at_load(path: Path) -> set[str]:
    """Dotted names of the modules ``path`` imports when it is loaded."""
    names: set[str] = set()
    for node in _executed(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names
                      if module_file(f"{node.module}.{alias.name}")}
    return names


@functools.lru_cache(maxsize=None)
def _loads(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(third-party modules, ``xaipipe`` modules) that loading ``path`` imports, transitively
    through the ``xaipipe`` modules; lazy imports inside functions are left out."""
    seen: set[Path] = set()
    todo, third = [path], set()
    while todo:
        for name in _imported_at_load(todo.pop()):
            parts = name.split(".")
            if parts[0] != PACKAGE:
                if parts[0] not in sys.stdlib_module_names and parts[0] != "__future__":
                    third.add(name)
                continue
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return frozenset(third), frozenset(module_name(f) for f in seen)


MODEL_IMPORTS = frozenset({"torch", "torchvision"})
"""What a stage that builds a model (``Stage.gpu``) imports besides its load-time imports:
:mod:`xaipipe.architectures` imports torchvision when it builds one."""


@functools.lru_cache(maxsize=None)
def startup_modules(stage_name: str) -> frozenset[str]:
    """The modules a fresh process of the stage imports before it works: those its script
    imports when loaded, transitively through the ``xaipipe`` modules it loads (third-party
    ones by the dotted name the import statement gives), plus :data:`MODEL_IMPORTS` for a
    stage that builds a model. Hand-written because :func:`xaipipe.dvcgen.library_modules`
    follows lazy imports inside functions too, which a start-up does not pay."""
    stage = STAGES[stage_name]
    third, own = _loads(REPO_DIR / stage.script)
    return third | own | (MODEL_IMPORTS if stage.gpu else frozenset())


IMPORT_PROBE = """import importlib, json, sys, time
seconds = {}
for name in sys.argv[1:]:
    tic = time.perf_counter()
    importlib.import_module(name)
    seconds[name] = time.perf_counter() - tic
print(json.dumps(seconds))
"""


def _run_timed(command: list[str], what: str) -> tuple[float, str]:
    tic = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_DIR)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        raise XaipipeError(f"measuring {what}: {' '.join(command[:3])} ... exited "
                           f"{done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def import_order(stage_names: Sequence[str]) -> list[str]:
    """Every start-up module of the stages, each after what it needs: third-party modules
    first, the most widely used first (numpy before pandas, torch before torchvision and
    Captum), then the ``xaipipe`` modules, those that load fewer others first."""
    modules = set().union(*(startup_modules(name) for name in stage_names))
    users = {top: sum(any(m.split(".")[0] == top for m in startup_modules(name))
                      for name in stage_names) for top in {m.split(".")[0] for m in modules}}
    third = sorted((m for m in modules if m.split(".")[0] != PACKAGE),
                   key=lambda m: (-users[m.split(".")[0]], m.split(".")[0], m.count("."), m))
    own = sorted((m for m in modules if m.split(".")[0] == PACKAGE),
                 key=lambda m: (len(_loads(module_file(m))[1]), m))
    return third + own


def measure_imports(stage_names: Sequence[str]) -> dict[str, float]:
    """Seconds a fresh process spends importing each start-up module of the stages
    (:func:`startup_modules`) and starting and ending the interpreter (:data:`PYTHON`): one
    process imports them in :func:`import_order`, so each figure is what that module adds to
    what came before it, and a stage's start-up is the sum over its own modules."""
    order = import_order(stage_names)
    seconds = json.loads(_run_timed([sys.executable, "-c", IMPORT_PROBE, *order], "import times")[1])
    return {**seconds, PYTHON: _run_timed([sys.executable, "-c", "pass"], "Python's start-up")[0]}


def measure_forkserver_startup(config_files: Sequence[str], stage: Stage) -> dict[str, float]:
    """With a live fork server: the wall seconds of handing ``python workflow_scripts/<stage>.py
    --help`` to it (every package is already imported there), as the :data:`PYTHON` entry."""
    command = [sys.executable, str(REPO_DIR / stage.script), "--config", *config_files, "--help"]
    return {PYTHON: _run_timed(command, "the fork server's start-up")[0]}
