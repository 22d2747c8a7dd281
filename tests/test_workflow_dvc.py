"""dvc.yaml is generated from the stage list and plans what Snakemake plans."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml

from e2e.workdir import REPO, copy_repo, snakemake, stub_scripts
from xaipipe import dvcgen, pipeline

CI_CONFIGS = ["config.yaml", "config/ci.yaml"]


def test_committed_dvc_yaml_is_current():
    expected = dvcgen.dvc_yaml(["config.yaml"])
    assert (REPO / "dvc.yaml").read_text() == expected, (
        "dvc.yaml is out of date: run `python -m xaipipe.pipeline dvc --config config.yaml > dvc.yaml`")


def dvc_jobs(configfiles) -> set[tuple[str, frozenset, frozenset]]:
    """(command, outputs, inputs) of every DVC stage instance, matrices expanded by hand;
    inputs without the library modules (DVC-only dependencies)."""
    stages = yaml.safe_load(dvcgen.dvc_yaml(configfiles))["stages"]
    planned = set()
    for stage in stages.values():
        axes = stage.get("matrix", {})
        for combo in itertools.product(*axes.values()):
            item = dict(zip(axes, combo))

            def fill(text, item=item):
                return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)

            outs = [fill(p) for key in ("outs", "metrics", "plots") for p in stage.get(key, [])]
            deps = [fill(p) for p in stage["deps"] if not p.startswith("xaipipe/")]
            planned.add((fill(stage["cmd"]), frozenset(outs), frozenset(deps)))
    return planned


def snakemake_jobs(dry_run_output: str) -> set[tuple[str, frozenset, frozenset]]:
    """(command without log redirection, outputs, inputs) of every job of a
    `snakemake -n -p`."""
    planned = set()
    for block in dry_run_output.split("\n\n"):
        command = re.search(r"^Shell command: (.*?) > \S+ 2>&1$", block, re.M)
        if command:
            outputs = re.search(r"^\s+output: (.*)$", block, re.M).group(1).split(", ")
            inputs = re.search(r"^\s+input: (.*)$", block, re.M).group(1).split(", ")
            planned.add((command.group(1), frozenset(outputs), frozenset(inputs)))
    return planned


def test_snakemake_and_dvc_plan_the_same_jobs(tmp_path):
    work = copy_repo(tmp_path / "repo")
    stub_scripts(work, pipeline.STAGES)
    # two cores: every rule gets its full `threads` (as on any machine with that many), which
    # dvc.yaml passes too
    dry = snakemake(["-n", "-p", "--forceall", "--cores", "2", "--configfile", "config/ci.yaml"],
                    work).stdout
    smk, dvc = snakemake_jobs(dry), dvc_jobs(CI_CONFIGS)
    assert len(smk) > 20  # the parser found the jobs
    assert smk == dvc, f"only Snakemake: {smk - dvc}\nonly DVC: {dvc - smk}"


def test_dvc_params_track_present_keys_or_their_section(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train_overrides:\n  black: {lr: 0.02}\nexplain:\n  ig_steps: 4\n")
    train = yaml.safe_load(dvcgen.dvc_yaml(["config.yaml", str(overlay)]))["stages"]["train"]
    assert train["params"] == [{"config.yaml": ["seed", "resolution", "train"]},
                               {str(overlay): ["train_overrides"]}]
    stages = yaml.safe_load(dvcgen.dvc_yaml([str(overlay)]))["stages"]
    # explain.channel_reduce etc. are unset: their section is tracked instead (over-tracking)
    assert stages["attribute"]["params"] == [{str(overlay): ["explain"]}]
    assert "params" not in stages["roar_summary"]  # it depends on no key the file sets


def test_generator_rejects_roar_without_train_maps(tmp_path, capsys):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("explain:\n  splits: [val]\n")
    assert pipeline.main(["dvc", "--config", "config.yaml", str(overlay)]) == 1
    assert "explain.splits must contain train, val_matched" in capsys.readouterr().err


@pytest.mark.parametrize("fraction", [0.5, 0.25, 1e-05])
def test_placeholder_paths_match_concrete_paths(fraction):
    """The {fraction} template renders the same text as a concrete fraction (`:g`)."""
    config = {"results_dir": "results"}
    concrete = str(pipeline.paths.roar_result(config, "roar", "black", "gradient", fraction, 0))
    template = str(pipeline.paths.roar_result(config, "roar", "black", "gradient",
                                              pipeline.Placeholder("fraction"), 0))
    assert template.replace("{fraction}", str(fraction)) == concrete
