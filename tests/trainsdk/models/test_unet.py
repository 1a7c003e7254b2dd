"""U-Net: the paper's geometry, the size helpers, options, state_dict keys, and ONNX export."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.export import Dim

from trainsdk.models import InputShapeError, create_model, list_models
from trainsdk.models.unet import UNet, UNetConfig, UNetGeometry, _trace


def tiny(**kw) -> UNet:
    """A narrow U-Net: geometry does not depend on width, and narrow nets keep the tests fast."""
    torch.manual_seed(0)
    return UNet(UNetConfig(**{"base_width": 4, **kw}))


# --- the paper ------------------------------------------------------------------------------------------------------
def test_paper_geometry_572_to_388():
    model = tiny(depth=4, padding="valid").eval()  # paper geometry, 4 channels instead of 64
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert model.output_size(572) == 388
    assert model.output_size((572, 572)) == (388, 388)
    assert model.output_border == 92


def _paper_param_count(in_ch=1, classes=2, base=64, depth=4):
    """Parameters of the network as the paper describes it (3x3 convs, 2x2 up-convs, 1x1 head, all with bias)."""
    conv = lambda cin, cout, k: k * k * cin * cout + cout  # noqa: E731
    widths = [base * 2 ** i for i in range(depth + 1)]
    total, cin = 0, in_ch
    for w in widths:  # contracting path and bottleneck
        total += conv(cin, w, 3) + conv(w, w, 3)
        cin = w
    for w in reversed(widths[:-1]):  # expansive path
        total += conv(2 * w, w, 2) + conv(2 * w, w, 3) + conv(w, w, 3)
    return total + conv(base, classes, 1)


def test_paper_param_count():
    model = create_model("unet_original")
    n = sum(p.numel() for p in model.parameters())
    assert n == _paper_param_count() == 31_030_658


def test_paper_config_via_builder():
    cfg = create_model("unet_original", base_width=4).config
    assert (cfg.padding, cfg.norm, cfg.depth, cfg.in_channels, cfg.num_classes) == ("valid", None, 4, 1, 2)
    assert UNetConfig().padding == "valid" and UNetConfig().base_width == 64  # dataclass defaults = the paper


def test_valid_tiles_are_seamless():
    """Why valid padding: a tile's output is exactly the matching crop of the whole image's output, so tiles of
    the input overlapping by 2 * output_border reassemble the full output (the overlap-tile strategy)."""
    model = tiny(depth=2, padding="valid").eval()
    b = model.output_border
    assert b == 20
    x = torch.randn(1, 1, 60, 64)
    with torch.no_grad():
        full = model(x)  # (1, 2, 20, 24)
        tile = model(x[..., 4:52, 8:60])  # offsets are multiples of 2**depth so pooling grids align
    assert full.shape[-2:] == (60 - 2 * b, 64 - 2 * b)
    assert tile.shape[-2:] == (8, 12)
    torch.testing.assert_close(tile, full[..., 4:12, 8:20], rtol=1e-5, atol=1e-5)


# --- size helpers ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_geometry_matches_layer_by_layer_trace(depth, padding):
    geo = UNetGeometry(depth, padding)
    for n in range(1, 700):
        traced = _trace(n, depth, padding)
        assert geo.is_valid(n) == (traced is not None), n
        if traced is not None:
            assert geo.output_size(n) == traced[1]
    assert geo.min_size == min(n for n in range(1, 700) if _trace(n, depth, padding) is not None)


def test_valid_size_helpers_paper():
    geo = UNetGeometry(4, "valid")
    assert (geo.step, geo.offset, geo.min_size) == (16, -4, 188)
    assert geo.output_size(188) == 4
    assert geo.valid_input_size(570) == 572
    assert geo.valid_input_size(572) == 572
    assert geo.valid_input_size(10) == 188
    assert geo.valid_input_size((570, 600)) == (572, 604)
    assert geo.nearest_valid_sizes(570) == (556, 572)
    assert geo.nearest_valid_sizes(572) == (572, 572)
    assert geo.nearest_valid_sizes(100) == (None, 188)
    assert geo.input_size_for_output(388) == 572
    assert geo.input_size_for_output(389) == 588
    with pytest.raises(InputShapeError, match="556 or 572"):
        geo.output_size(570)


def test_same_size_helpers():
    model = tiny(depth=3, padding="same")
    assert model.output_border == 0
    assert model.input_multiple == 8 and model.min_input_size == 8
    assert model.valid_input_size(100) == 104
    assert model.nearest_valid_sizes(100) == (96, 104)
    assert model.output_size((96, 104)) == (96, 104)
    # instance norm needs more than one voxel per map at the bottleneck
    assert tiny(depth=3, padding="same", norm="instance").min_input_size == 16


def test_invalid_size_raises_with_hint():
    model = tiny(depth=4, padding="valid")
    with pytest.raises(InputShapeError) as err:
        model(torch.randn(1, 1, 570, 572))
    msg = str(err.value)
    assert "570" in msg and "556 or 572" in msg and "16*k-4" in msg and "valid_input_size" in msg
    with pytest.raises(InputShapeError, match="nearest valid: 188"):
        model(torch.randn(1, 1, 100, 188))
    with pytest.raises(InputShapeError, match="96 or 112"):
        tiny(depth=4, padding="same")(torch.randn(1, 1, 100, 64))
    with pytest.raises(InputShapeError, match="in_channels=1"):
        model(torch.randn(1, 3, 572, 572))
    with pytest.raises(InputShapeError, match="5-D"):
        tiny(spatial_dims=3, depth=2, padding="same")(torch.randn(1, 1, 16, 16))


# --- same padding, options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial_dims, shape, kw", [
    (2, (2, 1, 48, 40), dict(depth=3, norm="batch")),
    (3, (1, 1, 16, 12, 20), dict(depth=2, norm="instance")),
])
def test_same_padding_keeps_size(spatial_dims, shape, kw):
    model = tiny(spatial_dims=spatial_dims, padding="same", num_classes=3, **kw).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == (shape[0], 3, *shape[2:])


def test_valid_3d():
    model = tiny(spatial_dims=3, depth=2, padding="valid").eval()
    assert model.min_input_size == 44 and model.output_border == 20
    with torch.no_grad():
        out = model(torch.randn(1, 1, 44, 48, 44))
    assert out.shape == (1, 2, 4, 8, 4)


def test_depth_and_width_shape_the_network():
    model = tiny(depth=3, base_width=8, padding="same")
    assert [n for n, _ in model.named_children() if n.startswith(("down", "up"))] == \
        ["down1", "down2", "down3", "up3", "up2", "up1"]
    assert model.bottleneck.conv2.conv.out_channels == 8 * 2 ** 3
    assert model.up3.upconv.in_channels == 64 and model.up3.upconv.out_channels == 32
    assert model.up1.conv1.conv.in_channels == 16  # skip (8) + up-convolved (8)
    assert model.head.in_channels == 8
    assert [f["num_chs"] for f in model.feature_info] == [8, 16, 32, 64, 32, 16, 8]
    assert model.feature_info[-1]["module"] == "up1"
    deeper = tiny(depth=4, base_width=8, padding="same")
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("norm, cls", [
    (None, nn.Identity), ("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d), ("group", nn.GroupNorm),
])
def test_norm_option(norm, cls):
    model = tiny(depth=2, padding="same", norm=norm)
    assert isinstance(model.down1.conv1.norm, cls)
    assert isinstance(model.up1.conv2.norm, cls)
    assert (model.down1.conv1.conv.bias is None) == (norm is not None)  # a norm's shift makes the bias redundant


def test_upsample_and_dropout_options():
    model = tiny(depth=2, padding="valid", upsample="bilinear", dropout=0.3).eval()
    assert isinstance(model.up1.upsample, nn.Upsample)
    assert model.up1.upconv.kernel_size == (1, 1) and model.up1.upconv.out_channels == 4
    assert isinstance(model.drop, nn.Dropout) and model.drop.p == 0.3
    with torch.no_grad():
        assert model(torch.randn(1, 1, 48, 44)).shape == (1, 2, 8, 4)  # same geometry as the transposed conv
    assert isinstance(tiny(depth=2).drop, nn.Identity)
    assert isinstance(create_model("unet_original", base_width=4).drop, nn.Dropout)


@pytest.mark.parametrize("kw, words", [
    (dict(padding="full"), ["padding", "'full'", "valid", "same"]),
    (dict(norm="layer"), ["norm", "'layer'", "batch"]),
    (dict(upsample="nearest"), ["upsample", "'nearest'", "transpose"]),
    (dict(spatial_dims=1), ["spatial_dims", "1", "[2, 3]"]),
    (dict(depth=0), ["depth", "0", "positive integer"]),
    (dict(base_width=2.5), ["base_width", "2.5"]),
    (dict(dropout=1.0), ["dropout", "1.0", "[0, 1)"]),
])
def test_config_validation_names_field_value_and_expected(kw, words):
    with pytest.raises(ValueError) as err:
        UNetConfig(**kw)
    for word in words:
        assert word in str(err.value)


def test_unknown_builder_argument():
    with pytest.raises(TypeError, match="widht.*accepted.*base_width"):
        create_model("unet", widht=4)


# --- contract -------------------------------------------------------------------------------------------------------
def test_forward_is_head_of_features_and_backward():
    model = tiny(depth=2, padding="valid", norm="group").train()
    x = model.example_input(batch_size=2)
    feats = model.forward_features(x)
    assert feats.shape == (2, 4, 4, 4)
    assert model.forward_head(feats, pre_logits=True) is feats
    out = model(x)
    torch.testing.assert_close(out, model.forward_head(feats))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("kw", [
    dict(depth=1, padding="valid"), dict(depth=3, padding="valid"), dict(depth=5, padding="valid"),
    dict(depth=1, padding="same"), dict(depth=4, padding="same", norm="instance"),
    dict(depth=2, padding="same", spatial_dims=3, norm="instance"), dict(depth=2, padding="valid", spatial_dims=3),
])
def test_example_input_is_valid(kw):
    model = tiny(**kw).eval()
    x = model.example_input()
    model.check_input(x)
    with torch.no_grad():
        out = model(x)
    assert out.shape[2:] == model.output_size(tuple(x.shape[2:]))
    json.dumps(model.input_contract())


def test_registered_builders():
    assert {"unet", "unet_original", "unet3d"} <= set(list_models(task="segmentation"))
    for name, expect in [
        ("unet", dict(spatial_dims=2, padding="same", norm="batch", base_width=64, depth=4)),
        ("unet_original", dict(spatial_dims=2, padding="valid", norm=None, base_width=64, depth=4)),
        ("unet3d", dict(spatial_dims=3, padding="same", norm="instance", base_width=32, depth=4)),
    ]:
        model = create_model(name, num_classes=3)
        assert {k: getattr(model.config, k) for k in expect} == expect
        assert model.num_classes == 3 and model.head.out_channels == 3
        model.check_input(model.example_input())
    assert create_model("unet", spatial_dims=3, base_width=4).default_input_size == (32, 32, 32)
    assert create_model("unet", base_width=4).default_input_size == (128, 128)
    assert create_model("unet_original", base_width=4).default_input_size == (188, 188)


def test_state_dict_keys_are_semantic():
    sd = create_model("unet_original").state_dict()
    expected = {
        "down1.conv1.conv.weight": (64, 1, 3, 3),
        "down4.conv2.conv.bias": (512,),
        "bottleneck.conv1.conv.weight": (1024, 512, 3, 3),
        "up4.upconv.weight": (1024, 512, 2, 2),  # ConvTranspose: (in, out, k, k)
        "up4.conv1.conv.weight": (512, 1024, 3, 3),
        "up1.upconv.weight": (128, 64, 2, 2),
        "up1.conv2.conv.weight": (64, 64, 3, 3),
        "head.weight": (2, 64, 1, 1),
        "head.bias": (2,),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert len(sd) == 2 * (2 * 4 + 2 + 3 * 4 + 1)  # weight + bias of every conv
    bn = create_model("unet", depth=2, base_width=4).state_dict()
    assert "down1.conv1.norm.running_mean" in bn and "up2.conv1.norm.weight" in bn
    # a level's keys and shapes do not depend on depth
    shallow = tiny(depth=2).state_dict()
    deep = tiny(depth=3).state_dict()
    for key in ("down1.conv1.conv.weight", "down2.conv2.conv.weight", "up1.upconv.weight", "up2.conv1.conv.weight"):
        assert shallow[key].shape == deep[key].shape


# --- ONNX export ----------------------------------------------------------------------------------------------------
def _export_and_compare(model, example, dynamic_shapes, shapes, path):
    ort = pytest.importorskip("onnxruntime")
    model.eval()
    torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=dynamic_shapes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(1)
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    return session


def test_onnx_same_padding_dynamic_batch_and_size(tmp_path):
    model = tiny(depth=3, padding="same", norm="batch", upsample="bilinear")
    h, w = Dim("h_k", min=1), Dim("w_k", min=1)
    dims = ({0: Dim("batch"), 2: 8 * h, 3: 8 * w},)
    _export_and_compare(model, torch.randn(1, 1, 32, 32), dims, [(2, 1, 48, 40), (1, 1, 16, 64)],
                        tmp_path / "same.onnx")


def test_onnx_valid_padding_exact_size_rule(tmp_path):
    """Valid sizes are ``step*k - 4``: the derived dims from export_dynamic_shapes express exactly that."""
    model = tiny(depth=2, padding="valid")
    dims = (model.export_dynamic_shapes(),)
    session = _export_and_compare(model, model.example_input(), dims, [(2, 1, 60, 52), (1, 1, 44, 92)],
                                  tmp_path / "valid.onnx")
    assert session.get_inputs()[0].shape[2:] == ["4*height_k - 4", "4*width_k - 4"]


def test_onnx_valid_padding_plain_dims(tmp_path):
    """A generic exporter that marks H/W with plain Dims still gets a working graph (guards become asserts)."""
    model = tiny(depth=2, padding="valid")
    dims = ({0: Dim("batch"), 2: Dim("h", min=model.min_input_size), 3: Dim("w", min=model.min_input_size)},)
    _export_and_compare(model, model.example_input(), dims, [(3, 1, 48, 56)], tmp_path / "valid_plain.onnx")


def test_onnx_3d(tmp_path):
    model = tiny(spatial_dims=3, depth=2, padding="same", norm="instance")
    x = model.example_input()
    dims = (model.export_dynamic_shapes(x, {0: "n", 2: "d", 3: "h", 4: "w"}),)  # the deploysdk exporter's hook call
    session = _export_and_compare(model, x, dims, [(2, 1, 16, 12, 20)], tmp_path / "unet3d.onnx")
    assert session.get_inputs()[0].shape == ["n", 1, "4*d_k", "4*h_k", "4*w_k"]
