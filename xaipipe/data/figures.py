"""Figure of the training variants, like paper §IV Fig. 3: per row one training image as
original, foreground mask, black background, noise background and what the mixed variant
made of it (black or unchanged)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xaipipe import paths  # noqa: E402
from xaipipe.data.index import read_index  # noqa: E402
from xaipipe.data.resize import load_resized  # noqa: E402
from xaipipe.data.variants import apply_variant, mixed_selection  # noqa: E402
from xaipipe.io import atomic_path  # noqa: E402


def example_rows(ids: list[str], selected: np.ndarray, n_images: int) -> list[int]:
    """Row numbers of the first images in index order, alternating mixed-black and
    mixed-unchanged ones so the figure shows both halves of the mixed variant."""
    black = [i for i in range(len(ids)) if selected[i]]
    kept = [i for i in range(len(ids)) if not selected[i]]
    rows = [r for pair in zip(black, kept) for r in pair] + black[len(kept):] + kept[len(black):]
    return rows[:n_images]


def write_variant_examples(config: Mapping, out_path: str | Path | None = None,
                           n_images: int = 4) -> Path:
    """Render the variant figure for the first ``n_images`` training images of the index
    (decoding only those) to ``out_path`` (default ``paths.variant_examples_figure``)."""
    out_path = Path(out_path or paths.variant_examples_figure(config))
    table, _ = read_index(config)
    train = table[table["split"] == "train"].reset_index(drop=True)
    all_ids = list(train["image_id"])
    selected = mixed_selection(all_ids, config["seed"], config["variant"]["mixed_fraction"])
    rows = example_rows(all_ids, selected, n_images)
    ids = [all_ids[r] for r in rows]
    images, masks = load_resized(paths.dataset_root(config), ids, config["resolution"],
                                 config["dataset"]["resize"], desc="figure")
    black = apply_variant("black", images, masks, ids, config)[0]
    columns = [("original", images), ("mask (seg != 0)", masks), ("black", black),
               ("noise", apply_variant("noise", images, masks, ids, config)[0]),
               ("mixed", np.where(selected[rows][:, None, None, None], black, images))]
    fig, axes = plt.subplots(len(ids), len(columns), figsize=(2.2 * len(columns), 2.3 * len(ids)),
                             squeeze=False)
    for r, image_id in enumerate(ids):
        for c, (title, arrays) in enumerate(columns):
            ax = axes[r, c]
            if arrays.ndim == 4:
                ax.imshow(arrays[r].transpose(1, 2, 0))
            else:
                ax.imshow(arrays[r], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{image_id}\n{train['label_name'][rows[r]]}", fontsize=8)
            if c == len(columns) - 1:
                ax.set_xlabel("black bg" if selected[rows[r]] else "unchanged", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_path
