"""Attribution maps: each method's contract, agreement with direct autograd, IG completeness,
Guided Backprop under in-place ReLU, seeded determinism, and the attribute stage."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import GuidedReLU, run_workflow_script
from xaipipe import paths
from xaipipe.config import validate_config
from xaipipe.explain.attribution import attribute, attribute_split, hookable_copy, occlusion_window
from xaipipe.explain.oracle import ORACLE_METHODS, TIE_NOISE
from xaipipe.models import build_model, save_model
from xaipipe.registry import BUILTIN_METHODS

MODEL_METHODS = [m for m in BUILTIN_METHODS if m not in ORACLE_METHODS]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def settings():
    config = validate_config({"explain": {"ig_steps": 8, "noise_tunnel_samples": 3}}, source="test")
    return config["explain"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return hookable_copy(build_model(4))


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


TARGETS = torch.tensor([1, 3])


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_every_method_gives_finite_float32_maps(model, images, settings, method):
    maps = attribute(model, images, TARGETS, method, settings, seed=0)
    assert maps.shape == (2, 32, 32) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.abs().amax() > 0


def test_gradient_is_abs_input_gradient_summed_over_channels(model, images, settings):
    x = images.clone().requires_grad_(True)
    model(x)[torch.arange(2), TARGETS].sum().backward()
    expected = x.grad.abs().sum(dim=1)
    torch.testing.assert_close(attribute(model, images, TARGETS, "gradient", settings), expected)
    torch.testing.assert_close(attribute(model, images, TARGETS, "gradient", {**settings, "channel_reduce": "abs_max"}),
                               x.grad.abs().amax(dim=1))


def test_integrated_gradients_completeness(model, images, settings):
    """Sundararajan et al. Axiom of completeness: sum IG = f(x) - f(black baseline)."""
    signed = {**settings, "channel_reduce": "sum", "ig_steps": 64}
    total = attribute(model, images, TARGETS, "integrated_gradients", signed).sum(dim=(1, 2))
    with torch.no_grad():
        delta = (model(images) - model(torch.zeros_like(images)))[torch.arange(2), TARGETS]
    torch.testing.assert_close(total, delta, rtol=0.05, atol=0.02 * float(delta.abs().max()))


class _TinyNet(nn.Module):
    """conv-relu-conv-relu-linear where one in-place ReLU module is used twice (as torchvision's
    BasicBlock does); ``guided=True`` swaps in the manual guided ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.guided = False

    def forward(self, x):
        act = GuidedReLU.apply if self.guided else self.relu
        return self.fc(act(self.conv2(act(self.conv1(x)))).flatten(1))


def test_guided_backprop_unaffected_by_inplace_reused_relu(settings):
    torch.manual_seed(1)
    net = _TinyNet().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 2])
    signed = {**settings, "channel_reduce": "sum"}
    got = attribute(net, x, targets, "guided_backprop", signed)
    plain = attribute(net, x, targets, "gradient", signed)
    assert not torch.allclose(got, plain), "guided backprop must differ from the plain gradient"
    net.guided = True
    xg = x.clone().requires_grad_(True)
    net(xg)[torch.arange(2), targets].sum().backward()
    torch.testing.assert_close(got, xg.grad.sum(dim=1))
    assert net.relu.inplace, "the caller's model must not be modified"


def test_random_maps_depend_only_on_seed_and_row(model, images, settings):
    four = torch.cat([images, images])
    whole = attribute(model, four, torch.zeros(4, dtype=torch.long), "random", settings, seed=5)
    tail = attribute(model, four[2:], torch.zeros(2, dtype=torch.long), "random", settings,
                     seed=5, first_index=2)
    torch.testing.assert_close(whole[2:], tail)
    assert not torch.equal(whole[0], whole[2])
    other = attribute(model, four, torch.zeros(4, dtype=torch.long), "random", settings, seed=6)
    assert not torch.equal(whole, other)


