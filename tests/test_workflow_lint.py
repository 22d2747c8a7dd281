"""The conda environments of envs/ agree with pyproject.toml and install xaipipe."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from e2e.workdir import REPO

CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch"}
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def pyproject_bounds() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", d).groups() for d in deps)


def test_there_are_env_files_for_every_rule_env():
    from xaipipe.pipeline import STAGE_LIST
    assert {f"{s.env}.yaml" for s in STAGE_LIST} <= {p.name for p in ENV_FILES}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_versions_equal_pyproject_and_install_xaipipe(env_file):
    bounds = pyproject_bounds()
    deps = yaml.safe_load(env_file.read_text())["dependencies"]
    conda = [d for d in deps if isinstance(d, str) and d not in ("pip",)]
    checked = 0
    for dep in conda:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        name = CONDA_TO_PYPI.get(name, name)
        if name == "python":
            continue
        assert name in bounds, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert spec == bounds[name], f"{env_file.name}: {name}{spec} but pyproject says {bounds[name]}"
        checked += 1
    assert checked >= 10
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e .." in pip  # the repository itself, relative to envs/
