"""Index -> variants on the 59 real PASCAL VOC 2012 files (``voc_sample_stores`` fixture):
labels, void borders, black pixels, alignment across image sizes, the class histogram."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaipipe import paths
from xaipipe.data import voc
from xaipipe.data.figures import write_variant_examples
from xaipipe.data.index import read_index
from xaipipe.data.store import read_split
from xaipipe.io import read_json


@pytest.fixture(scope="module")
def sample(voc_sample_stores):
    """(config, index table, index log, {(variant, split): Split}) of the sample."""
    config = voc_sample_stores
    table, index_log = read_index(config)
    stores = {(v, s): read_split(paths.variant_split_dir(config, v, s))
              for v in config["variants"] for s in paths.SPLITS}
    return config, table, index_log, stores


def png(config, image_id):
    return np.array(Image.open(voc.mask_path(paths.dataset_root(config), image_id)))


def resized_segmentation(config, image_id):
    """The class-index PNG resized by Pillow's nearest neighbour: an independent check of
    the stored masks (which are resized with torchvision's NEAREST_EXACT)."""
    size = config["resolution"]
    return np.array(Image.open(voc.mask_path(paths.dataset_root(config), image_id))
                    .resize((size, size), Image.Resampling.NEAREST))


def test_every_label_is_the_largest_foreground_class_of_its_png(sample):
    config, table, _, _ = sample
    assert len(table) == 59 and table["split"].value_counts().to_dict() == {"train": 40, "val": 19}
    for row in table.itertuples():
        counts = dict(enumerate(np.bincount(png(config, row.image_id).ravel(), minlength=256)))
        counts = {c: int(counts[c]) for c in range(1, 21)}
        assert row.label + 1 == max(counts, key=lambda c: (counts[c], -c)), row.image_id
        assert row.label_name == voc.CLASS_NAMES[row.label]
        assert sorted(c - 1 for c, n in counts.items() if n) == list(row.classes_present)


def test_index_histogram_matches_the_pngs(sample):
    config, table, index_log, _ = sample
    for split in ("train", "val"):
        labels = [int(np.argmax(np.bincount(png(config, i).ravel(), minlength=256)[1:21]))
                  for i in table[table["split"] == split]["image_id"]]
        expected = {name: labels.count(k) for k, name in enumerate(voc.CLASS_NAMES)}
        assert index_log["class_histogram"][split] == expected
    assert index_log["class_histogram"]["val"]["pottedplant"] == 0  # as the sample README says


def test_masks_are_aligned_across_sizes_and_void_counts_as_foreground(sample):
    config, table, _, stores = sample
    assert table[["height", "width"]].drop_duplicates().shape[0] > 5  # many different sizes
    void_seen = 0
    for split in ("train", "val"):
        store = stores[("standard", split)]
        for row, image_id in enumerate(store.ids):
            seg = resized_segmentation(config, image_id)
            assert (store.masks[row] == (seg != 0)).all(), image_id
            void_seen += int((store.masks[row][seg == 255] == 1).sum())
    assert void_seen > 100


def test_black_variant_zeroes_background_and_keeps_resized_original(sample):
    _, _, _, stores = sample
    for split in ("train", "val_matched"):
        black, original = stores[("black", split)], stores[("standard", "val" if split != "train" else "train")]
        fg = np.broadcast_to(black.masks[:, None] == 1, black.images.shape)
        assert (black.images[~fg] == 0).all()
        assert (black.images[fg] == original.images[fg]).all()
        assert black.ids == original.ids and (black.labels == original.labels).all()


def test_noise_and_mixed_on_real_files(sample):
    config, _, _, stores = sample
    standard, noise, mixed = (stores[(v, "train")] for v in ("standard", "noise", "mixed"))
    fg = np.broadcast_to(standard.masks[:, None] == 1, standard.images.shape)
    assert (noise.images[fg] == standard.images[fg]).all()
    assert (noise.images[~fg] != standard.images[~fg]).mean() > 0.9
    replaced = np.array(mixed.meta["background_replaced"])
    assert replaced.sum() == 20  # exactly half of the 40 training images
    assert (mixed.images[~replaced] == standard.images[~replaced]).all()
    assert (mixed.images[replaced] == stores[("black", "train")].images[replaced]).all()
    summary = read_json(paths.variant_summary(config, "mixed"))
    assert summary["complete"] and summary["splits"]["train"]["background_replaced"] == 20


def test_variant_example_figure(sample, tmp_path):
    config = sample[0]
    out = write_variant_examples(config, tmp_path / "results" / "examples.png", n_images=4)
    with Image.open(out) as figure:
        width, height = figure.size
    assert width > 600 and height > 600


def test_one_epoch_training_and_an_attribution_on_real_files(voc_sample_stores):
    """train (1 epoch, black) -> attribute (gradient) on the real sample: the stages run on
    real VOC stores and write well-formed outputs (no accuracy claim: 40 images)."""
    from xaipipe.explain.attribution import run_attribute_stage
    from xaipipe.train_stage import run_train_stage

    config = voc_sample_stores
    metrics = run_train_stage(config, "black", 0)
    assert metrics["epochs"] == 1 and metrics["num_classes"] == 20
    for key in ("train_accuracy", "val_accuracy", "fg_only_val_accuracy", "bg_only_val_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    run_attribute_stage(config, "black", "gradient", replicate=0)
    for split in config["explain"]["splits"]:
        maps = np.load(paths.attribution_map(config, "black", "gradient", split, replicate=0))
        store = read_split(paths.variant_split_dir(config, "black", split))
        assert maps.dtype == np.float32 and maps.shape == store.masks.shape
        assert np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
