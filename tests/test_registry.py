"""One registry per axis: names derived from it everywhere, plug-ins by import path, and
clear errors (key path and fix) for unknown names and broken plug-ins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, fake_split, run_workflow_script
from xaipipe import paths, registry
from xaipipe.config import deep_merge, load_config, validate_config
from xaipipe.data.variants import apply_variant
from xaipipe.errors import ConfigError
from xaipipe.explain.attribution import attribute

PLUGINS = {"plugins": {"variants": {"blur": "docs.examples.plugins:blur_background"},
                       "methods": {"grad_x_input": "docs.examples.plugins:gradient_times_input"}}}


def test_schema_describes_exactly_the_builtin_registry():
    """The schema lists no names of its own: its descriptions name the registry's built-ins."""
    schema = yaml.safe_load((REPO / "xaipipe" / "schema" / "config.schema.yaml").read_text())
    for key, builtins in (("variant", registry.BUILTIN_VARIANTS), ("method", registry.BUILTIN_METHODS)):
        definition = schema["$defs"][key]
        assert "enum" not in definition
        listed = definition["description"].split(": ", 1)[1].split(", or ")[0].split(", ")
        assert listed == list(builtins), key


def test_every_builtin_resolves_to_a_function():
    for name in registry.BUILTIN_VARIANTS:
        assert callable(registry.variant_function(name))
    for name in registry.BUILTIN_METHODS:
        assert callable(registry.method_function(name))


def test_unknown_names_are_rejected_with_their_key_path():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    with pytest.raises(ConfigError) as info:
        validate_config(deep_merge(base, {"variants": ["standard", "sepia"],
                                          "roar": {"methods": ["gradient", "magic", "random"]}}))
    message = str(info.value)
    assert "  variants.1: 'sepia' is not a registered variant" in message
    assert "  roar.methods.1: 'magic' is not a registered method" in message
    assert "plugins.variants" in message


def test_plugins_register_new_names_and_broken_ones_fail_at_validation(tmp_path):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    config = validate_config(deep_merge(base, {**PLUGINS, "variants": ["standard", "blur"],
                                               "explain": {"methods": ["grad_x_input", "random"]}}))
    assert list(registry.variants(config))[-1] == "blur"
    broken = {"plugins": {"variants": {"blurr": "docs.examples.plugins:no_such_function",
                                       "black": "docs.examples.plugins:blur_background"},
                          "methods": {"x": "no_such_module.sub:fn"}}}
    with pytest.raises(ConfigError) as info:
        validate_config(deep_merge(base, broken))
    message = str(info.value)
    assert "  plugins.variants.blurr: " in message and "has no function 'no_such_function'" in message
    assert "  plugins.variants.black: 'black' is a built-in variant" in message
    assert "  plugins.methods.x: " in message and "cannot import 'no_such_module.sub'" in message


def test_plugin_variant_and_method_run_through_the_library():
    config = load_config([REPO / "config.yaml", REPO / "config" / "ci.yaml"])
    config = validate_config(deep_merge(config, PLUGINS))
    split = fake_split(n=3, size=16)
    out, replaced = apply_variant("blur", split.images, split.masks, split.ids, config)
    assert out.dtype == np.uint8 and replaced.all()
    inside = split.masks[:, None].astype(bool).repeat(3, axis=1)
    assert (out[inside] == split.images[inside]).all() and (out[~inside] != split.images[~inside]).any()
    torch.manual_seed(0)
    from xaipipe.models import build_model

    model = build_model(4).eval()
    images = torch.from_numpy(split.images).float() / 255
    maps = attribute(model, images, torch.tensor([0, 1, 2]), "grad_x_input", config["explain"],
                     config=config)
    assert maps.shape == (3, 16, 16) and (maps >= 0).all() and maps.amax() > 0


def test_a_method_returning_the_wrong_shape_is_named(tmp_path, monkeypatch):
    module = tmp_path / "badplugin.py"
    module.write_text("import torch\ndef explain(model, images, targets, **_):\n"
                      "    return torch.zeros(len(images), 3, 3)\n")
    config = validate_config({"plugins": {"path": [str(tmp_path)], "methods": {"bad": "badplugin:explain"}}})
    with pytest.raises(ConfigError, match=r"'bad' returned maps of shape \(2, 3, 3\).*N x H x W"):
        attribute(None, torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), "bad",
                  config["explain"], config=config)


def test_stage_scripts_reject_unregistered_names_after_loading_the_config(make_config, tmp_path,
                                                                          capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(make_config()))
    argv = ["--config", str(config_file), "--variant", "sepia", "--replicate", "0"]
    assert run_workflow_script("train", argv) == 1
    err = capsys.readouterr().err
    assert "--variant 'sepia' is not registered" in err and "plugins.variants" in err


@pytest.mark.parametrize("replicate", [2, -1])
def test_stage_scripts_reject_a_replicate_outside_the_config(make_config, tmp_path, capsys,
                                                            replicate):
    config = make_config({"replicates": 2})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["--config", str(config_file), "--variant", "black", "--replicate", str(replicate)]
    assert run_workflow_script("train", argv) == 1
    err = capsys.readouterr().err
    assert f"--replicate {replicate} is not one of the configured replicates 0 .. 1" in err
    assert "config key replicates" in err and "Traceback" not in err
    assert not paths.model_dir(config, "black", replicate=replicate).exists()
