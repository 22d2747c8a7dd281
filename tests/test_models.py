"""Model architectures (``model.arch``): the registry and the schema agree, every built-in's
description names the right modules (Grad-CAM's last conv layer, c-MWP's strides, a
top-down sanity cascade covering every parameter, the head, torchvision's ImageNet file),
model files record and check their architecture, and Grad-CAM, c-MWP (Bottleneck and VGG
layers), Guided Backprop and the cascade work on each. Tiny inputs (32-64 px), one thread;
the VGGs' 100 M-parameter classifier makes each VGG build take seconds, so the heavier
checks run on one model per block type (BasicBlock: tests/test_cmwp.py, Bottleneck:
resnet50, VGG: vgg16_bn) and vgg19_bn (same code as vgg16_bn) gets the structural ones."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from conftest import REPO, GuidedReLU
from xaipipe import registry
from xaipipe.architectures import CMWP_LAYERS, IMAGENET_WEIGHTS, Architecture, architecture
from xaipipe.config import validate_config
from xaipipe.errors import ConfigError, DataError
from xaipipe.explain.attribution import attribute, hookable_copy
from xaipipe.explain.cmwp import backbone_mwp
from xaipipe.explain.sanity import cascading_models
from xaipipe.models import DEFAULT_ARCH, build_model, load_model, save_model
from xaipipe.report.settings import run_settings
from xaipipe.train import initial_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ARCHS = list(registry.BUILTIN_MODELS)
HEAVY = ["resnet50", "vgg16_bn"]
"""One architecture per block type c-MWP and the ReLU handling must cover (besides resnet18)."""
TARGETS = torch.tensor([0, 2])


@pytest.fixture(scope="module")
def models():
    """One seeded 3-class model per built-in, built once, with non-trivial BatchNorm
    statistics (so BN folding and the cascade's BN reset show)."""
    built = {}
    for name in ARCHS:
        torch.manual_seed(0)
        model = build_model(3, name).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 2.0)
                    module.weight.uniform_(0.5, 1.5)
        built[name] = model
    return built


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def settings():
    return validate_config({}, source="test")["explain"]


# --- registry, schema, config ---------------------------------------------------------------

def test_schema_names_exactly_the_builtin_models_and_cmwp_layers():
    schema = yaml.safe_load((REPO / "xaipipe" / "schema" / "config.schema.yaml").read_text())
    arch = schema["properties"]["model"]["properties"]["arch"]
    assert "enum" not in arch and arch["default"] == DEFAULT_ARCH
    listed = arch["description"].split(": ", 1)[1].split(", or ")[0].split(", ")
    assert listed == ARCHS
    layer = schema["properties"]["explain"]["properties"]["cmwp_layer"]
    assert tuple(layer["enum"]) == CMWP_LAYERS


@pytest.mark.parametrize("name", ARCHS)
def test_every_builtin_describes_itself(name):
    arch = architecture(name)
    assert isinstance(arch, Architecture) and arch.name == name
    assert tuple(arch.cmwp_layers) == CMWP_LAYERS


@pytest.mark.parametrize("name", ARCHS)
def test_the_reports_run_settings_name_the_architecture(name):
    config = validate_config({"model": {"arch": name}}, source="test")
    setting = dict(run_settings(config, [], pd.DataFrame(columns=["variant", "seed"])))
    arch = architecture(name)
    assert setting["architecture"].startswith(f"{arch.title} ({arch.origin}")
    assert setting["architecture"].endswith(f"model.arch {name})")


def test_unknown_arch_is_rejected_with_key_path_and_fix():
    with pytest.raises(ConfigError) as info:
        validate_config({"model": {"arch": "resnet34"}}, source="test")
    message = str(info.value)
    assert "  model.arch: 'resnet34' is not a registered model (resnet18, resnet50" in message
    assert "plugins.models" in message


