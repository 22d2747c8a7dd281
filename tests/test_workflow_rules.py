"""rules/*.smk are written from the stage table, readable in place and snakefmt-clean."""

from __future__ import annotations

import re
import subprocess
import sys

from e2e.workdir import REPO
from xaipipe import pipeline, rulegen

RULES = REPO / "rules"


def test_committed_rule_files_are_current():
    expected = rulegen.rule_files()
    for name, text in expected.items():
        assert (RULES / name).read_text() == text, (
            f"rules/{name} is out of date: run `python -m xaipipe.pipeline rules`")
    assert {p.name for p in RULES.glob("*.smk")} == set(expected)


def test_snakefmt_check_passes_on_the_workflow():
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_shows_its_directives_in_place():
    text = "".join((RULES / f"{group}.smk").read_text() for group in rulegen.GROUPS)
    for stage in pipeline.STAGE_LIST:
        block = text.split(f"rule {stage.name}:\n")[1].split("\nrule ")[0]
        for directive in ("input:", "output:", "params:", "log:", "benchmark:", "threads:",
                          "resources:", "conda:", "shell:"):
            assert f"    {directive}" in block, f"rule {stage.name} lacks {directive}"
        flat = re.sub(r"\s+", " ", block)
        assert f'"python {stage.script} --config " + CONFIGFILES' in flat
        assert "config_slice(" in block


def test_captions_exist_and_every_stage_has_a_rule_file():
    text = "".join(p.read_text() for p in RULES.glob("*.smk"))
    captions = re.findall(r'caption="(report/[\w.]+)"', text)
    assert captions, "no report() captions found"
    for caption in captions:
        assert (RULES / caption).is_file(), f"rules/{caption} is missing"
    assert {s.group for s in pipeline.STAGE_LIST} == set(rulegen.GROUPS)


def test_snakefile_sets_a_minimum_snakemake_version():
    assert re.search(r'^min_version\("9\.\d+"\)', (REPO / "Snakefile").read_text(), re.M)
