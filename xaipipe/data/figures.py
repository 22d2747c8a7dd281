"""Figure of the training variants, like paper §IV Fig. 3: per row one training image as
original, foreground mask, then one column per configured variant (built-in or plug-in,
``standard`` left out: it is the original), each marked "unchanged" where the variant left
that image as it was (the mixed variant's unchanged half, for instance)."""

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
from xaipipe.data.variants import apply_variant  # noqa: E402
from xaipipe.io import atomic_path  # noqa: E402

CANDIDATES = 32
"""Index rows tried when picking the examples (decoded at the training resolution)."""


def example_rows(changed: np.ndarray, n_images: int) -> list[int]:
    """``n_images`` row numbers, alternating rows some variant changed and rows it left
    unchanged (``changed``: rows x partial variants, bool) so the figure shows both halves
    of a variant like ``mixed``; the first rows when every variant changes every row."""
    partial = [c for c in changed.T if c.any() and not c.all()]
    if not partial:
        return list(range(min(n_images, len(changed))))
    first = partial[0]
    on = [i for i in range(len(first)) if first[i]]
    off = [i for i in range(len(first)) if not first[i]]
    rows = [r for pair in zip(on, off) for r in pair] + on[len(off):] + off[len(on):]
    return rows[:n_images]


def write_variant_examples(config: Mapping, out_path: str | Path | None = None,
                           n_images: int = 4) -> Path:
    """Render the variant figure for ``n_images`` of the first training images of the index
    to ``out_path`` (default ``paths.variant_examples_figure``)."""
    out_path = Path(out_path or paths.variant_examples_figure(config))
    table, _ = read_index(config)
    train = table[table["split"] == "train"].reset_index(drop=True).head(CANDIDATES)
    all_ids = list(train["image_id"])
    images, masks = load_resized(paths.dataset_root(config), all_ids, config["resolution"],
                                 config["dataset"]["resize"], desc="figure")
    treated = {v: apply_variant(v, images, masks, all_ids, config)
               for v in config["variants"] if v != "standard"}
    rows = example_rows(np.stack([changed for _, changed in treated.values()], axis=1)
                        if treated else np.zeros((len(all_ids), 0), bool), n_images)
    columns = [("original", images, None), ("mask (seg != 0)", masks, None)]
    columns += [(v, out, changed) for v, (out, changed) in treated.items()]
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(2.2 * len(columns), 2.3 * len(rows)))
    for r, row in enumerate(rows):
        for c, (title, arrays, changed) in enumerate(columns):
            ax = axes[r, c]
            if arrays.ndim == 4:
                ax.imshow(arrays[row].transpose(1, 2, 0))
            else:
                ax.imshow(arrays[row], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{all_ids[row]}\n{train['label_name'][row]}", fontsize=8)
            if changed is not None and not changed[row]:
                ax.set_xlabel("unchanged", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_path
