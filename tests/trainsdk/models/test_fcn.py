"""FCN-32s/16s/8s and convolutionalize: exact output sizes, skip layers, bilinear init, VGG-16 keys, ONNX export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.golden import fill_state_dict
from trainsdk.models import InputShapeError, create_model, list_models, model_entry
from trainsdk.models.fcn import (FCN, ConvolutionalizedVGG, FCNConfig, bilinear_kernel, convolutionalize,
                                 upsample_to)

TESTS_DIR = Path(__file__).resolve().parents[2]

GOLDEN = json.loads((TESTS_DIR / "fixtures" / "torchvision_golden.json").read_text())["models"]
SMALL = dict(in_channels=1, num_classes=2, hidden_dim=16, zero_init_scores=False)  # cheap head, non-zero scores
VARIANTS = ("fcn32s", "fcn16s", "fcn8s")


def small(name: str, seed: int = 0, **kw) -> FCN:
    torch.manual_seed(seed)
    return create_model(name, **{**SMALL, **kw}).eval()


def small_vgg(seed: int = 0):
    """A vgg16 (zoo) with a narrow classifier, every tensor filled deterministically (not tiny like its init)."""
    vgg = create_model("vgg16", in_channels=1, num_classes=5, hidden_dim=16)
    vgg.load_state_dict(fill_state_dict(vgg.state_dict()))
    return vgg.eval()


# --- registry and config ------------------------------------------------------------------------------------------
def test_registered_as_segmentation():
    assert set(VARIANTS) <= set(list_models(task="segmentation"))
    assert all(model_entry(n).task == "segmentation" and model_entry(n).family == "fcn" for n in VARIANTS)


@pytest.mark.parametrize("kw, words", [
    (dict(stride=4), ["stride", "4", "[32, 16, 8]"]),
    (dict(dropout=1.0), ["dropout", "1.0", "[0, 1)"]),
    (dict(hidden_dim=0), ["hidden_dim", "0", "positive"]),
    (dict(batch_norm="yes"), ["batch_norm", "'yes'", "True or False"]),
])
def test_config_errors_name_field_value_expected(kw, words):
    with pytest.raises(ValueError) as e:
        FCNConfig(**kw)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_unknown_builder_argument():
    with pytest.raises(TypeError, match="unknown argument.*'depth'.*accepted: num_classes"):
        create_model("fcn8s", depth=19)


def test_defaults_follow_the_paper():
    c = FCNConfig()
    assert (c.num_classes, c.in_channels, c.stride, c.hidden_dim, c.dropout) == (21, 3, 32, 4096, 0.5)
    assert FCN.dynamic_spatial and FCN.min_input_size == 32 and FCN.default_input_size == (224, 224)


# --- shapes -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_output_is_input_size_for_odd_sizes(name):
    m = small(name)
    with torch.no_grad():
        for hw in [(32, 32), (97, 131), (33, 63), (65, 40)]:
            y = m(m.example_input(1, hw))
            assert y.shape == (1, 2, *hw)
            assert torch.isfinite(y).all()


def test_forward_features_and_head_contract():
    m = small("fcn8s")
    x = m.example_input(1, (97, 131))
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats["pool3"].shape == (1, 256, 12, 16)
        assert feats["pool4"].shape == (1, 512, 6, 8)
        assert feats["fc7"].shape == (1, 16, 3, 4)
        assert tuple(feats["input_size"]) == (97, 131)
        assert torch.equal(m.forward_head(feats), m(x))
        assert m.forward_head(feats, pre_logits=True) is feats["fc7"]
    assert [f["module"] for f in m.feature_info] == ["features.16", "features.23", "fc7"]


def test_bad_inputs_raise_clear_errors():
    m = small("fcn16s")
    with pytest.raises(InputShapeError, match="in_channels=1.*3 channels"):
        m(torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputShapeError, match="at least 32.*\\(31, 64\\)"):
        m(torch.zeros(1, 1, 31, 64))
    with pytest.raises(InputShapeError, match="4-D"):
        m(torch.zeros(1, 64, 64))


# --- variants -----------------------------------------------------------------------------------------------------
def test_variants_differ_by_their_skip_layers():
    names = {n: {k.split(".")[0] for k in small(n).state_dict()} for n in VARIANTS}
    base = {"features", "fc6", "fc7", "score_fr"}
    assert names["fcn32s"] == base | {"upscore"}
    assert names["fcn16s"] == base | {"upscore2", "score_pool4", "upscore16"}
    assert names["fcn8s"] == names["fcn16s"] - {"upscore16"} | {"upscore_pool4", "score_pool3", "upscore8"}


def test_variants_give_different_maps_from_the_same_backbone():
    shared = small("fcn8s").state_dict()
    x = torch.randn(1, 1, 64, 96)
    outs = {}
    for n in VARIANTS:
        m = small(n, seed=1)
        res = m.load_state_dict({k: v for k, v in shared.items() if k in m.state_dict()}, strict=False)
        assert set(res.missing_keys) <= {"upscore.weight", "upscore16.weight"}  # bilinear in every model
        with torch.no_grad():
            outs[n] = m(x)
    assert not torch.allclose(outs["fcn32s"], outs["fcn16s"], atol=1e-4)
    assert not torch.allclose(outs["fcn16s"], outs["fcn8s"], atol=1e-4)


def test_paper_init_zeroes_the_score_layers():
    m = create_model("fcn8s", in_channels=1, hidden_dim=16)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert getattr(m, name).weight.abs().sum() == 0
    assert m(m.example_input(1, (40, 40))).abs().sum() == 0  # all-zero scores before training


def test_upsamplers_are_learnable():
    m = small("fcn8s").train()
    m(m.example_input(1, (40, 48))).square().mean().backward()
    for name in ("upscore2", "upscore_pool4", "upscore8"):
        up = getattr(m, name)
        assert up.weight.requires_grad and up.weight.grad.abs().sum() > 0


# --- bilinear upsampling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_bilinear_init_keeps_a_constant_map_constant(name):
    m = small(name)
    ups = [mod for n, mod in m.named_children() if n.startswith("upscore")]
    for up in ups:
        f = up.stride[0]
        const = torch.full((1, 2, 3, 5), 0.7)
        out = upsample_to(const, up, (3 * f + f - 1, 5 * f))  # a partial last cell too
        torch.testing.assert_close(out, torch.full_like(out, 0.7), rtol=0, atol=1e-5)


@pytest.mark.parametrize("f", [2, 8, 16, 32])
def test_bilinear_init_equals_interpolate(f):
    s = torch.randn(2, 3, 4, 5)
    up = torch.nn.ConvTranspose2d(3, 3, 2 * f, stride=f, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(3, f))
        out = upsample_to(s, up, (4 * f + f - 1, 5 * f))
    ref = F.interpolate(s, scale_factor=f, mode="bilinear", align_corners=False)  # (2, 3, 4f, 5f)
    torch.testing.assert_close(out[:, :, :4 * f], ref, rtol=0, atol=1e-5)
    # rows past the last coarse centre are clamped to it, as interpolate clamps
    torch.testing.assert_close(out[:, :, 4 * f:], ref[:, :, -1:].expand(-1, -1, f - 1, -1), rtol=0, atol=1e-5)


# --- VGG-16 backbone ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_norm, golden", [(False, "vgg16"), (True, "vgg16_bn")])
def test_backbone_keys_match_torchvision(batch_norm, golden):
    m = create_model("fcn32s", hidden_dim=16, batch_norm=batch_norm)  # in_channels=3, as torchvision's
    ours = {k: list(v.shape) for k, v in m.state_dict().items() if k.startswith("features.")}
    theirs = {k: v for k, v in GOLDEN[golden]["keys"].items() if k.startswith("features.")}
    assert ours == theirs


def test_load_backbone_copies_features_and_reshapes_fc():
    vgg = small_vgg()
    m = small("fcn8s")
    loaded = m.load_backbone(vgg.state_dict())
    assert loaded == sorted([k for k in m.state_dict() if k.startswith("features.")]
                            + ["fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"])
    torch.testing.assert_close(m.features[28].weight, vgg.features[28].weight, rtol=0, atol=0)
    torch.testing.assert_close(m.fc6.weight.flatten(1), vgg.classifier[0].weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a VGG-16"):
        m.load_backbone({k: v for k, v in vgg.state_dict().items() if k != "features.0.bias"})


def test_vgg_state_dict_loads_with_strict_false():
    vgg = small_vgg()
    m = small("fcn16s")
    res = m.load_state_dict(vgg.state_dict(), strict=False)
    assert all(k.startswith("classifier.") for k in res.unexpected_keys)
    assert not any(k.startswith("features.") for k in res.missing_keys)
    torch.testing.assert_close(m.features[0].weight, vgg.features[0].weight, rtol=0, atol=0)


# --- convolutionalize ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg_and_conv():
    vgg = small_vgg()
    return vgg, convolutionalize(vgg)


def test_convolutionalize_equals_classifier_at_224(vgg_and_conv):
    vgg, conv = vgg_and_conv
    assert isinstance(conv, ConvolutionalizedVGG) and not conv.training
    assert [conv.fc6.kernel_size, conv.fc7.kernel_size, conv.score.kernel_size] == [(7, 7), (1, 1), (1, 1)]
    x = vgg.example_input(2, (224, 224))
    with torch.no_grad():
        logits = vgg(x)
        scores = conv(x)
    assert scores.shape == (2, 5, 1, 1) and logits.abs().mean() > 1e-2
    torch.testing.assert_close(scores.flatten(1), logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(conv.classify(x), logits, rtol=0, atol=1e-5)


def test_convolutionalize_gives_a_class_map_on_larger_images(vgg_and_conv):
    vgg, conv = vgg_and_conv
    x = vgg.example_input(1, (256, 320))
    with torch.no_grad():
        pool5 = vgg.features(x)  # (1, 512, 8, 10)
        cmap = conv(x)
    assert cmap.shape == (1, 5, 2, 4)
    for i in range(2):  # each cell is the classifier on one 7x7 window of pool5 (a 224-pixel window of the image)
        for j in range(4):
            window = pool5[:, :, i:i + 7, j:j + 7].flatten(1)
            torch.testing.assert_close(cmap[:, :, i, j], vgg.classifier(window), rtol=0, atol=1e-5)
    torch.testing.assert_close(conv.classify(x), cmap.mean(dim=(2, 3)))
    with pytest.raises(InputShapeError, match="at least 224"):
        conv(torch.zeros(1, 1, 200, 300))


def test_convolutionalize_rejects_a_non_vgg_head():
    with pytest.raises(ValueError, match="3 Linear layers"):
        convolutionalize(_NotVGG())


class _NotVGG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = torch.nn.Sequential(torch.nn.Linear(10, 3))


# --- ONNX export --------------------------------------------------------------------------------------------------
def _export_and_session(model, x, tmp_path, min_size: int):
    ort = pytest.importorskip("onnxruntime")
    from torch.export import Dim

    spec = ({0: Dim("batch", min=1, max=4096), 2: Dim("height", min=min_size, max=8192),
             3: Dim("width", min=min_size, max=8192)},)
    prog = torch.onnx.export(model, (x,), None, dynamo=True, dynamic_shapes=spec, input_names=["input"],
                             output_names=["output"])
    path = tmp_path / "model.onnx"
    prog.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check_ort(model, sess, shapes):
    for shape in shapes:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"input": x.numpy()})[0]
        assert out.shape == ref.shape and ref.std() > 1e-3
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


@pytest.mark.filterwarnings("ignore")
def test_fcn8s_onnx_dynamic_batch_and_spatial(tmp_path):
    m = small("fcn8s")
    sess = _export_and_session(m, m.example_input(1, (64, 96)), tmp_path, FCN.min_input_size)
    _check_ort(m, sess, [(2, 1, 97, 131), (1, 1, 160, 64), (3, 1, 64, 96)])


@pytest.mark.filterwarnings("ignore")
def test_convolutionalized_onnx_dynamic_spatial(vgg_and_conv, tmp_path):
    _, conv = vgg_and_conv
    sess = _export_and_session(conv, torch.randn(1, 1, 224, 224), tmp_path, 224)
    _check_ort(conv, sess, [(1, 1, 224, 224), (1, 1, 256, 288)])
