"""c-MWP / excitation backprop (Zhang et al. 2016) on a hand-computed network and on ResNet18
(the other architectures' blocks: tests/test_models.py)."""

import pytest
import torch
import torch.nn.functional as F

from xaipipe.errors import ConfigError
from xaipipe.explain.cmwp import backbone_mwp, classifier_mwp, cmwp_maps, excite
from xaipipe.models import build_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# Hand-checkable net: x -> h = relu(W1 x + b1) -> logits = W2 h.
X = torch.tensor([[1.0, 2.0]])
W1 = torch.tensor([[1.0, 0.5], [-1.0, 2.0], [1.0, 1.0]])
B1 = torch.tensor([0.0, 0.0, 0.0])
W2 = torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 1.0]])


def _two_layer(contrastive: bool):
    h = F.relu(F.linear(X, W1, B1))                        # = [2, 3, 3]
    p_h = classifier_mwp(h, W2, torch.tensor([0]), contrastive=contrastive)
    (p_x,) = excite([X], lambda a: F.linear(a, W1.clamp(min=0)), p_h)
    return p_h, p_x


def test_mwp_matches_hand_computation():
    # target row w = [1, 2, -1]: W+ = [1, 2, 0], Z = 2*1 + 3*2 = 8 -> P(h) = [2/8, 6/8, 0].
    # W1+ = [[1, .5], [0, 2], [1, 1]]: Z_j = [2, 4, 3]; P(x1) = .25 * 1/2, P(x2) = .25 * 1/2 + .75 * 4/4.
    p_h, p_x = _two_layer(contrastive=False)
    torch.testing.assert_close(p_h, torch.tensor([[0.25, 0.75, 0.0]]))
    torch.testing.assert_close(p_x, torch.tensor([[0.125, 0.875]]))


def test_contrastive_mwp_matches_hand_computation():
    # dual row -w = [-1, -2, 1]: W+ = [0, 0, 1] -> P_dual(h) = [0, 0, 1] -> P_dual(x) = [1/3, 2/3].
    p_h, p_x = _two_layer(contrastive=True)
    torch.testing.assert_close(p_h, torch.tensor([[0.25, 0.75, -1.0]]))
    torch.testing.assert_close(p_x, torch.tensor([[0.125 - 1 / 3, 0.875 - 2 / 3]]))


def test_max_pool_hands_everything_to_the_winner():
    x = torch.tensor([[[[1.0, 4.0], [2.0, 3.0]]]])
    (p,) = excite([x], lambda a: F.max_pool2d(a, 2), torch.tensor([[[[0.7]]]]))
    torch.testing.assert_close(p, torch.tensor([[[[0.0, 0.7], [0.0, 0.0]]]]))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = build_model(4).eval()
    for module in model.modules():     # non-trivial BN statistics so BN folding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("layer", ["layer2", "layer4"])
def test_resnet_mwp_conserves_probability(resnet, layer):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 3])
    p = backbone_mwp(resnet, images, targets, layer, contrastive=False)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    c = backbone_mwp(resnet, images, targets, layer, contrastive=True)
    torch.testing.assert_close(c.sum(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)
    assert c.abs().amax() > 0   # target and dual differ


def test_cmwp_maps_shape_and_sign(resnet):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    maps = cmwp_maps(resnet, images, torch.tensor([1, 2]), "layer3")
    assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32
    assert (maps >= 0).all() and maps.amax() > 0
    with pytest.raises(ConfigError, match="explain.cmwp_layer: 'layer9'"):
        cmwp_maps(resnet, images, torch.tensor([1, 2]), "layer9")
