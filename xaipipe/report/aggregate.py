"""The ``aggregate`` stage: every upstream stage's JSON/CSV joined into tidy report tables.

Each table is one pandas frame written atomically to ``paths.report_table(config, name)``
(``results/report/<name>.csv``). A source that is absent (a stage switched off in the config,
or not run yet) is *not available*: its table is written with its columns and no rows, and
``sources.csv`` records the status of every file read. A source that is present but cannot be
parsed is a :class:`DataError` naming the file, and nothing is written.

Tables (names are :data:`TABLES`):

- ``table1``: Nielsen et al. Table I (train accuracy %, val accuracy % on unmodified val,
  loss) with the paper's numbers beside ours, plus val_matched, foreground-only,
  background-only and chance accuracy (%).
- ``confidence_gain``: SCG/CCG in the layout of the confidence-gain paper's Table 1: one row
  per (variant, mask set, heat-map dilation), columns kernel (G_k, Z_k) x rho (25 %, 5 %) x
  (SCG, CCG), x 100.
- ``phi``: Kang et al. Table 1/2 layout: phi (Eq. 8) of F-TC and F-NTC, undesirable-pixel
  ratio and background share per variant, with the paper's ResNet-18 row when our definition
  matches theirs (:func:`phi_comparability`), otherwise that row says why it is not comparable.
- ``metric_validation``: every metric on the oracle maps and random
  (:mod:`xaipipe.report.validation`).
- ``localisation``, ``sanity``, ``roar_scores``, ``road_scores``, ``featvis_metrics``: the
  upstream tidy tables concatenated over variants (and replicates: a ``replicate`` column).
- ``effects``, ``intervals``, ``model_contrast``, ``model_contrast_points``,
  ``metric_agreement``: the variant comparisons with uncertainty (:mod:`xaipipe.report.effects`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xaipipe import paths
from xaipipe.config import validation_variants
from xaipipe.errors import DataError
from xaipipe.io import atomic_path
from xaipipe.report import effects, quality, settings, validation
from xaipipe.report.tables import TABLES

log = logging.getLogger(__name__)

NOT_AVAILABLE = "not available"

PAPER_TABLE1 = {  # Nielsen et al., Table I: train accuracy %, val accuracy %, loss.
    "standard": (99.49, 94.81, 0.022),
    "black": (99.62, 83.55, 0.002),
    "noise": (99.69, 78.95, 0.008),
    "mixed": (99.95, 88.84, 0.003),
}
PAPER_PHI = {  # Kang et al., ResNet-18 row of Table 1 (phi) and Table 2 (ratio).
    "phi_ftc": 44.898, "phi_fntc": 44.688, "ratio_ftc": 0.0360, "ratio_fntc": 0.0398,
}
PAPER_ROW = "ResNet-18 (Kang et al., paper)"

SPREAD_COLUMNS = ["train_acc", "val_acc", "loss", "val_matched_acc", "fg_only_acc", "bg_only_acc"]
"""Table I columns given as the mean and ``<column>_std`` over a variant's replicate models."""
TABLE1_COLUMNS = ["variant", "train_acc", "val_acc", "loss", "paper_train_acc", "paper_val_acc",
                  "paper_loss", "val_matched_acc", "fg_only_acc", "bg_only_acc", "bg_only_fill",
                  "chance_acc", "majority_acc", "n_val", "epochs", "n_models", "seed",
                  *(f"{c}_std" for c in SPREAD_COLUMNS), "interpretable", "quality_note"]
METRIC_KEYS = {  # metrics.json key -> table1 column (accuracies converted to %)
    "train_accuracy": "train_acc", "val_accuracy": "val_acc", "loss": "loss",
    "val_matched_accuracy": "val_matched_acc", "fg_only_val_accuracy": "fg_only_acc",
    "bg_only_val_accuracy": "bg_only_acc", "bg_only_fill": "bg_only_fill",
    "chance_accuracy": "chance_acc", "majority_accuracy": "majority_acc",
    "num_val_images": "n_val", "epochs": "epochs", "seed": "seed",
}
PHI_METHODS = {"ftc": "ftc", "fntc": "fntc"}
PHI_COLUMNS = ["variant", "replicate", "phi_ftc", "phi_fntc", "ratio_ftc", "ratio_fntc",
               "background_share_ftc", "background_share_fntc", "background_share_se",
               "images_with_undesirable", "background_fraction", "num_images", "note"]
