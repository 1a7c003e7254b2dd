"""Family-specific checks for LeNet, AlexNet, VGG and ResNet (the registry-wide ones live in test_zoo.py)."""
import pytest
import torch
import torch.nn as nn

from trainsdk.models import create_model
from trainsdk.models.alexnet import ReLULRN
from trainsdk.models.resnet import BasicBlock, Bottleneck


def test_lenet_feature_maps_follow_the_paper():
    model = create_model("lenet5").eval()
    shapes = {}
    for name in ("c1", "s2", "c3", "s4", "c5"):
        getattr(model.features, name).register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, o.shape))
    model(model.example_input())
    assert shapes == {"c1": (1, 6, 28, 28), "s2": (1, 6, 14, 14), "c3": (1, 16, 10, 10), "s4": (1, 16, 5, 5),
                      "c5": (1, 120, 1, 1)}
    assert [type(m) for m in model.features if isinstance(m, (nn.Tanh, nn.AvgPool2d))].count(nn.Tanh) == 3
    modern = create_model("lenet5_modern")
    assert any(isinstance(m, nn.MaxPool2d) for m in modern.modules())
    assert sum(p.numel() for p in model.parameters()) == 61706  # C3 fully connected to S2


def test_lenet_accepts_only_32x32():
    from trainsdk.models import InputShapeError

    with pytest.raises(InputShapeError, match=r"only spatial size \(32, 32\)"):
        create_model("lenet5")(torch.zeros(1, 1, 28, 28))


def test_alexnet_lrn_option_keeps_keys():
    plain, lrn = create_model("alexnet"), create_model("alexnet", lrn=True)
    assert list(plain.state_dict()) == list(lrn.state_dict())
    assert isinstance(lrn.features[1], ReLULRN) and isinstance(lrn.features[4], ReLULRN)
    lrn.load_state_dict(plain.state_dict(), strict=True)
    x = plain.example_input()
    assert not torch.allclose(plain.eval()(x), lrn.eval()(x))


def test_alexnet_original_layout():
    model = create_model("alexnet_original")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    lrn = model.features.norm1
    assert isinstance(lrn, nn.LocalResponseNorm) and (lrn.size, lrn.beta, lrn.k) == (5, 0.75, 2.0)
    assert lrn.alpha == pytest.approx(1e-4 * 5)  # paper's alpha, in PyTorch's alpha/size convention
    towers = create_model("alexnet_original", two_tower=True)
    assert [c.groups for c in towers.features if isinstance(c, nn.Conv2d)] == [1, 2, 1, 2, 2]
    full = sum(p.numel() for p in model.parameters())
    grouped = sum(p.numel() for p in towers.parameters())
    # grouping halves the weights of conv2, conv4 and conv5
    assert full - grouped == (96 * 256 * 25 + 384 * 384 * 9 + 384 * 256 * 9) // 2
    with pytest.raises(ValueError, match="two_tower"):
        create_model("alexnet", two_tower=True)


def test_paper_lrn_formula():
    from trainsdk.models.layers import paper_lrn

    x = torch.rand(1, 7, 3, 3)
    out = paper_lrn()(x)
    c = 3  # a channel with a full window of 5
    window = x[:, c - 2:c + 3].pow(2).sum(1)
    torch.testing.assert_close(out[:, c], x[:, c] / (2.0 + 1e-4 * window) ** 0.75)


@pytest.mark.parametrize("name,bn", [("vgg11", False), ("vgg16_bn", True)])
def test_vgg_blocks(name, bn):
    model = create_model(name)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) is bn
    pools = sum(isinstance(m, nn.MaxPool2d) for m in model.features)
    assert pools == 5
    assert model.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_resnet_blocks_and_plain_variant():
    r18, r50, p18 = create_model("resnet18"), create_model("resnet50"), create_model("plain18")
    assert isinstance(r18.layer1[0], BasicBlock) and isinstance(r50.layer1[0], Bottleneck)
    assert r50.layer2[0].conv2.stride == (2, 2)  # stride on the 3x3 (v1.5)
    assert not any("downsample" in k for k in p18.state_dict())
    r18_keys = {k for k in r18.state_dict() if "downsample" not in k}
    assert r18_keys == set(p18.state_dict())  # the same layers, minus the projection shortcuts
    assert [f["num_chs"] for f in r50.feature_info] == [256, 512, 1024, 2048]


def test_resnet_zero_init_residual_makes_blocks_identity():
    model = create_model("resnet18", zero_init_residual=True).eval()
    block = model.layer1[0]
    x = torch.rand(1, 64, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize("kwargs,match", [(dict(layers=(2, 2)), "layers must be 4"), (dict(block="wide"), "block"),
                                          (dict(depth=15), "depth"), (dict(style="fancy"), "style")])
def test_config_errors_name_the_field(kwargs, match):
    name = {"depth": "vgg11", "style": "lenet5"}.get(next(iter(kwargs)), "resnet18")
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)
