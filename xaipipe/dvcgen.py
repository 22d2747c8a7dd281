"""Write ``dvc.yaml`` from the stage table (:mod:`xaipipe.pipeline`).

Every active stage becomes a DVC stage with the same command line as its Snakemake rule
(without the log redirection), its wildcards as a ``matrix``; a stage with extra grids (a
DVC matrix is one product) becomes one DVC stage per grid, ``<stage>_<grid>`` after the
first. Dependencies are the script, the declared inputs and **the library modules the script
imports** (:func:`library_modules`), so editing ``xaipipe/evaluate/roar.py`` reruns the ROAR
stages and nothing that does not import it.

    python -m xaipipe.pipeline dvc --config config.yaml > dvc.yaml
"""

from __future__ import annotations

import ast
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from xaipipe import registry
from xaipipe.config import load_config
from xaipipe.io import write_text
from xaipipe.pipeline import (STAGES, Placeholder, Stage, _lookup, _MISSING, active_stage_names,
                              check_grid, resolve, shell_command)

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
PACKAGE = PACKAGE_DIR.name

EXECUTION_MODULES = ("xaipipe/forkserver.py",)
"""Modules that decide how a job is started, not what it computes (every script imports the
fork server's hand-off first): not dependencies, so editing them reruns nothing."""

REGISTRY_LOOKUPS = {"variant_function": "variants", "method_function": "methods",
                    "model_function": "models"}
"""Registry functions that import a registered target by name: a module calling one
depends on every module that axis registers (built-in or plug-in)."""