PAPER_PHI_DEFINITION = {"target_class": "predicted", "reg_reduction": "sum"}
"""Kang et al.'s definition: phi of h, the top predicted class (Eq. 8), with R_M summed over
the mask as Eq. 3 writes it."""
KERNEL_LABELS = {"gaussian": "G_k", "zero": "Z_k"}


def gain_setting(kernel: str, rho: float) -> str:
    """``G_k rho=25%``: how the SCG/CCG tables name a (base kernel, rho) setting."""
    return f"{KERNEL_LABELS.get(kernel, kernel)} rho={100 * rho:g}%"


CG_REQUIRED = ["variant", "replicate", "mask", "dilation", "kind", "rho", "kernel", "scg_mean",
               "ccg_mean"]
LOCALISATION_COLUMNS = ["variant", "replicate", "subject", "metric", "mean", "std", "n",
                        "excluded"]
ROAR_SCORE_COLUMNS = ["kind", "variant", "method", "mean", "std", "n"]
ROAD_SCORE_COLUMNS = ["variant", "method", "score"]
FEATVIS_COLUMNS = ["variant", "replicate", "judge", "metric", "mean", "std", "n"]
SANITY_COLUMNS = ["variant", "replicate", "file"]
SOURCE_COLUMNS = ["table", "path", "status"]



@dataclass
class Sources:
    """Which input files were read (``ok``) and which were absent (``not available``)."""

    rows: list[dict] = field(default_factory=list)

    def note(self, table: str, path: Path, available: bool) -> None:
        self.rows.append({"table": table, "path": str(path),
                          "status": "ok" if available else NOT_AVAILABLE})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=SOURCE_COLUMNS)


def read_json_if_present(path: Path, required: list[str]) -> dict | None:
    """The JSON object at ``path``, ``None`` if absent; a DataError if unreadable or if a
    ``required`` key is missing."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun the stage that writes it") from exc
    missing = [k for k in required if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"{path} lacks key(s) {missing}; rerun the stage that writes it")
    return data


def read_csv_if_present(path: Path, required: list[str]) -> pd.DataFrame | None:
    """The CSV at ``path``, ``None`` if absent; a DataError if unparsable or missing a column."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}); rerun the stage that writes it") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; rerun the stage that writes it")
    return frame


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def models_of(config: Mapping) -> list[tuple[str, int]]:
    """(variant, replicate) of every trained model of the variants, in config order."""
    return [(v, r) for v in config["variants"] for r in range(config["replicates"])]


def model_rows(config: Mapping, sources: Sources) -> pd.DataFrame:
    """One row per trained model, Table I's numbers (accuracies in %): every replicate of
    every variant, then the featvis metrics' reference model; chance and the val split's
    majority-class rate beside every accuracy."""
    rows = []
    for variant, replicate in [*models_of(config), (paths.REFERENCE_MODEL, 0)]:
        path = paths.model_metrics(config, variant, replicate=replicate)
        metrics = read_json_if_present(path, ["train_accuracy", "val_accuracy"])
        sources.note("table1", path, metrics is not None)
        if metrics is None:
            continue
        row = {"variant": variant, "replicate": replicate}
        for key, column in METRIC_KEYS.items():
            value = metrics.get(key)
            row[column] = (100.0 * value if value is not None and column.endswith("_acc")
                           else value)
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", "replicate", *METRIC_KEYS.values()])


