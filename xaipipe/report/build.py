"""The ``report`` stage: ``results/report/index.html`` from the aggregate tables and the
upstream figures.

The page is self-contained (:mod:`xaipipe.report.html` embeds every figure as a data URI).
Figures the report draws itself -- the feature-visualisation grid (Nielsen et al. Fig. 4,
via :func:`xaipipe.explain.featvis.featvis_grid`) and a saliency grid (val images x
attribution methods, one block per variant) -- are written as PNGs to
``paths.report_figures_dir``. Anything an upstream stage did not produce is shown as "Not
available"; a present but malformed file stops the stage before ``index.html`` is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xaipipe import paths  # noqa: E402
from xaipipe.data.figures import write_variant_examples  # noqa: E402
from xaipipe.data.store import read_split  # noqa: E402
from xaipipe.evaluate.roar_summary import roar_verdicts  # noqa: E402
from xaipipe.explain.featvis import featvis_grid  # noqa: E402
from xaipipe.explain.figures import saliency_grid  # noqa: E402
from xaipipe.io import write_text  # noqa: E402
from xaipipe.report import settings  # noqa: E402
from xaipipe.report.aggregate import CELL_DETAILS, PAPER_ROW, read_tables  # noqa: E402
from xaipipe.report.html import Section, render_page  # noqa: E402
from xaipipe.report.synthesis import agreement_section, answer_section, contrast_section  # noqa: E402

log = logging.getLogger(__name__)

FEATVIS_GRID = "featvis_grid.png"
SALIENCY_GRID = "saliency_grid.png"
SHOWN = {"replicate": 0}
"""Figures show each variant's first replicate model (the tables hold every replicate)."""


def _class_names(config: Mapping, variant: str) -> list[str] | None:
    meta = paths.variant_split_dir(config, variant, "val") / "meta.json"
    return read_split(meta.parent).class_names if meta.is_file() else None


def draw_featvis_grid(config: Mapping) -> Path | None:
    """Rows = variants with a featvis directory, columns = classes (at most
    ``report.featvis_classes``); ``None`` when no variant has one."""
    dirs = {v: paths.featvis_dir(config, v, **SHOWN) for v in config["variants"]
            if (paths.featvis_dir(config, v, **SHOWN) / "featvis.npy").is_file()}
    if not dirs:
        return None
    class_names = _class_names(config, next(iter(dirs)))
    if class_names is None:
        return None
    out = paths.report_figures_dir(config) / FEATVIS_GRID
    classes = range(min(len(class_names), config["report"]["featvis_classes"]))
    featvis_grid(dirs, class_names, out, classes=list(classes))
    return out


def draw_saliency_grid(config: Mapping) -> Path | None:
    """The first ``report.saliency_images`` val images of each variant with the val maps
    of every ``explain.methods`` entry all those variants have, drawn by
    :func:`xaipipe.explain.figures.saliency_grid`: each row titled with the variant, the
    label and the model's prediction (``paths.model_predictions``), the object mask outlined.
    ``None`` when there is nothing to draw."""
    n_images = config["report"]["saliency_images"]
    blocks = []
    for variant in config["variants"]:
        store = paths.variant_split_dir(config, variant, "val")
        maps = {m: paths.attribution_map(config, variant, m, "val", **SHOWN)
                for m in config["explain"]["methods"]}
        maps = {m: p for m, p in maps.items() if p.is_file()}
        if maps and (store / "meta.json").is_file():
            blocks.append((variant, read_split(store), maps))
    methods = [m for m in config["explain"]["methods"] if blocks and all(m in b[2] for b in blocks)]
    if not methods:
        return None
    images, masks, maps_by_method, titles = [], [], {m: [] for m in methods}, []
    for variant, split, maps in blocks:
        count = min(n_images, len(split))
        images.append(np.asarray(split.images[:count]))
        masks.append(np.asarray(split.masks[:count]))
        predictions = paths.model_predictions(config, variant, **SHOWN)
        predicted = np.load(predictions)[:count] if predictions.is_file() else None
        names = split.class_names
        for i in range(count):
            label = names[int(split.labels[i])] if names else str(int(split.labels[i]))
            if predicted is None:
                guess = "?"
            else:
                guess = names[int(predicted[i])] if names else str(int(predicted[i]))
                guess += "" if int(predicted[i]) == int(split.labels[i]) else " (wrong)"
            titles.append(f"{variant} #{i}\nlabel {label}\npred {guess}")
        for m in methods:
            maps_by_method[m].append(np.load(maps[m], mmap_mode="r")[:count].astype(np.float32))
    out = paths.report_figures_dir(config) / SALIENCY_GRID
    saliency_grid(np.concatenate(images), {m: np.concatenate(v) for m, v in maps_by_method.items()},
                  out, row_titles=titles, masks=np.concatenate(masks))
    return out