def test_a_plugin_architecture_is_config_only(tmp_path):
    (tmp_path / "mynets.py").write_text(
        "import dataclasses\nfrom xaipipe.architectures import resnet18\n"
        "def narrow():\n    return dataclasses.replace(resnet18(), name='narrow', title='Narrow')\n"
        "def misnamed():\n    return resnet18()\n")
    plugins = {"path": [str(tmp_path)], "models": {"narrow": "mynets:narrow", "bad": "mynets:misnamed"}}
    config = validate_config({"model": {"arch": "narrow"}, "plugins": plugins}, source="test")
    assert build_model(3, architecture("narrow", config)).arch.title == "Narrow"
    with pytest.raises(ConfigError, match=r"plugins.models.bad: .*named 'resnet18'; give it name='bad'"):
        validate_config({"model": {"arch": "bad"}, "plugins": plugins}, source="test")
    with pytest.raises(ConfigError, match=r"plugins.models.vgg16_bn: 'vgg16_bn' is a built-in model"):
        validate_config({"plugins": {"models": {"vgg16_bn": "mynets:narrow"}}}, source="test")


# --- the descriptions name the right modules ------------------------------------------------

def _outputs(model: nn.Module, names, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of the backbone's modules ``names`` for ``images``."""
    seen = {}
    hooks = [model.backbone.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: seen.__setitem__(n, out)) for n in names]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("name", ARCHS)
def test_module_paths_strides_and_head(models, name):
    model, arch = models[name], models[name].arch
    head = model.backbone.get_submodule(arch.head)
    assert isinstance(head, nn.Linear) and head.out_features == 3
    x = torch.rand(1, 3, 64, 64)
    out = _outputs(model, arch.cmwp_layers.values(), x)
    for k, layer in enumerate(CMWP_LAYERS):        # stride 4, 8, 16, 32
        assert out[arch.cmwp_layers[layer]].shape[-1] == 64 // 2 ** (k + 2), layer


@pytest.mark.parametrize("name", ARCHS)
def test_gradcam_takes_the_last_convolutional_layers_output(models, name):
    """Selvaraju et al.: the last convolutional layer; for VGG its rectified output before the
    final max-pool (stride 16), for ResNet ``layer4`` (stride 32)."""
    model, arch = models[name], models[name].arch
    convs = [n for n, m in model.backbone.named_modules() if isinstance(m, nn.Conv2d)]
    x = torch.rand(1, 3, 64, 64)
    out = _outputs(model, [convs[-1], arch.gradcam_layer], x)
    layer = out[arch.gradcam_layer]
    assert layer.shape[1:] == out[convs[-1]].shape[1:] and (layer >= 0).all()
    assert layer.shape[-1] == (4 if name.startswith("vgg") else 2)


@pytest.mark.parametrize("name", ARCHS)
def test_cascade_is_top_down_and_covers_every_parameter_once(models, name):
    backbone, arch = models[name].backbone, models[name].arch
    order = {n: i for i, (n, _) in enumerate(backbone.named_parameters())}
    steps = [[f"{path}.{p}" for path in paths for p, _ in backbone.get_submodule(path).named_parameters()]
             for paths in arch.cascade.values()]
    covered = [p for step in steps for p in step]
    assert sorted(covered) == sorted(order) and len(covered) == len(set(covered))
    for upper, lower in zip(steps, steps[1:]):
        assert min(order[p] for p in upper) > max(order[p] for p in lower)


@pytest.mark.parametrize("name", ARCHS)
def test_imagenet_file_is_torchvisions(name):
    """The hub-cache file ``train.pretrained: imagenet`` looks for is the one torchvision's
    Weights enum would download (nothing is downloaded here)."""
    from torchvision.models import get_model_weights

    url = getattr(get_model_weights(name), IMAGENET_WEIGHTS).url
    assert architecture(name).imagenet_url == url