def table1(models: pd.DataFrame, quality_rows: pd.DataFrame) -> pd.DataFrame:
    """Nielsen et al. Table I with the paper's numbers beside ours, one row per variant (and
    the reference model): the mean over its replicate models, ``<column>_std`` over them
    (:data:`SPREAD_COLUMNS`), ``n_models``, their seeds; ``interpretable`` when every replicate
    passes the model-quality gate, ``quality_note`` the failing ones' reasons."""
    rows = []
    judged = models.assign(interpretable=quality_rows["interpretable"].to_numpy(dtype=bool),
                           reason=quality_rows["reason"].to_numpy())
    for variant, group in judged.groupby("variant", sort=False):
        row = {"variant": variant, "n_models": len(group),
               "seed": "/".join(str(s) for s in group["seed"]),
               "bg_only_fill": group["bg_only_fill"].iloc[0],
               "interpretable": bool(group["interpretable"].all()),
               "quality_note": "; ".join(f"replicate {r}: {why}" for r, why in
                                         zip(group["replicate"], group["reason"]) if why)}
        for column in METRIC_KEYS.values():
            if column not in row:
                row[column] = pd.to_numeric(group[column], errors="coerce").mean()
        for column in SPREAD_COLUMNS:
            row[f"{column}_std"] = (pd.to_numeric(group[column], errors="coerce").std()
                                    if len(group) > 1 else np.nan)
        paper = PAPER_TABLE1.get(variant, (np.nan,) * 3)
        row.update(paper_train_acc=paper[0], paper_val_acc=paper[1], paper_loss=paper[2])
        rows.append(row)
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


CELL_DETAILS = ("std", "n", "excluded")
"""Per SCG/CCG cell beside the mean: ``<cell> std`` (x 100), ``<cell> n`` (images kept) and
``<cell> excluded`` (images excluded by the paper's rules)."""