def test_noise_tunnel_is_deterministic_by_seed(model, images, settings):
    a = attribute(model, images, TARGETS, "smoothgrad", settings, seed=1)
    b = attribute(model, images, TARGETS, "smoothgrad", settings, seed=1)
    c = attribute(model, images, TARGETS, "smoothgrad", settings, seed=2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_occlusion_window_scales_with_resolution():
    assert occlusion_window(224, 50) == (50, 25)
    assert occlusion_window(64, 50) == (14, 7)
    assert occlusion_window(16, 10) == (1, 1)


def test_oracle_maps_rank_every_object_pixel_first_without_ties(settings):
    from conftest import fake_split
    split = fake_split(n=4, size=16)
    obj = attribute_split(None, split, "oracle_object", settings, device="cpu", seed=3)
    bg = attribute_split(None, split, "oracle_background", settings, device="cpu", seed=3)
    for maps, on in ((obj, split.masks > 0), (bg, split.masks == 0)):
        assert maps.dtype == np.float32 and maps.shape == (4, 16, 16)
        for image, inside in zip(maps, on):
            assert image[inside].min() > image[~inside].max()  # target region first
            assert len(np.unique(image)) > 0.95 * image.size  # seeded tie noise: few ties
        assert maps.max() <= 1 + TIE_NOISE and maps.min() >= 0
    again = attribute_split(None, split, "oracle_object", settings, device="cpu", seed=3)
    assert np.array_equal(obj, again)
    # through attribute() too, batch by batch: the same maps
    batched = torch.cat([attribute(None, torch.zeros(2, 3, 16, 16), TARGETS[:2] * 0, "oracle_object",
                                   settings, seed=3, masks=torch.from_numpy(split.masks[i:i + 2]),
                                   ids=split.ids[i:i + 2]) for i in (0, 2)])
    assert np.array_equal(batched.numpy(), obj)


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_stored_maps_rank_pixels_exactly_as_float32(make_config, fake_variant_store, method):
    """The attribute stage stores float32, so every method's stored ranking is the ranking of
    the float32 maps it computed. (float16 storage pushed SmoothGrad² and VarGrad into
    subnormals and merged distinct values, changing their rankings.)"""
    config = make_config({"explain": {"splits": ["val"], "batch_size": 4, "ig_steps": 4,
                                      "noise_tunnel_samples": 3}})
    val = fake_variant_store(config, "black", {"val": 3})["val"]
    torch.manual_seed(0)
    net = build_model(4)
    save_model(paths.model_weights(config, "black", replicate=0), net, {"num_classes": 4})
    argv = ["--config", *_config_files(config), "--variant", "black", "--method", method,
            "--replicate", "0"]
    assert run_workflow_script("attribute", argv) == 0
    stored = np.load(paths.attribution_map(config, "black", method, "val", replicate=0))
    from xaipipe.seeds import named_seed
    direct = attribute_split(net.eval(), val, method, config["explain"], device="cpu",
                             seed=named_seed(config, f"attribute/black/rep0/{method}"))
    assert stored.dtype == np.float32
    for s, d in zip(stored.reshape(3, -1), direct.reshape(3, -1)):
        assert np.array_equal(np.argsort(-s, kind="stable"), np.argsort(-d, kind="stable"))
    if method in ("smoothgrad_sq", "vargrad"):  # what float16 did to them
        half = direct.astype(np.float16)
        assert any(len(np.unique(h)) < len(np.unique(d)) for h, d in zip(half, direct))


def test_attribute_split_float32_batched_and_targets(model, settings):
    from conftest import fake_split
    split = fake_split(n=3, size=32, num_classes=4)
    batched = attribute_split(model, split, "gradient", {**settings, "batch_size": 2},
                              device=torch.device("cpu"), seed=0)
    assert batched.shape == (3, 32, 32) and batched.dtype == np.float32
    images = torch.from_numpy(split.images).float() / 255
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    expected = attribute(model, images, predicted, "gradient", settings).numpy()
    got = attribute_split(model, split, "gradient", {**settings, "batch_size": 4, "target": "predicted"},
                          device=torch.device("cpu"), seed=0)
    np.testing.assert_allclose(got.astype(np.float32), expected, rtol=2e-3, atol=1e-6)
    if not torch.equal(predicted, torch.from_numpy(split.labels)):
        assert not np.allclose(got, batched[:3])


def test_attribute_stage_writes_maps(make_config, fake_variant_store):
    config = make_config({"explain": {"splits": ["val"], "batch_size": 4}})
    fake_variant_store(config, "black", {"train": 2, "val": 6})
    torch.manual_seed(0)
    save_model(paths.model_weights(config, "black", replicate=0), build_model(4), {"num_classes": 4})
    argv = ["--config", *_config_files(config), "--variant", "black", "--method", "gradcam",
            "--replicate", "0"]
    assert run_workflow_script("attribute", argv) == 0
    maps = np.load(paths.attribution_map(config, "black", "gradcam", "val", replicate=0))
    assert maps.shape == (6, 32, 32) and maps.dtype == np.float32
    assert not paths.attribution_map(config, "black", "gradcam", "train", replicate=0).exists()


def test_attribute_stage_missing_model_is_a_clear_error(make_config, fake_variant_store, capsys):
    config = make_config()
    fake_variant_store(config, "noise", {"train": 2, "val": 2})
    argv = ["--config", *_config_files(config), "--variant", "noise", "--method", "gradient",
            "--replicate", "0"]
    assert run_workflow_script("attribute", argv) == 1
    err = capsys.readouterr().err
    assert "model.pt" in err and "train stage" in err
    assert not (paths.results(config) / "explain").exists()


def _config_files(config):
    """The test config as one YAML file (the stage reads files, like Snakemake passes them)."""
    import yaml
    path = paths.results(config).parent / "test_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return [str(path)]