@pytest.mark.parametrize("name", ["resnet50", "vgg16_bn"])
def test_imagenet_offline_names_the_archs_file(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    file = os.path.basename(architecture(name).imagenet_url)
    with pytest.raises(ConfigError, match=rf"{file}.*never downloads"):
        validate_config({"model": {"arch": name}, "train": {"pretrained": "imagenet"}}, source="t")


def test_pretrained_file_keeps_everything_but_the_vgg_head(tmp_path, monkeypatch):
    """(The file is read by torch.load, stubbed here to skip writing 0.5 GB; test_train reads
    a real ResNet18 file.)"""
    from torchvision.models import resnet18, vgg16_bn

    torch.manual_seed(0)
    source = vgg16_bn(num_classes=5)
    path = tmp_path / "vgg16_bn.pth"
    path.touch()
    monkeypatch.setattr(torch, "load", lambda *_, **__: source.state_dict())
    model = initial_model(3, str(path), seed=0, arch="vgg16_bn")
    assert torch.equal(model.backbone.classifier[3].weight, source.classifier[3].weight)
    assert model.backbone.classifier[6].out_features == 3
    monkeypatch.setattr(torch, "load", lambda *_, **__: resnet18(num_classes=5).state_dict())
    with pytest.raises(ConfigError, match=r"does not match VGG16-BN \(model.arch vgg16_bn"):
        initial_model(3, str(path), seed=0, arch="vgg16_bn")


# --- model files record their architecture -------------------------------------------------

@pytest.mark.parametrize("name", HEAVY)
def test_save_load_round_trip_and_arch_mismatch(models, tmp_path, name):
    path = tmp_path / "model.pt"
    save_model(path, models[name], {"num_classes": 3, "variant": "black"})
    loaded, meta = load_model(path, config=validate_config({"model": {"arch": name}}, source="t"))
    assert meta["arch"] == name and loaded.arch.name == name
    for key, value in models[name].state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(DataError) as info:
        load_model(path, config=validate_config({}, source="t"))
    message = str(info.value)
    assert str(path) in message and f"holds a {name} model" in message
    assert "model.arch is resnet18" in message and "rerun the train stage" in message


def test_model_files_without_arch_are_resnet18(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"state_dict": build_model(3).state_dict(), "meta": {"num_classes": 3}}, path)
    model, meta = load_model(path, config=validate_config({}, source="t"))
    assert meta["arch"] == "resnet18" and model.arch.name == "resnet18"


# --- explanations on every block type ------------------------------------------------------

@pytest.mark.parametrize("name", HEAVY)
@pytest.mark.parametrize("method", ["gradcam", "cmwp"])
def test_gradcam_and_cmwp_maps(models, images, settings, name, method):
    maps = attribute(models[name], images, TARGETS, method, settings)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    assert (maps >= 0).all() and maps.amax() > 0


@pytest.mark.parametrize("name", HEAVY)
@pytest.mark.parametrize("layer", ["layer2", "layer4"])
def test_mwp_conserves_probability_through_every_block_type(models, name, layer):
    """Without the contrast every unit hands on all it receives (Zhang et al. Eq. 5-6), so
    the MWP at any layer is non-negative and sums to 1; the contrastive MWP sums to 0."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    p = backbone_mwp(models[name], images, TARGETS, layer, contrastive=False)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    c = backbone_mwp(models[name], images, TARGETS, layer, contrastive=True)
    torch.testing.assert_close(c.sum(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)
    assert c.abs().amax() > 0


def test_cmwp_rejects_a_backbone_it_has_no_rule_for(models, images):
    model = build_model(3)
    model.backbone.layer1 = nn.Sequential(nn.GELU(), *model.backbone.layer1)
    with pytest.raises(ConfigError, match=r"no excitation rule for layer1.0 \(GELU\)"):
        backbone_mwp(model, images, TARGETS, "layer2", contrastive=True)


@pytest.mark.parametrize("name", HEAVY)
def test_guided_backprop_handles_the_archs_relus(models, images, settings, name):
    """Captum on the hookable copy (Bottleneck: one in-place ReLU module called three times;
    VGG: one in-place module per layer) equals the gradient through hand-written guided ReLUs."""
    signed = {**settings, "channel_reduce": "sum"}
    got = attribute(models[name], images, TARGETS, "guided_backprop", signed)
    manual = hookable_copy(models[name])
    for module in manual.modules():
        if isinstance(module, nn.ReLU):
            module.forward = GuidedReLU.apply
    x = images.clone().requires_grad_(True)
    manual(x)[torch.arange(2), TARGETS].sum().backward()
    torch.testing.assert_close(got, x.grad.sum(dim=1), rtol=1e-4, atol=1e-6)
    assert all(m.inplace for m in models[name].modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("name", HEAVY)
def test_cascade_reinitialises_each_step_of_the_arch(models, name):
    model = models[name]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    names = list(model.arch.cascade)
    done: set[str] = set()
    for step, (block, randomised) in enumerate(cascading_models(model, seed=1)):
        assert block == names[step]
        done |= {f"backbone.{path}." for path in model.arch.cascade[block]}
        for key, value in randomised.state_dict().items():
            if key.endswith(("weight", "running_mean")) and not key.startswith("normalize"):
                reset = any(key.startswith(prefix) for prefix in done)
                assert reset != torch.equal(value, original[key]), (block, key)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
