from pathlib import Path

import pytest
import yaml

from xaipipe.config import deep_merge, load_config, train_settings, validate_config
from xaipipe.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_paper_config_is_valid_and_faithful():
    config = load_config(REPO / "config.yaml")
    assert config["dataset"]["name"] == "voc2012"
    assert config["resolution"] == 224
    assert config["train"]["epochs"] == 100
    assert config["variants"] == ["standard", "black", "noise", "mixed"]


def test_paper_config_follows_the_evaluation_protocols():
    config = load_config(REPO / "config.yaml")
    # survey §4.4: gradient, IG and guided backprop vs SmoothGrad² and VarGrad, against random
    assert {"gradient", "integrated_gradients", "guided_backprop", "smoothgrad", "smoothgrad_sq",
            "vargrad", "random"} <= set(config["roar"]["methods"])
    assert config["roar"]["eval_split"] == "val_matched"  # §4.4 step 3: same distribution
    assert {"train", "val", "val_matched"} <= set(config["explain"]["splits"])
    assert config["undesirable"]["target_class"] == "predicted"  # Kang Eq. 8: h
    assert config["confidence_gain"]["heatmap_dilations"] == {"gradient": [0, 2, 5]}  # §5.2
    assert config["metric_validation"]["variants"] == ["black"]


def test_demo_overlay_merges_like_snakemake():
    config = load_config([REPO / "config.yaml", REPO / "config" / "demo.yaml"])
    assert config["dataset"]["name"] == "synthetic"
    assert config["train"]["momentum"] == 0.9  # kept from config.yaml
    assert config["undesirable"]["lambda1"] == 1.7  # schema default


@pytest.mark.parametrize(
    "overlay, key_path",
    [
        ({"variants": ["standard", "sepia"]}, "variants.1"),
        ({"roar": {"fractions": [0.3, 1.5]}}, "roar.fractions.1"),
        ({"roar": {"fractions": [0.0]}}, "roar.fractions.0"),
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"dataset": {"name": "imagenet"}}, "dataset.name"),
        ({"train": {"lr_typo": 0.1}}, "train"),
    ],
)
def test_invalid_values_are_rejected_with_key_path(overlay, key_path):
    config = deep_merge(yaml.safe_load((REPO / "config.yaml").read_text()), overlay)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert f"  {key_path}:" in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")


def test_train_overrides_apply_to_one_variant():
    config = load_config(REPO / "config.yaml")
    config["train_overrides"] = {"black": {"lr": 0.5}}
    assert train_settings(config, "black")["lr"] == 0.5
    assert train_settings(config, "standard")["lr"] == 0.01


def test_epochs_override_replaces_only_the_epoch_count():
    """roar.epochs / sanity.data_randomisation_epochs: null keeps train.epochs, a number wins
    over it and over the variant's own override."""
    config = load_config(REPO / "config.yaml")
    config["train_overrides"] = {"black": {"epochs": 7, "lr": 0.5}}
    assert train_settings(config, "black", epochs=None)["epochs"] == 7
    settings = train_settings(config, "black", epochs=2)
    assert settings["epochs"] == 2 and settings["lr"] == 0.5
    assert config["train_overrides"]["black"]["epochs"] == 7


def test_every_schema_key_has_a_description():
    """The README promises every key is documented in the schema."""
    schema = yaml.safe_load((REPO / "xaipipe" / "schema" / "config.schema.yaml").read_text())
    missing = []

    def walk(node, path):
        for key, sub in (node.get("properties") or {}).items():
            where = f"{path}.{key}" if path else key
            if not sub.get("description"):
                missing.append(where)
            walk(sub, where)

    walk(schema, "")
    assert not missing, missing
