"""GoogLeNet: the lecture's inception-module arithmetic, torchvision compatibility, the paper form, the contract."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch
import torch.nn as nn

from tests.golden import fill_state_dict, golden_input
from trainsdk.models import InputShapeError, create_model, list_models, model_entry
from trainsdk.models.googlenet import (GoogLeNet, GoogLeNetConfig, GoogLeNetOutputs, InceptionModule, _INCEPTION_SPECS,
                                       googlenet, googlenet_original)

TESTS = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = json.loads((TESTS / "fixtures" / "torchvision_golden.json").read_text())["models"]["googlenet"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tv_model() -> GoogLeNet:
    return googlenet()


@pytest.fixture(scope="module")
def paper_model() -> GoogLeNet:
    return googlenet_original()


# --- the inception module (lecture table) -------------------------------------------------------------------------
def test_naive_module_matches_lecture_table():
    m = InceptionModule(256, 128, None, 192, None, 96, None, bottleneck=False, bias=False, norm=False)
    assert n_params(m) == 1_089_536  # 256*128 + 256*192*9 + 256*96*25
    assert m.out_channels == 128 + 192 + 96 + 256  # the pool branch passes its 256 channels through
    assert m(torch.randn(1, 256, 7, 7)).shape == (1, 672, 7, 7)


def test_bottleneck_module_matches_lecture_table():
    m = InceptionModule(256, 128, 64, 192, 64, 96, 64, bias=False, norm=False)
    assert n_params(m) == 346_112
    assert m.out_channels == 128 + 192 + 96 + 64
    assert m(torch.randn(1, 256, 7, 7)).shape == (1, 480, 7, 7)


def test_inception_submodule_names_follow_torchvision():
    m = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    names = {n for n, _ in m.named_modules()}
    for n in ("branch1.conv", "branch1.bn", "branch2.0.conv", "branch2.1.bn", "branch3.0.conv", "branch3.1.conv",
              "branch4.1.conv", "branch4.1.bn"):
        assert n in names
    assert isinstance(m.branch4[0], nn.MaxPool2d)
    plain = InceptionModule(192, 64, 96, 128, 16, 32, 32, norm=False)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in plain.modules())
    assert all(c.bias is not None for c in plain.modules() if isinstance(c, nn.Conv2d))


def test_bottleneck_needs_reduction_channels():
    with pytest.raises(ValueError, match="ch3x3red"):
        InceptionModule(256, 128, None, 192, None, 96, None)


# --- torchvision compatibility ------------------------------------------------------------------------------------
def test_param_counts_match_torchvision(tv_model):
    assert n_params(tv_model) == FIXTURE["num_params"] == 13_004_888
    assert n_params(googlenet(aux_logits=False)) == FIXTURE["num_params_no_aux"] == 6_624_904


def test_state_dict_keys_and_shapes_match_torchvision(tv_model):
    sd = tv_model.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == FIXTURE["keys"]
    assert list(sd) == list(FIXTURE["keys"])  # same order, so printed models and diffs line up too


def test_logits_match_torchvision():
    model = googlenet(aux_logits=True)
    model.load_state_dict(fill_state_dict(model.state_dict()), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(golden_input())
    expected = torch.tensor(FIXTURE["logits"]).reshape(1, -1)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_torchvision_5x5_branch_uses_3x3_kernels(tv_model):
    for name in _INCEPTION_SPECS:
        assert getattr(tv_model, name).branch3[1].conv.kernel_size == (3, 3)


# --- forward modes ------------------------------------------------------------------------------------------------
def test_training_returns_named_tuple_eval_returns_tensor():
    model = googlenet(num_classes=5, in_channels=1)
    x = model.example_input(2, size=(64, 64))
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert out._fields == ("logits", "aux_logits2", "aux_logits1")
    assert all(t.shape == (2, 5) for t in out)
    y = model.eval()(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 5)


def test_training_without_aux_returns_tensor():
    model = googlenet(num_classes=4, aux_logits=False).train()
    assert model.aux1 is None and model.aux2 is None
    y = model(model.example_input(2, size=(64, 64)))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4)


def test_forward_is_head_of_features(paper_model):
    model = paper_model.eval()
    x = model.example_input(2, size=(96, 96))
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1024, 3, 3)
        torch.testing.assert_close(model(x), model.forward_head(feats))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 1024)


def test_feature_info_matches_the_modules(tv_model):
    model = tv_model.eval()
    seen = {}
    hooks = [model.get_submodule(f["module"]).register_forward_hook(
        lambda mod, inp, out, name=f["module"]: seen.__setitem__(name, out.shape)) for f in model.feature_info]
    try:
        with torch.no_grad():
            model(model.example_input(1, size=(64, 64)))
    finally:
        for h in hooks:
            h.remove()
    for f in model.feature_info:
        assert seen[f["module"]][1] == f["num_chs"]
        assert seen[f["module"]][2] == 64 // f["reduction"]


# --- the paper's form ---------------------------------------------------------------------------------------------
def _paper_param_count(num_classes: int = 1000, aux: bool = True) -> int:
    """Table 1 of the paper, counted by hand: conv weights + biases, 5x5 kernels, no batch norm."""
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    in_ch = 192
    for c1, r3, c3, r5, c5, pp in _INCEPTION_SPECS.values():
        total += conv(in_ch, c1, 1) + conv(in_ch, r3, 1) + conv(r3, c3, 3) + conv(in_ch, r5, 1) + conv(r5, c5, 5)
        total += conv(in_ch, pp, 1)
        in_ch = c1 + c3 + c5 + pp
    total += 1024 * num_classes + num_classes
    if aux:
        for aux_in in (512, 528):
            total += conv(aux_in, 128, 1) + 2048 * 1024 + 1024 + 1024 * num_classes + num_classes
    return total


def test_original_has_5x5_kernels_no_batchnorm_and_lrn(paper_model):
    for name in _INCEPTION_SPECS:
        assert getattr(paper_model, name).branch3[1].conv.kernel_size == (5, 5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper_model.modules())
    assert all(m.bias is not None for m in paper_model.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in paper_model.modules()) == 2
    assert paper_model.dropout.p == 0.4
    assert n_params(paper_model) == _paper_param_count()
    assert n_params(googlenet_original(aux_logits=False)) == _paper_param_count(aux=False)


def test_original_trains_with_aux_heads():
    model = googlenet_original(num_classes=3, in_channels=1).train()
    out = model(model.example_input(2, size=(64, 64)))
    assert isinstance(out, GoogLeNetOutputs)
    assert all(t.shape == (2, 3) and torch.isfinite(t).all() for t in out)
    sum(t.sum() for t in out).backward()
    assert model.conv1.conv.weight.grad is not None and model.aux1.fc2.weight.grad is not None


# --- input contract -----------------------------------------------------------------------------------------------
def test_single_channel_input():
    model = googlenet(in_channels=1, num_classes=2).eval()
    assert model.conv1.conv.weight.shape == (64, 1, 7, 7)
    with torch.no_grad():
        assert model(model.example_input(1)).shape == (1, 2)


def test_wrong_channel_count_raises(tv_model):
    with pytest.raises(InputShapeError, match="in_channels=3"):
        tv_model(torch.randn(1, 1, 64, 64))
    with pytest.raises(InputShapeError):
        tv_model(torch.randn(3, 64, 64))


@pytest.mark.parametrize("train", [False, True])
def test_min_input_size_is_exact(train):
    model = googlenet(num_classes=2).train(train)
    s = model.min_input_size
    out = model(model.example_input(2, size=(s, s)))
    assert (out.logits if train else out).shape == (2, 2)
    with pytest.raises(InputShapeError, match=str(s)):
        model(model.example_input(2, size=(s - 1, s)))
    model.min_input_size = 1  # below the declared minimum the network itself fails
    with pytest.raises(RuntimeError):
        model(model.example_input(2, size=(s - 1, s - 1)))


# --- config and registry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("dropout", 1.5), ("aux_dropout", -0.1), ("five_by_five_kernel", 4), ("aux_logits", "yes"), ("norm", 1),
    ("lrn", None), ("num_classes", 0),
])
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=field) as info:
        GoogLeNetConfig(**{field: value})
    assert repr(value) in str(info.value)


def test_unknown_kwarg_is_rejected():
    with pytest.raises(TypeError, match="transform_input"):
        googlenet(transform_input=True)
    with pytest.raises(TypeError, match="googlenet_original"):
        googlenet_original(bogus=1)


def test_registered_and_configs():
    assert {"googlenet", "googlenet_original"} <= set(list_models(family="googlenet"))
    assert model_entry("googlenet").task == "classification"
    model = create_model("googlenet_original", num_classes=7, in_channels=2)
    assert model.config == GoogLeNetConfig(num_classes=7, in_channels=2, norm=False, lrn=True,
                                           five_by_five_kernel=5, dropout=0.4, aux_dropout=0.7)
    assert json.loads(json.dumps(model.config.to_dict()))["five_by_five_kernel"] == 5
