"""Check that a stage's declared inputs, outputs and params are what it really uses.

With ``XAIPIPE_AUDIT_DIR`` set, every stage script (:func:`xaipipe.cli.run_stage`) records

* every file it opens under the working directory or the dataset root (Python's ``open``
  audit events, which ``open``, ``io.open``, ``os.open``, numpy, torch and PIL all raise; and
  the paths given to ``pandas.read_parquet``, whose reader opens files in C++), split into
  reads and writes;
* every config key it reads, through :class:`RecordingConfig` (the validated config wrapped
  once it is loaded, so validation itself does not count);
* every ``xaipipe`` module it imported,

and writes them to ``<dir>/<script>[-<wildcards>].json`` when it ends. :func:`problems`
compares a record with the stage table (:mod:`xaipipe.pipeline`): a file read that is not
a declared input (or inside one), a write outside the declared outputs (their temporary
siblings and the checkpoint directory included), a config key outside the declared params,
a module missing from the stage's DVC dependencies (:func:`xaipipe.dvcgen.library_modules`).
``tests/test_workflow_e2e.py`` runs the whole CI DAG this way; ``tests/test_io_audit.py``
plants an undeclared read and an undeclared key and checks they are caught.

Hand-written: Python's audit hooks (PEP 578) are the library; no tool maps them onto a
workflow's declarations.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

AUDIT_DIR_ENV = "XAIPIPE_AUDIT_DIR"

UNDECLARED_KEYS_OK = ("results_dir", "dataset.name", "dataset.voc_root", "plugins.path", "device",
                      "gpu.jobs_per_device")
"""Config keys a stage may read without declaring them: where files are (the declared paths
already change with them, and Snakemake reruns a job whose input files change; where plug-in
modules are imported from) and which device computes and how many jobs share it (execution
settings, like the thread count)."""

WRITE_MODES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


class RecordingConfig(dict):
    """A config mapping that records the dotted path of every value read from it. Nested
    mappings come back wrapped, unrecorded (going through ``config["train"]`` to read
    ``["epochs"]`` reads ``train.epochs`` only); iterating over a mapping or copying it reads
    all of it, and records the mapping's own path. Asking for a missing key records it too."""

    def __init__(self, data: Mapping, seen: set[str], prefix: str = ""):
        super().__init__(data)
        self._seen = seen
        self._prefix = prefix

    def _path(self, key: Any) -> str:
        return f"{self._prefix}{key}"

    def _whole(self) -> None:
        self._seen.add(self._prefix.rstrip(".") or "<all>")

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, Mapping):
            return RecordingConfig(value, self._seen, self._path(key) + ".")
        self._seen.add(self._path(key))
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if super().__contains__(key) else self._record_missing(key, default)

    def _record_missing(self, key: Any, default: Any) -> Any:
        self._seen.add(self._path(key))
        return default

    def __contains__(self, key: Any) -> bool:
        self._seen.add(self._path(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator:
        self._whole()
        return super().__iter__()

    def keys(self):
        self._whole()
        return super().keys()

    def items(self):
        return [(k, self[k]) for k in super().keys()]

    def values(self):
        return [self[k] for k in super().keys()]

    def plain(self) -> dict:
        """A plain deep copy (records the whole mapping as read)."""
        self._whole()
        return copy.deepcopy({k: v.plain() if isinstance(v, RecordingConfig) else v
                              for k, v in dict.items(self)})

    def __deepcopy__(self, memo: dict) -> dict:
        return self.plain()

    def __copy__(self) -> dict:
        return self.plain()

    def __reduce__(self):
        return (dict, (self.plain(),))


class Recorder:
    """Collects one stage run's file opens, config keys and imported modules."""

    def __init__(self, roots: list[Path]):
        self.roots = [r.resolve() for r in roots]
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.keys: set[str] = set()
        self.active = True

    def _inside(self, path: Path) -> bool:
        return any(path == r or r in path.parents for r in self.roots)

    def file(self, path: Any, write: bool) -> None:
        if not self.active or isinstance(path, int):
            return
        path = Path(os.fsdecode(path)).resolve()
        if path.suffix in (".py", ".pyc") or not self._inside(path):
            return
        if not write and not path.exists():  # import machinery probing, failed opens
            return
        (self.writes if write else self.reads).add(str(path))

    def hook(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            write = (any(c in mode for c in "wax+") if isinstance(mode, str)
                     else bool((flags or 0) & WRITE_MODES))
            self.file(path, write)

    def wrap(self, config: Mapping) -> RecordingConfig:
        return RecordingConfig(config, self.keys)


def start(config: Mapping) -> tuple[Recorder, RecordingConfig] | None:
    """When ``XAIPIPE_AUDIT_DIR`` is set: install the recorder for this process and return it
    with the wrapped config; else None."""
    if not os.environ.get(AUDIT_DIR_ENV):
        return None
    from xaipipe import paths

    recorder = Recorder([Path.cwd(), paths.dataset_root(config)])
    sys.addaudithook(recorder.hook)
    import pandas

    read_parquet = pandas.read_parquet

    def recorded_read_parquet(path, *args, **kwargs):
        recorder.file(path, write=False)
        return read_parquet(path, *args, **kwargs)

    pandas.read_parquet = recorded_read_parquet
    return recorder, recorder.wrap(config)


def finish(recorder: Recorder, script: str, wildcards: Mapping[str, Any]) -> Path:
    """Stop recording and write the record (see the module docstring)."""
    recorder.active = False
    root = Path(__file__).resolve().parents[1]
    modules = sorted(os.path.relpath(m.__file__, root) for name, m in list(sys.modules.items())
                     if name.split(".")[0] == "xaipipe" and getattr(m, "__file__", None))
    record = {"script": os.path.relpath(Path(script).resolve(), root),
              "wildcards": dict(wildcards), "reads": sorted(recorder.reads),
              "writes": sorted(recorder.writes), "keys": sorted(recorder.keys),
              "modules": modules}
    stem = "-".join([Path(script).stem, *(str(v) for v in wildcards.values())])
    out = Path(os.environ[AUDIT_DIR_ENV]) / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    return out


# --- checking a record against the stage table ---------------------------------------------

def _covered_key(key: str, declared: list[str]) -> bool:
    """``key`` is declared, inside a declared section, or on the way to a declared key."""
    return key in UNDECLARED_KEYS_OK or any(
        key == d or key.startswith(d + ".") or d.startswith(key + ".") for d in declared)


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _temp_siblings(outputs: list[Path], path: Path) -> bool:
    """``path`` is (inside) an atomic-write temporary of an output: ``.<name>.*.tmp``."""
    for candidate in (path, *path.parents):
        for out in outputs:
            if candidate.parent == out.parent and candidate.name.startswith(f".{out.name}."):
                return True
    return False


def problems(record: Mapping, config: Mapping, workdir: Path) -> list[str]:
    """Everything in ``record`` the stage table does not declare for that job (empty: all
    declared). ``config``: the run's merged config; ``workdir``: where the run happened."""
    from xaipipe import paths, pipeline
    from xaipipe.dvcgen import EXECUTION_MODULES, library_modules

    stage = pipeline.STAGES[Path(record["script"]).stem]
    wildcards = {w: record["wildcards"][w] for w in stage.wildcards}
    where = f"{stage.name} {' '.join(f'{k}={v}' for k, v in wildcards.items())}".strip()

    def absolute(entries: dict[str, list[Path]]) -> list[Path]:
        return [(workdir / p).resolve() for ps in entries.values() for p in ps]

    inputs = absolute(pipeline.job_files(stage, config, wildcards, "inputs"))
    outputs = absolute(pipeline.job_files(stage, config, wildcards, "outputs"))
    checkpoints = (workdir / paths.at(config, paths.CHECKPOINT_DIR_T, name="x")).parent.resolve()
    found = []
    for read in map(Path, record["reads"]):
        if not _under(read, inputs + outputs) and not _under(read, [checkpoints]):
            found.append(f"{where}: reads {read} but declares no input that holds it")
    for written in map(Path, record["writes"]):
        if not (_under(written, outputs) or _temp_siblings(outputs, written)
                or _under(written, [checkpoints])):
            found.append(f"{where}: writes {written}, which is not a declared output")
    declared = [k.format(**wildcards) for k in stage.params]
    for key in record["keys"]:
        if not _covered_key(key, declared):
            found.append(f"{where}: reads config key {key!r}, which is not in its params")
    deps = set(library_modules(stage.script, config)) | {stage.script, *EXECUTION_MODULES}
    for module in record["modules"]:
        if module not in deps and not module.startswith(".."):
            found.append(f"{where}: imports {module}, which is not a DVC dependency of it")
    return found
