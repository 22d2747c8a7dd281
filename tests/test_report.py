"""aggregate + report stages on a fixture of fake stage outputs written with the upstream
writers' formats (tiny: 2 variants, 4 classes, 16 px), plus a headless-Chromium check."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, fake_split, run_workflow_script
from xaipipe import paths
from xaipipe.config import deep_merge, load_config, validate_config
from xaipipe.data.store import write_split
from xaipipe.evaluate.localisation import MODEL, image_scores, image_table, localisation_rows
from xaipipe.evaluate.removal import tie_orders
from xaipipe.evaluate.roar_summary import plot_curves
from xaipipe.io import save_npy, write_json
from xaipipe.report.aggregate import (NOT_AVAILABLE, PAPER_ROW, aggregate_tables,
                                      confidence_gain_wide, run_aggregate)
from xaipipe.report.build import gain_display, run_report
from xaipipe.report.effects import EFFECT_COLUMNS
from xaipipe.report.html import PNG_SIGNATURE
from xaipipe.train_stage import plot_learning_curve

VARIANTS = ["standard", "black"]
METHODS = ["gradient", "random"]
SIZE = 16
IMAGES = 16
REPLICATES = 2
OVERRIDES = {"variants": VARIANTS, "replicates": REPLICATES, "explain": {"methods": METHODS},
             "report": {"saliency_images": 2, "bootstrap_resamples": 300,
                        "permutation_resamples": 299}}


@pytest.fixture(scope="module")
def pristine_outputs(tmp_path_factory):
    """Config + fake outputs of train, attribute, featvis, confidence_gain, localisation (with
    its per-image scores), undesirable, roar_summary and featvis_metrics for two variants x
    two replicate models ("black" is the more object-focused one by every metric: its
    gradient maps sit on the object, standard's are noise, and it relies less on the
    background); written once per module."""
    base = load_config([REPO / "config.yaml", REPO / "config" / "demo.yaml"])
    base["results_dir"] = str(tmp_path_factory.mktemp("report") / "results")
    config = validate_config(deep_merge(base, OVERRIDES), source="test_report")
    rng = np.random.default_rng(0)
    for k, variant in enumerate(VARIANTS):
        val = fake_split(n=IMAGES, size=SIZE, variant=variant, split="val")
        write_split(paths.variant_split_dir(config, variant, "val"), val)
        for replicate in range(REPLICATES):
            write_model_outputs(config, variant, replicate, k, val, rng)
    write_validation_outputs(config)
    roar_dir = paths.roar_summary_dir(config)
    pd.DataFrame([{"kind": kind, "variant": v, "method": m, "mean": (0.1 + 0.1 * k) * (m != "random"),
                   "std": 0.01, "n": 2} for kind in ("roar", "kar") for k, v in enumerate(VARIANTS)
                  for m in METHODS]).to_csv(roar_dir / "roar_scores.csv", index=False)
    curve = pd.DataFrame([{"kind": "roar", "variant": v, "method": m, "fraction": f, "mean": 0.5, "std": 0.1}
                          for v in VARIANTS for m in METHODS for f in (0.3, 0.7)])
    plot_curves(curve, "roar", "standard", roar_dir / "curves_roar_standard.png")
    pd.DataFrame([{"variant": v, "replicate": r, "judge": "own", "metric": "recognisability",
                   "mean": 0.5, "std": 0.1, "n": 4} for v in VARIANTS for r in range(REPLICATES)]
                 ).to_csv(paths.featvis_metrics_table(config), index=False)
    return config


def write_model_outputs(config, variant: str, replicate: int, k: int, val, rng) -> None:
    """The per-model outputs of replicate ``replicate`` of variant number ``k``."""
    where = {"replicate": replicate}
    write_json(paths.model_metrics(config, variant, **where), healthy_metrics(k))
    plot_learning_curve([{"epoch": 1, "loss": 1.0, "val_acc": 0.5}], 0.25, 0.3,
                        paths.model_curve(config, variant, **where), variant)
    save_npy(paths.model_predictions(config, variant, **where), val.labels[::-1].copy())
    maps = {}
    for method in METHODS:
        maps[method] = rng.random((IMAGES, SIZE, SIZE)).astype(np.float32)
        maps[method] += 2 * k * (method != "random") * val.masks
        save_npy(paths.attribution_map(config, variant, method, "val", **where), maps[method])
    ties = tie_orders(val.ids, SIZE * SIZE, 0)
    scores = image_scores(maps, val.masks, "clip", ties)
    scores[MODEL, "accuracy_bg_only"] = rng.random(IMAGES) < 0.5 - 0.25 * k
    frame = pd.DataFrame(localisation_rows(variant, maps, val.masks, "clip", ties))
    paths.localisation_table(config, variant, **where).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(paths.localisation_table(config, variant, **where), index=False)
    image_table(val.ids, scores).to_parquet(paths.localisation_images(config, variant, **where))
    save_npy(paths.featvis_dir(config, variant, **where) / "featvis.npy",
             rng.random((4, 3, SIZE, SIZE)).astype(np.float16))
    cg = pd.DataFrame([{"variant": variant, "mask": mask, "dilation": dilation,
                        "kind": "single" if "+" not in mask else "agreement",
                        "rho": rho, "kernel": kernel, "scg_mean": 0.1 + 0.1 * k, "ccg_mean": 0.2 + 0.1 * k}
                       for mask, dilation in (("gradient", "0"), ("gradient", "5"), ("random", "0"),
                                              ("gradient+random", "5+0"))
                       for kernel in ("gaussian", "zero") for rho in (0.05, 0.25)])
    cg.to_csv(paths.confidence_gain_table(config, variant, **where), index=False)
    write_json(paths.undesirable_dir(config, variant, **where) / "results.json", {
        "variant": variant, "num_images": 4, "settings": dict(config["undesirable"]),
        "methods": {
            m: {"phi": 40.0 + k, "undesirable_ratio": 0.03, "background_share": 0.6 - 0.3 * k,
                "background_fraction": 0.7}
            for m in ("ftc", "fntc")}})


def healthy_metrics(k: int) -> dict:
    """metrics.json of variant number ``k``: val accuracy 0.8 on 200 images, far above the
    majority-class rate 0.3."""
    return {"train_accuracy": 0.9 + 0.05 * k, "val_accuracy": 0.8, "val_matched_accuracy": 0.7,
            "loss": 0.1, "fg_only_val_accuracy": 0.6, "bg_only_val_accuracy": 0.5 - 0.25 * k,
            "bg_only_fill": "impute", "chance_accuracy": 0.25, "majority_accuracy": 0.3,
            "num_val_images": 200, "epochs": 2, "seed": 0}


VALIDATION = {"oracle_object": 0.9, "random": 0.5, "oracle_background": 0.1}
"""Per-image metric values of the fake metric validation (higher = better)."""


def write_validation_outputs(config, values=VALIDATION) -> None:
    """Fake ``metric_validation`` stage tables (every replicate) and oracle ROAR/KAR runs +
    ROAD scores of ``black``, ordered as a working metric orders them."""
    for replicate in range(REPLICATES):
        pd.DataFrame([{"variant": "black", "metric": metric, "method": m, "mean": v, "std": 0.1,
                       "n": 4, "excluded": 0}
                      for metric in ("energy_in_mask", "pointing_game", "SCG G_k rho=25%")
                      for m, v in values.items()]).to_csv(
            paths.metric_validation_table(config, "black", replicate=replicate), index=False)
    roar_dir = paths.roar_summary_dir(config)
    roar_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"kind": kind, "variant": "black", "method": m, "fraction": f, "seed": s,
                   "accuracy": (v if kind == "kar" else 1 - v) + 0.01 * s}
                  for kind in ("roar", "kar") for m, v in values.items()
                  for f in (0.3, 0.7) for s in (0, 1)]).to_csv(roar_dir / "roar_runs.csv", index=False)
    pd.DataFrame([{"variant": "black", "method": m, "score": 0.0, "mean_accuracy_morf": 1 - v,
                   "mean_accuracy_lerf": v} for m, v in values.items()]).to_csv(
        roar_dir / "road_scores.csv", index=False)


@pytest.fixture
def stage_outputs(pristine_outputs, tmp_path):
    """A private copy of :func:`pristine_outputs` that a test may damage."""
    config = {**pristine_outputs, "results_dir": str(tmp_path / "results")}
    shutil.copytree(pristine_outputs["results_dir"], config["results_dir"])
    return config


def _embedded_images(html: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in re.findall(r"src='data:image/png;base64,([^']+)'", html)]


def test_report_builds_and_every_image_is_png(stage_outputs):
    config = stage_outputs
    assert run_workflow_script("aggregate", ["--config", *_config_files(config)]) == 0
    assert run_workflow_script("report", ["--config", *_config_files(config)]) == 0
    html = paths.report_html(config).read_text()
    images = _embedded_images(html)
    # forest plot, model contrast, agreement, curves x2, featvis grid, saliency grid, roar
    # curve; undesirable figures are absent
    assert len(images) == 8
    assert all(image.startswith(PNG_SIGNATURE) for image in images)
    assert "src='" not in re.sub(r"src='data:image/png;base64,[^']+'", "", html)
    for figure in ("featvis_grid", "saliency_grid", "forest_plot", "model_contrast",
                   "metric_agreement"):
        assert (paths.report_figures_dir(config) / f"{figure}.png").is_file()
    for heading in ("The answer", "Model contrast", "Metric agreement", "Metric validation",
                    "Table I reproduction", "SCG / CCG", "Undesirable pixels (phi)",
                    "ROAR / KAR", "Localisation"):
        assert heading in html
    # the answer comes first, before every table
    assert html.index("The answer") < html.index("Model contrast") < \
        html.index("Metric agreement") < html.index("Run settings</h2>")
    assert "All 7 metric rows order the oracles as expected." in html
    validation = pd.read_csv(paths.report_table(config, "metric_validation"))
    assert validation["ordering_ok"].all() and len(validation) == 7
    assert "Not available: sanity-check tables" in html
    assert "black: MORE object-focused than standard by energy_in_mask (gradient: " in html
    effects = pd.read_csv(paths.report_table(config, "effects"))
    assert list(effects.columns) == EFFECT_COLUMNS
    row = effects.set_index(["metric", "method"]).loc[("energy_in_mask", "gradient")]
    assert row["verdict"] == "more object-focused" and row["ci_low"] > 0
    assert row["n_models"] == REPLICATES and row["n_images"] == IMAGES
    # every number keeps a link to its CSV
    assert "Source: <a href='effects.csv'>effects.csv</a>" in html
    assert "Source: <a href='table1.csv'>table1.csv</a>" in html
    assert f"{VARIANTS[0]}: {METHODS[0]} beats random by 0.100 ± 0.010 over 2 seeds (ROAR)" in html


def _config_files(config) -> list[str]:
    """The stage scripts' ``--config``: config.yaml, the demo overlay and the test's
    overrides (as JSON, which is valid YAML)."""
    overlay = paths.results(config).parent / "test_overlay.yaml"
    overlay.write_text(json.dumps({**OVERRIDES, "results_dir": config["results_dir"]}))
    return [str(REPO / "config.yaml"), str(REPO / "config" / "demo.yaml"), str(overlay)]


def test_table1_has_paper_numbers_and_percent(stage_outputs):
    config = stage_outputs
    write_json(paths.model_metrics(config, "black", replicate=1),
               {**healthy_metrics(1), "train_accuracy": 0.97})
    table = aggregate_tables(config)["table1"].set_index("variant")
    # mean and std over the two replicate models
    assert table.loc["black", "train_acc"] == pytest.approx(96.0)
    assert table.loc["black", "train_acc_std"] == pytest.approx(np.std([95, 97], ddof=1))
    assert table.loc["black", "n_models"] == REPLICATES
    assert table.loc["black", "bg_only_acc"] == pytest.approx(25.0)
    assert table.loc["black", ["paper_train_acc", "paper_val_acc", "paper_loss"]].tolist() == [99.62, 83.55, 0.002]


def test_models_at_the_majority_rate_get_a_warning_no_winners_and_their_baselines(stage_outputs):
    """Every model at the majority-class rate (0.3 of 200 val images: what always answering
    the commonest class scores): the report warns at the top, marks the rows not
    interpretable, names no winner, and shows the baselines beside the accuracies."""
    config = stage_outputs
    for k, variant in enumerate(VARIANTS):
        for replicate in range(REPLICATES):
            write_json(paths.model_metrics(config, variant, replicate=replicate),
                       {**healthy_metrics(k), "val_accuracy": 0.3})
    tables = run_aggregate(config)
    assert not tables["table1"]["interpretable"].any()
    assert not tables["localisation"].query("variant in @VARIANTS")["interpretable"].any()
    assert not tables["roar_scores"]["interpretable"].any()
    # the planted effects are real, but no comparison of failing models gets a direction
    assert len(tables["effects"]) and (tables["effects"]["verdict"] == "inconclusive").all()
    run_report(config)
    html = paths.report_html(config).read_text()
    assert html.index("WARNING: 4 of 4 checks fail") < html.index("Table I reproduction</h2>")
    assert ("NOT interpretable: standard replicate 0, standard replicate 1, black replicate 0, "
            "black replicate 1 (trained model).") in html
    assert "val accuracy 30.0 % on 200 images is not clearly above the majority-class rate 30.0 %" in html
    assert "MORE object-focused" not in html and "LESS object-focused" not in html
    table1 = pd.read_csv(paths.report_table(config, "table1"))
    assert (table1["majority_acc"] == 30.0).all() and (table1["chance_acc"] == 25.0).all()
    assert "majority_acc" in html and "chance_acc" in html


def test_run_settings_head_the_report_and_sources(stage_outputs):
    config = stage_outputs
    files = _config_files(config)
    assert run_workflow_script("aggregate", ["--config", *files]) == 0
    run_report(config)
    sources = pd.read_csv(paths.report_table(config, "sources"))
    setting = dict(sources.query("table == 'run_settings'")[["path", "status"]].to_numpy())
    assert setting["config files merged"] == " + ".join(files)
    assert setting["dataset"] == "synthetic" and setting["resolution"] == f"{config['resolution']} px (squash)"
    assert setting["architecture"].startswith("ResNet18")
    assert setting["pretrained start"] == "none" and setting["master seed"] == "0"
    assert re.fullmatch(r"[0-9a-f]{40}( \+ uncommitted changes)?", setting["git commit"])
    html = paths.report_html(config).read_text()
    assert html.index("Run settings</h2>") < html.index("Model quality</h2>") < \
        html.index("Metric validation</h2>") < html.index("Table I reproduction</h2>")
    assert setting["replicates per variant"] == str(REPLICATES)


def test_metric_validation_warns_when_a_metric_fails_the_ordering(stage_outputs):
    config = stage_outputs
    write_validation_outputs(config, {"oracle_object": 0.5, "random": 0.9, "oracle_background": 0.1})
    tables = run_aggregate(config)
    assert not tables["metric_validation"]["ordering_ok"].any()
    run_report(config)
    html = paths.report_html(config).read_text()
    assert "WARNING: 7 of 7 metric rows fail the ordering: ROAR (black)" in html


def test_phi_paper_row_only_when_our_definition_matches(stage_outputs):
    config = stage_outputs
    phi = aggregate_tables(config)["phi"].set_index("variant")
    # the demo config: phi of h (predicted) but R_M divided by the mask size
    assert np.isnan(phi.loc[PAPER_ROW, "phi_ftc"])
    assert phi.loc[PAPER_ROW, "note"] == ("not comparable: ours uses reg_reduction mean "
                                          "(Eq. 3 sums R_M over the mask)")
    for variant in VARIANTS:
        for replicate in range(REPLICATES):
            path = paths.undesirable_dir(config, variant, replicate=replicate) / "results.json"
            results = json.loads(path.read_text())
            results["settings"].update(target_class="label", reg_reduction="sum")
            path.write_text(json.dumps(results))
    phi = aggregate_tables(config)["phi"].set_index("variant")
    assert "target_class label (Eq. 8 uses h, the top predicted class)" in phi.loc[PAPER_ROW, "note"]
    for variant in VARIANTS:
        for replicate in range(REPLICATES):
            path = paths.undesirable_dir(config, variant, replicate=replicate) / "results.json"
            results = json.loads(path.read_text())
            results["settings"].update(target_class="predicted")
            path.write_text(json.dumps(results))
    phi = aggregate_tables(config)["phi"].set_index("variant")
    assert phi.loc[PAPER_ROW, "phi_ftc"] == pytest.approx(44.898)
    assert phi.loc[PAPER_ROW, "note"].startswith("same definition")


def test_confidence_gain_layout_hand_computed():
    long = pd.DataFrame([{"variant": "v", "replicate": 0, "mask": "g", "dilation": "0",
                          "kind": "single",
                          "rho": rho, "kernel": kernel, "scg_mean": scg, "ccg_mean": scg / 2,
                          "scg_std": 0.01, "ccg_std": 0.02, "n_scg": 7, "n_ccg": 6,
                          "n_images": 9}
                         for (kernel, rho, scg) in (("zero", 0.05, 0.4), ("gaussian", 0.05, 0.2),
                                                    ("gaussian", 0.25, 0.1), ("zero", 0.25, 0.3))])
    wide = confidence_gain_wide(long)
    cells = ["G_k rho=25% CCG", "G_k rho=25% SCG", "G_k rho=5% CCG", "G_k rho=5% SCG",
             "Z_k rho=25% CCG", "Z_k rho=25% SCG", "Z_k rho=5% CCG", "Z_k rho=5% SCG"]
    # every cell: the mean, then its spread, images kept and images excluded
    assert list(wide.columns[5:]) == [f"{c}{d}" for c in cells
                                      for d in ("", " std", " n", " excluded")]
    assert wide.loc[0, "Z_k rho=5% SCG"] == pytest.approx(40.0)
    assert wide.loc[0, "G_k rho=25% CCG"] == pytest.approx(5.0)
    assert wide.loc[0, "G_k rho=25% CCG std"] == pytest.approx(2.0)
    assert wide.loc[0, "G_k rho=25% CCG n"] == 6 and wide.loc[0, "G_k rho=25% CCG excluded"] == 3
    shown = gain_display(wide)
    assert shown.loc[0, "Z_k rho=5% SCG"] == "40.0 ± 1.0 (n 7, excl. 2)"
    assert not any(c.endswith((" std", " n", " excluded")) for c in shown.columns)
    # a pair and a dilated single: exactly the mask sets that exist, no invented combinations
    more = pd.concat([long, long.assign(mask="g+h", dilation="5+0", kind="agreement"),
                      long.assign(dilation="2", ccg_mean=np.nan)])
    rows = confidence_gain_wide(more)[["mask", "dilation", "kind"]].to_numpy().tolist()
    assert rows == [["g", "0", "single"], ["g", "2", "single"], ["g+h", "5+0", "agreement"]]
    # an all-excluded cell (NaN) keeps its row and shows as a dash
    wide = confidence_gain_wide(pd.concat([long, long.assign(variant="w", scg_mean=np.where(
        long["rho"] == 0.05, np.nan, long["scg_mean"]))]))
    assert list(wide["variant"]) == ["v", "w"]
    assert gain_display(wide).set_index("variant").loc["w", "Z_k rho=5% SCG"] == "–"
    # one row per replicate model
    two = confidence_gain_wide(pd.concat([long, long.assign(replicate=1)]))
    assert list(two["replicate"]) == [0, 1]


def test_missing_optional_input_is_not_available(stage_outputs):
    config = stage_outputs
    for replicate in range(REPLICATES):
        shutil.rmtree(paths.undesirable_dir(config, "black", replicate=replicate))
    shutil.rmtree(paths.roar_summary_dir(config))
    tables = run_aggregate(config)
    sources = tables["sources"].set_index("path")["status"]
    missing = paths.undesirable_dir(config, "black", replicate=0) / "results.json"
    assert sources[str(missing)] == NOT_AVAILABLE
    assert tables["roar_scores"].empty
    assert list(tables["phi"]["variant"]) == ["standard", "standard", PAPER_ROW]
    run_report(config)
    html = paths.report_html(config).read_text()
    assert "Not available: ROAR/KAR scores" in html


@pytest.mark.parametrize("stage", ["aggregate", "report"])
def test_malformed_file_is_a_clear_error_and_leaves_no_output(stage_outputs, capsys, stage):
    config = stage_outputs
    if stage == "aggregate":
        bad = paths.model_metrics(config, "black", replicate=1)
        bad.write_text("{not json")
        outputs = [paths.report_table(config, "table1"), paths.report_html(config)]
    else:
        run_aggregate(config)
        bad = paths.model_curve(config, "black", replicate=0)
        bad.write_bytes(b"not a png")
        outputs = [paths.report_html(config)]
    assert run_workflow_script(stage, ["--config", *_config_files(config)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "rerun" in err
    assert not any(p.exists() for p in outputs)
    assert not list(paths.report_dir(config).glob(".*.tmp"))


CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(
  e.message || ('resource ' + (e.target && e.target.src || '').slice(0, 40))), true);
const origError = console.error;
console.error = (...a) => { window.__errors.push('console: ' + a.join(' ')); origError(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'xaipipe-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def test_report_renders_in_headless_chromium(stage_outputs, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium) -- browser check skipped")
    config = stage_outputs
    run_aggregate(config)
    run_report(config)
    page = paths.report_html(config).read_text().replace("<head>", "<head>" + CHECK_SCRIPT, 1)
    checked = tmp_path / "checked.html"
    checked.write_text(page)
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=60)
    match = re.search(r'<pre id="xaipipe-check">(.*?)</pre>', result.stdout)
    assert match, f"check element missing; chromium stderr: {result.stderr[-2000:]}"
    check = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check == {"images": 8, "broken": [], "errors": []}  # as in the first test
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