def _table_or_missing(section: Section, frame: pd.DataFrame, what: str, caption: str = "",
                      source: str = "") -> None:
    if frame.empty:
        section.missing(what)
    else:
        section.table(frame, caption, source=source)


def _figures(section: Section, figures: list[tuple[Path, str]], what: str) -> None:
    present = [(p, c) for p, c in figures if p.is_file()]
    for path, caption in present:
        section.figure(path, caption)
    if not present:
        section.missing(what)


def settings_section(tables: Mapping[str, pd.DataFrame]) -> Section:
    """The header block: what this run is (``sources.csv``'s run-settings rows)."""
    section = Section("Run settings", "What this report was computed from (also in sources.csv).")
    sources = tables["sources"]
    rows = sources[sources["table"] == settings.TABLE]
    if rows.empty:
        section.missing("run settings (aggregate stage)")
    else:
        section.table(rows[["path", "status"]].rename(columns={"path": "setting",
                                                               "status": "value"}),
                      source="sources.csv")
    return section


def quality_section(tables: Mapping[str, pd.DataFrame]) -> Section:
    """The model-quality gate, with a warning naming every model whose numbers are not
    interpretable."""
    section = Section("Model quality", "A model's numbers are interpretable only if it beats "
                      "always answering the majority class of its split (one-sided binomial "
                      "test at report.quality_alpha): trained models on val, ROAR/KAR "
                      "retraining with random maps at the least destructive fraction. Every "
                      "table below flags rows of failing models with interpretable = False, and "
                      "every comparison involving them is inconclusive.")
    frame = tables["quality"]
    if frame.empty:
        section.missing("model metrics (train stage)")
        return section
    failed = frame[~frame["interpretable"].astype(bool)]
    if len(failed):
        by_check = failed.groupby("check", sort=False)["model"].apply(", ".join)
        section.warning(f"WARNING: {len(failed)} of {len(frame)} checks fail, so those numbers are "
                        "NOT interpretable: " + "; ".join(f"{models} ({check})" for check, models
                                                          in by_check.items())
                        + ". The reasons, with the accuracies, are in the table below.")
    else:
        section.text(f"All {len(frame)} checks pass: every model is clearly above its "
                     "majority-class baseline.")
    section.table(frame, source="quality.csv")
    return section


def gain_display(frame: pd.DataFrame) -> pd.DataFrame:
    """The SCG/CCG table as the report shows it: per cell ``mean ± std (n, excl. k)``."""
    cells = [c for c in frame.columns if c.endswith((" SCG", " CCG"))]
    shown = frame[[c for c in frame.columns if c not in cells
                   and not c.endswith(tuple(f" {d}" for d in CELL_DETAILS))]].copy()
    for cell in cells:
        def text(row, cell=cell):
            mean = row[cell]
            if not np.isfinite(mean):
                return "–"
            std, n, excluded = (row.get(f"{cell} {d}", np.nan) for d in CELL_DETAILS)
            spread = f" ± {std:.1f}" if np.isfinite(std) else ""
            counts = (f" (n {int(n)}, excl. {int(excluded)})" if np.isfinite(n)
                      and np.isfinite(excluded) else "")
            return f"{mean:.1f}{spread}{counts}"
        shown[cell] = frame.apply(text, axis=1)
    return shown


