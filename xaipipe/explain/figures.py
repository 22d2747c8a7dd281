"""Figures of the explanation stages (matplotlib, Agg backend): the saliency grid (val images x
methods, maps overlaid) and the sanity-check cascade plot (Adebayo et al. 2018, Fig. 2/4:
rank correlation with the trained model's maps as layers are re-initialised from the top)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xaipipe.io import atomic_path  # noqa: E402


def normalise_map(heat: np.ndarray) -> np.ndarray:
    """|map| scaled to [0, 1] by its 99th percentile (Smilkov et al.'s visualisation clip)."""
    heat = np.abs(np.asarray(heat, dtype=np.float32))
    top = float(np.percentile(heat, 99))
    return np.clip(heat / top, 0, 1) if top > 0 else np.zeros_like(heat)


def saliency_grid(images: np.ndarray, maps_by_method: Mapping[str, np.ndarray], path: str | Path,
                  row_titles: Sequence[str] | None = None,
                  masks: np.ndarray | None = None) -> None:
    """One row per image (uint8 N x 3 x H x W), the image then one column per method with its
    |map| (N x H x W, :func:`normalise_map`) as a jet heat map over the grey image; with
    ``masks`` (N x H x W, 1 = object) the object's outline is drawn on every panel. Written
    atomically as PNG to ``path``."""
    n = len(images)
    columns = ["image", *maps_by_method]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.8 * len(columns), 1.8 * n), squeeze=False)
    for row in range(n):
        rgb = np.transpose(np.asarray(images[row]), (1, 2, 0))
        for col, name in enumerate(columns):
            ax = axes[row, col]
            if name == "image":
                ax.imshow(rgb)
            else:
                ax.imshow(rgb.mean(axis=2), cmap="gray")
                ax.imshow(normalise_map(maps_by_method[name][row]), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if masks is not None and np.asarray(masks[row]).any():
                ax.contour(np.asarray(masks[row]) > 0, levels=[0.5], colors="white",
                           linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=8)
        if row_titles is not None:
            axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def cascade_plot(table: pd.DataFrame, method: str, path: str | Path) -> None:
    """Mean (+/- std) Spearman rank correlation vs the cumulatively re-initialised block for
    one method, absolute and signed maps; the random-label model as dotted lines."""
    rows = table[(table["method"] == method) & (table["test"] == "cascading")]
    data = table[(table["method"] == method) & (table["test"] == "data")]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(len(rows))
    for kind, colour in (("abs", "tab:blue"), ("signed", "tab:orange")):
        ax.errorbar(x, rows[f"spearman_{kind}_mean"], yerr=rows[f"spearman_{kind}_std"],
                    marker="o", capsize=3, color=colour, label="|map|" if kind == "abs" else "signed map")
        if len(data):
            ax.axhline(float(data[f"spearman_{kind}_mean"].iloc[0]), ls=":", color=colour,
                       label=f"random labels ({kind})")
    ax.set_xticks(x, rows["layer"], rotation=30)
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("Spearman rank correlation")
    ax.set_title(f"{method}: cascading randomisation (top -> bottom)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