def confidence_gain_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The confidence-gain paper's Table 1 layout from the stage's tidy table: one row per
    (variant, replicate, mask set, heat-map dilation); per cell ``<kernel> rho=<p>% <SCG|CCG>`` (the
    mean x 100, ordered G_k, Z_k, then rho descending: 25 % before 5 %) followed by its
    :data:`CELL_DETAILS`."""
    index = ["variant", "replicate", "mask", "dilation", "kind"]
    if long.empty:
        return pd.DataFrame(columns=index)
    long = long.assign(dilation=long["dilation"].astype(str))
    parts = []
    for metric in ("scg", "ccg"):
        n = long[f"n_{metric}"] if f"n_{metric}" in long else pd.Series(np.nan, index=long.index)
        total = long["n_images"] if "n_images" in long else pd.Series(np.nan, index=long.index)
        std = long[f"{metric}_std"] if f"{metric}_std" in long else pd.Series(np.nan, index=long.index)
        parts.append(long[[*index, "kernel", "rho"]].assign(
            metric=metric.upper(), value=100.0 * long[f"{metric}_mean"], std=100.0 * std, n=n,
            excluded=total - n))
    stacked = pd.concat(parts, ignore_index=True)
    fields = ("value", *CELL_DETAILS)
    wide = stacked.pivot_table(index=index, columns=["kernel", "rho", "metric"],
                               values=list(fields), aggfunc="first", sort=False, dropna=False)
    # dropna=False keeps all-NaN cells (every image excluded) but also invents rows for every
    # combination of the index levels: keep the mask sets that exist
    wide = wide.loc[pd.MultiIndex.from_frame(long[index].drop_duplicates())]
    cells = sorted({c[1:] for c in wide.columns},
                   key=lambda c: (list(KERNEL_LABELS).index(c[0]) if c[0] in KERNEL_LABELS
                                  else 99, -c[1], c[2]))
    ordered = [(field, *cell) for cell in cells for field in fields]
    wide = wide[ordered]
    wide.columns = [f"{gain_setting(k, r)} {m}" + ("" if field == "value" else f" {field}")
                    for field, k, r, m in ordered]
    wide = wide.reset_index()
    variant_order = {v: i for i, v in enumerate(dict.fromkeys(long["variant"]))}
    mask_order = {m: i for i, m in enumerate(dict.fromkeys(long["mask"]))}
    orders = {"variant": variant_order, "mask": mask_order}
    return (wide.sort_values(by=["variant", "replicate", "mask"],
                             key=lambda s: s.map(orders[s.name]) if s.name in orders else s)
            .reset_index(drop=True))


def confidence_gain(config: Mapping, sources: Sources) -> pd.DataFrame:
    return confidence_gain_wide(per_model_csv(config, sources, "confidence_gain",
                                              paths.confidence_gain_table, CG_REQUIRED))


def phi_comparability(settings: Mapping) -> str:
    """Why our phi cannot sit beside Kang et al.'s ResNet-18 row ('' when it can): the
    definition must match (:data:`PAPER_PHI_DEFINITION`: the target class of Eq. 8 and the
    scale of R_M). Dataset and model still differ (ImageNet-trained ResNet-18 there), which
    the report says beside the row."""
    reasons = []
    if settings.get("target_class") != PAPER_PHI_DEFINITION["target_class"]:
        reasons.append(f"target_class {settings.get('target_class')} (Eq. 8 uses h, the top "
                       "predicted class)")
    if settings.get("reg_reduction") != PAPER_PHI_DEFINITION["reg_reduction"]:
        reasons.append(f"reg_reduction {settings.get('reg_reduction')} (Eq. 3 sums R_M over "
                       "the mask)")
    return "; ".join(reasons)


def background_share_spread(per_image: Path) -> dict:
    """``background_share_se``: the standard error over images of the per-image background
    share of undesirable pixels (F-TC and F-NTC rows together), and
    ``images_with_undesirable``: how many (method, image) rows have any undesirable pixel.
    Images are the unit, not pixels (the pixels of one image are not independent); with
    fewer than two such rows the spread is infinite: nothing can be told apart."""
    frame = read_csv_if_present(per_image, ["undesirable_pixels", "undesirable_on_background"])
    if frame is None:
        return {}
    has = frame[frame["undesirable_pixels"] > 0]
    shares = has["undesirable_on_background"] / has["undesirable_pixels"]
    se = float(shares.std(ddof=1) / np.sqrt(len(shares))) if len(shares) > 1 else np.inf
    return {"background_share_se": se, "images_with_undesirable": len(shares)}


def phi_table(config: Mapping, sources: Sources) -> pd.DataFrame:
    """Kang et al. Table 1 (phi) / Table 2 (undesirable ratio) per variant, plus background
    share, and the paper's ResNet-18 row last: with its numbers when every variant's phi
    follows the paper's definition, otherwise as "not comparable" with the reason in
    ``note``."""
    rows, reasons = [], set()
    for variant, replicate in models_of(config):
        directory = paths.undesirable_dir(config, variant, replicate=replicate)
        path = directory / "results.json"
        results = read_json_if_present(path, ["methods"])
        sources.note("phi", path, results is not None)
        if results is None:
            continue
        reasons.add(phi_comparability(results.get("settings", {})))
        row = {"variant": variant, "replicate": replicate, "num_images": results.get("num_images")}
        for method in PHI_METHODS:
            numbers = results["methods"].get(method)
            if numbers is None:
                continue
            if not isinstance(numbers, dict) or "phi" not in numbers:
                raise DataError(f"{path}: methods.{method} lacks 'phi'; rerun the undesirable stage")
            row[f"phi_{method}"] = numbers["phi"]
            row[f"ratio_{method}"] = numbers.get("undesirable_ratio")
            row[f"background_share_{method}"] = numbers.get("background_share")
            # the share uniformly spread undesirable pixels would have (same images per method)
            row["background_fraction"] = numbers.get("background_fraction")
        row.update(background_share_spread(directory / "per_image.csv"))
        rows.append(row)
    reasons.discard("")
    if reasons:
        rows.append({"variant": PAPER_ROW, "note": "not comparable: ours uses "
                     + "; ".join(sorted(reasons))})
    else:
        rows.append({"variant": PAPER_ROW, **PAPER_PHI,
                     "note": "same definition; ImageNet and an ImageNet-trained ResNet-18 there"})
    return pd.DataFrame(rows, columns=PHI_COLUMNS)


def per_model_csv(config: Mapping, sources: Sources, name: str, path_of, required: list[str],
                  variants: Sequence[str] | None = None) -> pd.DataFrame:
    """Concatenate one CSV per model (``path_of(config, variant, replicate=r)``) of
    ``variants`` (default: the configured ones), setting ``variant`` and ``replicate`` (placed
    first)."""
    frames = []
    for variant in config["variants"] if variants is None else variants:
        for replicate in range(config["replicates"]):
            path = path_of(config, variant, replicate=replicate)
            frame = read_csv_if_present(path, [c for c in required
                                               if c not in ("variant", "replicate")])
            sources.note(name, path, frame is not None)
            if frame is not None:
                frame = frame.drop(columns=["variant", "replicate"], errors="ignore")
                frame.insert(0, "replicate", replicate)
                frame.insert(0, "variant", variant)
                frames.append(frame)
    return _concat(frames, required)


def sanity_table(config: Mapping, sources: Sources) -> pd.DataFrame:
    """Every CSV of every model's sanity directory, with ``variant``, ``replicate`` and
    ``file`` columns (the sanity stage's own columns are kept as they are)."""
    frames = []
    for variant, replicate in models_of(config):
        directory = paths.sanity_dir(config, variant, replicate=replicate)
        files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
        sources.note("sanity", directory, bool(files))
        for path in files:
            frame = read_csv_if_present(path, [])
            frames.append(frame.assign(variant=variant, replicate=replicate, file=path.name))
    return _concat(frames, SANITY_COLUMNS)


def single_csv(sources: Sources, name: str, path: Path, required: list[str]) -> pd.DataFrame:
    frame = read_csv_if_present(path, required)
    sources.note(name, path, frame is not None)
    return frame if frame is not None else pd.DataFrame(columns=required)


def metric_validation(config: Mapping, sources: Sources, runs: pd.DataFrame,
                      road: pd.DataFrame) -> pd.DataFrame:
    """:func:`xaipipe.report.validation.validation_table` of the oracle runs in
    ``roar_summary`` (``runs``, ``road``) and the ``metric_validation`` stage tables, each
    value the mean over the variant's replicate models (spread: over replicates when there
    are several)."""
    variants = validation_variants(config)
    stage = per_model_csv(config, sources, "metric_validation", paths.metric_validation_table,
                          ["replicate", *validation.STAGE_COLUMNS], variants=variants)
    return validation.validation_table(
        roar_runs=runs, road_scores=road, stage_tables=validation.over_replicates(stage),
        variants=variants)


def localisation(config: Mapping, sources: Sources) -> pd.DataFrame:
    """Every variant's localisation table, then the untrained model's rows
    (``variant = untrained``), the baseline the trained models are read against."""
    frames = [per_model_csv(config, sources, "localisation", paths.localisation_table,
                            LOCALISATION_COLUMNS),
              # one untrained model: replicate 0
              single_csv(sources, "localisation", paths.untrained_localisation_table(config),
                         [c for c in LOCALISATION_COLUMNS if c != "replicate"]).assign(replicate=0)]
    return _concat(frames, LOCALISATION_COLUMNS)


QUALITY_COLUMNS = ["model", "check", "interpretable", "reason"]


def quality_table(models: pd.DataFrame, retrains: pd.DataFrame) -> pd.DataFrame:
    """The model-quality gate (:mod:`xaipipe.report.quality`) as one table: a row per
    trained model and per (kind, variant) retraining."""
    rows = [{"model": f"{r.variant} replicate {r.replicate}", "check": "trained model",
             "interpretable": r.interpretable, "reason": r.reason} for r in models.itertuples()]
    rows += [{"model": r.variant, "check": f"{r.kind.upper()} retraining",
              "interpretable": r.interpretable, "reason": r.reason} for r in retrains.itertuples()]
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def aggregate_tables(config: Mapping, config_files: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """Read every upstream output and return the report tables (:data:`TABLES`) in memory,
    each per-variant table flagged ``interpretable`` by the model-quality gate."""
    sources = Sources()
    roar_dir = paths.roar_summary_dir(config)
    alpha = config["report"]["quality_alpha"]
    models = model_rows(config, sources)
    judged = quality.model_quality(models, alpha)
    first = table1(models, judged)
    trained_ok = quality.variant_quality(judged)
    runs = single_csv(sources, "roar_runs", roar_dir / "roar_runs.csv", validation.ROAR_RUN_COLUMNS)
    road = (single_csv(sources, "road_scores", roar_dir / "road_scores.csv", ROAD_SCORE_COLUMNS)
            if config["roar"]["road"] else pd.DataFrame(columns=ROAD_SCORE_COLUMNS))
    retrains = quality.retrain_quality(runs, alpha, config["roar"]["kar_fraction"])
    retrain_ok = {(r.kind, r.variant): r.interpretable for r in retrains.itertuples()}
    roar_scores = single_csv(sources, "roar_scores", roar_dir / "roar_scores.csv",
                             ROAR_SCORE_COLUMNS)
    roar_scores = roar_scores.assign(interpretable=[
        bool(trained_ok.get(v, True) and retrain_ok.get((k, v), True))
        for k, v in zip(roar_scores["kind"], roar_scores["variant"])]).astype(
        {"interpretable": bool})
    flag = lambda frame: quality.flag_variants(frame, trained_ok)  # noqa: E731
    tables = {
        **effects.effect_tables(config, trained_ok, retrain_ok),
        "table1": first,
        "quality": quality_table(judged, retrains),
        "confidence_gain": flag(confidence_gain(config, sources)),
        "phi": flag(phi_table(config, sources)),
        "metric_validation": flag(metric_validation(config, sources, runs, road)),
        "localisation": flag(localisation(config, sources)),
        "sanity": flag(sanity_table(config, sources)),
        "roar_scores": roar_scores,
        "road_scores": flag(road),
        "featvis_metrics": flag(single_csv(sources, "featvis_metrics",
                                           paths.featvis_metrics_table(config), FEATVIS_COLUMNS)),
    }
    sources.rows += [{"table": settings.TABLE, "path": key, "status": value}
                     for key, value in settings.run_settings(config, config_files, first)]
    tables["sources"] = sources.frame()
    return tables


def write_tables(config: Mapping, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    written = []
    for name, frame in tables.items():
        path = paths.report_table(config, name)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        written.append(path)
    return written


def run_aggregate(config: Mapping, config_files: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """The ``aggregate`` stage: read everything first (so a malformed file leaves no
    output), then write every table; ``config_files`` (the merged ``--config`` files) go into
    the run settings."""
    tables = aggregate_tables(config, config_files)
    write_tables(config, tables)
    files = tables["sources"][tables["sources"]["table"] != settings.TABLE]
    log.info("aggregate: %d tables -> %s (%d of %d sources not available)", len(tables),
             paths.report_dir(config), int((files["status"] == NOT_AVAILABLE).sum()), len(files))
    return tables


def read_tables(config: Mapping) -> dict[str, pd.DataFrame]:
    """The aggregate stage's tables, for the report stage; a missing one is a DataError."""
    tables = {}
    for name in TABLES:
        path = paths.report_table(config, name)
        if not path.is_file():
            raise DataError(f"{path} does not exist; run the aggregate stage first")
        try:
            tables[name] = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not a readable CSV ({exc}); rerun the aggregate stage") from exc
    if "variant" not in tables["table1"].columns:
        raise DataError(f"{paths.report_table(config, 'table1')} lacks column 'variant'; "
                        "rerun the aggregate stage")
    return tables