def validation_section(tables: Mapping[str, pd.DataFrame]) -> Section:
    """The metric validation, shown before any finding: each metric on the oracle maps."""
    section = Section("Metric validation", "Each metric scored on two oracle maps from the "
                      "segmentation masks -- oracle_object (the object) and oracle_background "
                      "(its complement) -- beside random, on a model for which the object is the "
                      "only cue. A metric is trusted only if it orders them object > random > "
                      "background in its own direction (higher_is_better). ROAR/KAR: retrained "
                      "accuracy, mean over fractions (± std over seeds); ROAD: accuracy, mean "
                      "over fractions; the others: mean over images (± std over images).")
    frame = tables["metric_validation"]
    if frame.empty:
        section.missing("metric validation (metric_validation stage, metric_validation.variants)")
        return section
    failed = frame[~frame["ordering_ok"].astype(bool)]
    if len(failed):
        unfit = ("interpretable" in frame and
                 not frame.loc[failed.index, "interpretable"].astype(bool).any())
        section.warning(f"WARNING: {len(failed)} of {len(frame)} metric rows fail the ordering: "
                        + ", ".join(f"{r.metric} ({r.variant})" for r in failed.itertuples())
                        + (". The validation model is not interpretable (model quality), so "
                           "this says nothing about the metrics: train it until it beats the "
                           "majority class." if unfit else
                           ". Their numbers below do not rank explanations correctly on this run."))
    else:
        section.text(f"All {len(frame)} metric rows order the oracles as expected.")
    section.table(frame, float_format="{:.3f}", source="metric_validation.csv")
    return section