def module_file(name: str) -> Path | None:
    """The source file of ``xaipipe`` module ``name`` (package ``__init__`` included)."""
    relative = Path(*name.split("."))
    for candidate in (REPO_DIR / relative.with_suffix(".py"), REPO_DIR / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    """The dotted name of the ``xaipipe`` module in ``path`` (a package for ``__init__.py``)."""
    parts = list(path.resolve().relative_to(REPO_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(``xaipipe`` modules that ``path`` imports anywhere in its body, registry axes whose
    targets it imports by name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    modules, axes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            called = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if called in REGISTRY_LOOKUPS:
                axes.add(REGISTRY_LOOKUPS[called])
    ours = {m for m in modules if m.split(".")[0] == PACKAGE and module_file(m)}
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    ours |= {".".join(m.split(".")[:i]) for m in ours for i in range(1, m.count(".") + 1)}
    return ours, axes


@lru_cache(maxsize=None)
def _scan(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    modules, axes = _imports_of(path)
    return frozenset(modules), frozenset(axes)


def library_modules(script: str | Path, config: Mapping | None = None) -> list[str]:
    """Repository-relative source files of every ``xaipipe`` module ``script`` may import:
    the closure over ``import`` statements anywhere in a module (lazy imports inside
    functions included), plus the modules of every registered variant / method of an axis a
    reached module looks up by name (:data:`REGISTRY_LOOKUPS`; ``config``'s plug-ins too,
    when their file lies in the repository), less :data:`EXECUTION_MODULES`.
    Over-approximates: a module imported on a path the job never takes still counts."""
    seen: set[Path] = set()
    axes: set[str] = set()
    todo = [Path(script).resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        modules, used = _scan(path)
        axes |= used
        todo += [module_file(m) for m in modules]
        for axis in used:
            for target in registry.AXES[axis].values():
                todo.append(module_file(target.split(":")[0]))
            for target in registry.plugins(config, axis).values():
                plugin = _plugin_file(target.split(":")[0], config)
                if plugin is not None:
                    todo.append(plugin)
    seen.discard(Path(script).resolve())
    return sorted(rel for rel in (os.path.relpath(p, REPO_DIR) for p in seen)
                  if rel not in EXECUTION_MODULES)


def _plugin_file(module: str, config: Mapping | None) -> Path | None:
    """The source file of a plug-in module when it lies inside the repository."""
    registry.add_plugin_path(config)
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    return origin if origin and REPO_DIR in origin.parents else None


def _dvc_params(stage: Stage, configfiles: Sequence[str]) -> list:
    """Per config file, the keys DVC should track: each of the stage's keys if the file
    sets it, else its nearest ancestor the file sets (over-tracking is safe; a key no file
    sets takes the schema default, which DVC cannot see -- see docs/orchestration.md)."""
    out = []
    for path in configfiles:
        data = yaml.safe_load(Path(path).read_text()) or {}
        keys: list[str] = []
        for key in stage.params:
            key = key.split(".{")[0]  # per-variant keys are tracked as their section
            parts = key.split(".")
            for depth in range(len(parts), 0, -1):
                candidate = ".".join(parts[:depth])
                if _lookup(data, candidate) is not _MISSING:
                    if candidate not in keys:
                        keys.append(candidate)
                    break
        keys = [k for k in keys if not any(k.startswith(other + ".") for other in keys)]
        if keys:
            out.append({path: keys})
    return out


def _dvc_stage(stage: Stage, config: Mapping, configfiles: Sequence[str],
               matrix: Mapping[str, list], wdir: str | None = None) -> dict:
    wildcards = {w: Placeholder(w, "${{item.{name}}}") for w in stage.wildcards}
    entry: dict[str, Any] = {"wdir": wdir} if wdir else {}
    if stage.wildcards:
        entry["matrix"] = dict(matrix)
    entry["cmd"] = shell_command(stage, configfiles, stage.threads, **wildcards)
    inputs = [str(p) for e in stage.inputs.values() for p in resolve(e, config, wildcards)]
    entry["deps"] = [stage.script, *library_modules(REPO_DIR / stage.script, config), *inputs]
    params = _dvc_params(stage, configfiles)
    if params:
        entry["params"] = params
    sections: dict[str, list] = {"outs": [], "metrics": [], "plots": []}
    for name, files in stage.outputs.items():
        section = "metrics" if name in stage.metrics else "plots" if name in stage.plots else "outs"
        sections[section] += [str(p) for p in resolve(files, config, wildcards)]
    entry.update({k: v for k, v in sections.items() if v})
    return entry


def dvc_yaml(configfiles: Sequence[str], wdir: str | None = None) -> str:
    """``dvc.yaml`` for the merged ``configfiles`` (see the module docstring). ``wdir`` (the
    repository root, relative to where the file will live) is set on every stage when the
    file is not written at the root."""
    config = load_config(configfiles)
    check_grid(config)
    stages = {}
    for name in active_stage_names(config):
        stage = STAGES[name]
        for suffix, grid in stage.all_grids().items():
            matrix = {w: list(value.of(config)) for w, value in grid.items()}
            if any(not values for values in matrix.values()):
                continue
            stages[f"{name}_{suffix}" if suffix else name] = _dvc_stage(
                stage, config, configfiles, matrix, wdir)
    command = "python -m xaipipe.pipeline dvc --config " + " ".join(configfiles)
    header = ("# Generated by `" + command + (" --out <this directory>`" if wdir else " > dvc.yaml`")
              + " from the stage table in\n"
              "# xaipipe/pipeline.py (the same one rules/*.smk are written from). Do not edit by\n"
              "# hand; tests/test_workflow_dvc.py fails when the committed dvc.yaml is out of date.\n")
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=100)


def write_preset(configfiles: Sequence[str], out: Path) -> Path:
    """Write ``out/dvc.yaml`` and ``out/results_dir.yaml`` (``python -m xaipipe.pipeline
    --help``)."""
    results_dir = f"{load_config(configfiles)['results_dir']}/{out.resolve().name}"
    overlay = out / "results_dir.yaml"
    write_text(overlay, "# Generated with dvc.yaml beside it: this preset's outputs stay apart "
               "from the committed dvc.yaml's.\n" + yaml.safe_dump({"results_dir": results_dir}))
    files = [*configfiles, os.path.relpath(overlay)]
    write_text(out / "dvc.yaml", dvc_yaml(files, wdir=os.path.relpath(".", out)))
    print(f"wrote {out / 'dvc.yaml'} (outputs under {results_dir}/); "
          f"run: dvc repro {out / 'dvc.yaml'}")
    return out / "dvc.yaml"