def build_sections(config: Mapping, tables: Mapping[str, pd.DataFrame]) -> list[Section]:
    """Every section of the page, in reading order: the answer to the research question
    (variant comparisons with intervals, model contrast, metric agreement), what the run is,
    whether its models can be read, whether its metrics can be trusted, then the tables."""
    variants = list(config["variants"])
    answer = [answer_section(config, tables), contrast_section(config, tables),
              agreement_section(config, tables)]
    header = [settings_section(tables), quality_section(tables), validation_section(tables)]

    training = Section("Table I reproduction", "Nielsen et al. Table I: our numbers beside the "
                       "paper's (accuracies in %; val = unmodified val images), mean over each "
                       "variant's replicate models with the std over them (*_std, n_models), and "
                       "the featvis metrics' reference model. Beside every accuracy: chance "
                       "(1 / classes) and the val split's majority-class rate. Extra columns: val "
                       "with the variant's own treatment, foreground-only and background-only val.")
    _table_or_missing(training, tables["table1"].drop(columns="quality_note", errors="ignore"),
                      "model metrics (train stage)", source="table1.csv")
    if paths.index_table(config).is_file():
        training.figure(write_variant_examples(config), "Training variants (paper Fig. 3): "
                        "original, foreground mask, black, noise and mixed")
    else:
        training.missing("variant example figure (needs the index stage)")

    curves = Section("Learning curves")
    _figures(curves, [(paths.model_curve(config, v, **SHOWN),
                       f"{v} (replicate 0): loss and accuracy per epoch")
                      for v in variants], "learning curves (train stage)")

    featvis = Section("Feature visualisation", "Rows = variants, columns = classes "
                      "(Nielsen et al. Fig. 4). Metrics: recognisability and high-frequency share.")
    grid = draw_featvis_grid(config)
    if grid is None:
        featvis.missing("feature visualisations (featvis stage)")
    else:
        featvis.figure(grid, "Class visualisations per variant")
    _table_or_missing(featvis, tables["featvis_metrics"], "featvis metrics (featvis_metrics stage)",
                      source="featvis_metrics.csv")

    saliency = Section("Saliency maps", "First validation images per variant with each "
                       "method's attribution (|value|, scaled per map).")
    grid = draw_saliency_grid(config)
    if grid is None:
        saliency.missing("attribution maps (attribute stage)")
    else:
        saliency.figure(grid, "Attribution maps per variant and method")

    roar = Section("ROAR / KAR", "Score = mean accuracy gap to the random baseline over the "
                   "removed fractions (positive = better than random), mean ± std over seeds.")
    _table_or_missing(roar, tables["roar_scores"], "ROAR/KAR scores (roar_summary stage)",
                      source="roar_scores.csv")
    if not tables["roar_scores"].empty:
        roar.bullets(roar_verdicts(tables["roar_scores"]))
    _table_or_missing(roar, tables["road_scores"], "ROAD scores (roar_summary stage, roar.road)",
                      "ROAD (Rong et al. 2022), MoRF score in ROAR's sign convention, mean over "
                      "replicate models (score_std over them)", source="road_scores.csv")
    summary = paths.roar_summary_dir(config)
    _figures(roar, [(summary / f"curves_{kind}_{v}.png", f"{kind.upper()} curves: {v}")
                    for kind in ("roar", "kar") for v in variants], "ROAR/KAR curves")

    gain = Section("SCG / CCG", "Simple (SCG) and concise (CCG) confidence gain in the layout "
                   "of the confidence-gain paper's Table 1: rows = methods at each heat-map "
                   "dilation (dilation = 3x3 grey-value dilations of the map, §5.2) and method "
                   "pairs (agreement masks), columns = kernel (G_k Gaussian blur, Z_k zero) x "
                   "rho x (SCG, CCG), values x 100; one block per variant.")
    frame = tables["confidence_gain"]
    if frame.empty:
        gain.missing("SCG/CCG tables (confidence_gain stage)")
    for variant, block in gain_display(frame).groupby("variant", sort=False):
        gain.table(block.drop(columns="variant"), f"Variant {variant}: mean ± std (n images "
                   "kept, excl. = excluded by the paper's rules and min_denominator), one row "
                   "per replicate model", float_format="{:.2f}", source="confidence_gain.csv")

    phi = Section("Undesirable pixels (phi)", "Kang et al. Table 1 (phi, Eq. 8) and Table 2 "
                  "(undesirable-pixel ratio) for F-TC and F-NTC, plus the share of undesirable "
                  f"pixels on the background; the last row is the paper's ({PAPER_ROW}), with "
                  "its numbers only when our definition matches theirs (note).")
    if (tables["phi"]["variant"] != PAPER_ROW).any():
        phi.table(tables["phi"], float_format="{:.4g}", source="phi.csv")
    else:
        phi.missing("undesirable-pixel results (undesirable stage)")
    _figures(phi, [(paths.undesirable_dir(config, v, **SHOWN) / "examples.png",
                    f"{v} (replicate 0): undesirable pixels") for v in variants],
             "undesirable-pixel figures")

    sanity = Section("Sanity checks", "Adebayo et al.: similarity of explanations under "
                     "model-parameter and data randomisation. The data-randomisation rows are "
                     "meaningful only if the shuffled-label model fits its labels "
                     "(shuffled_train_accuracy >= sanity.min_fit_accuracy).")
    frame = tables["sanity"]
    if "meaningful" in frame and (~frame["meaningful"].astype(bool)).any():
        unfit = frame[~frame["meaningful"].astype(bool)]
        sanity.text("Data randomisation is NOT meaningful for "
                    + ", ".join(f"{v} (shuffled-label train accuracy "
                                f"{g['shuffled_train_accuracy'].iloc[0]:.2f})"
                                for v, g in unfit.groupby("variant", sort=False))
                    + ": the random-label model did not fit its labels; raise "
                    "sanity.data_randomisation_epochs.")
    _table_or_missing(sanity, frame, "sanity-check tables (sanity stage)", source="sanity.csv")
    _figures(sanity, [(p, f"{v} (replicate 0): {p.stem}") for v in variants
                      for p in sorted(paths.sanity_dir(config, v, **SHOWN).glob("*.png"))],
             "sanity-check figures (sanity stage)")

    local = Section("Localisation", "Energy in mask and pointing game per method, read against "
                    "two baselines: chance (subject chance = the mean foreground share) and an "
                    "untrained model's maps of the same methods (variant untrained). Accuracy "
                    "on full / fg-only / bg-only val images beside chance (1 / classes) and the "
                    "majority-class rate (subject majority).")
    _table_or_missing(local, tables["localisation"], "localisation tables (localisation stage)",
                      source="localisation.csv")

    sources = Section("Inputs", "Every file the aggregate stage looked for.")
    files = tables["sources"]
    _table_or_missing(sources, files[files["table"] != settings.TABLE], "input list",
                      source="sources.csv")
    return [*answer, *header, training, curves, featvis, saliency, roar, gain, phi, sanity, local,
            sources]


def run_report(config: Mapping) -> Path:
    """The ``report`` stage: build every section in memory, then write ``index.html``."""
    tables = read_tables(config)
    sections = build_sections(config, tables)
    out = paths.report_html(config)
    write_text(out, render_page(config["report"]["title"], sections,
                                footer=f"results_dir {config['results_dir']}, seed {config['seed']}"))
    log.info("report -> %s", out)
    return out
