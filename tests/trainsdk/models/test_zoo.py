"""Tests every registered model: add a model to the registry and it is tested here."""
import json
import pathlib

import pytest
import torch

from tests.golden import fill_state_dict, golden_input
from tests.zoo import small_model
from trainsdk.models import InputShapeError, UnknownModelError, create_model, list_models, model_entry

GOLDEN = json.loads((pathlib.Path(__file__).parents[2] / "fixtures" / "torchvision_golden.json").read_text())
TV = GOLDEN["models"]

REQUIRED = ["lenet5", "lenet5_modern", "alexnet", "alexnet_original", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn",
            "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "googlenet", "googlenet_original", "resnet18", "resnet34",
            "resnet50", "resnet101", "resnet152", "plain18", "plain34", "fcn32s", "fcn16s", "fcn8s", "unet",
            "unet_original", "unet3d"]


def test_every_lecture_architecture_is_registered():
    assert set(REQUIRED) <= set(list_models())


def test_list_models_filters():
    assert set(list_models(task="segmentation")) >= {"fcn8s", "unet"}
    assert "resnet18" not in list_models(task="segmentation")
    assert list_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert list_models(family="vgg") == sorted(n for n in REQUIRED if n.startswith("vgg"))


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="resnet18"):
        create_model("resnet81")


@pytest.mark.parametrize("name", list_models())
def test_unknown_kwarg_lists_accepted(name):
    with pytest.raises(TypeError, match="unknown argument.*'colour'.*accepted:.*num_classes"):
        create_model(name, colour="red")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("field,value", [("num_classes", 0), ("in_channels", -1), ("in_channels", 1.5)])
def test_bad_sizes_are_rejected(name, field, value):
    with pytest.raises(ValueError, match=field):
        create_model(name, **{field: value})


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_and_determinism(name):
    model = small_model(name)
    x = model.example_input(batch_size=2)
    assert x.shape[1] == 1
    out = model.train()(x)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    expected_spatial = () if model_entry(name).task == "classification" else None
    for o in outs:
        assert o.shape[:2] == (2, 3) and torch.isfinite(o).all()
        if expected_spatial is not None:
            assert o.dim() == 2
    sum(o.float().pow(2).mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert isinstance(a, torch.Tensor), "eval mode returns the main output only"
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
def test_contract(name):
    model = small_model(name)
    x = model.example_input(batch_size=1)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats), model(x))
    contract = model.input_contract()
    assert contract["channels"] == 1 and contract["spatial_dims"] == x.dim() - 2
    assert model.model_name == name
    json.dumps(model.config.to_dict())  # the config is embedded in exported files


@pytest.mark.parametrize("name", list_models())
def test_wrong_channel_count_is_explained(name):
    model = small_model(name).eval()
    x = model.example_input()
    bad = torch.cat([x, x], dim=1)
    with pytest.raises(InputShapeError, match="in_channels=1.*2 channels"):
        model(bad)
    with pytest.raises(InputShapeError, match="expects a"):
        model(x[0])  # no batch dim


@pytest.mark.parametrize("name", list_models())
def test_too_small_input_is_explained(name):
    model = small_model(name).eval()
    x = model.example_input()
    tiny = torch.zeros(*x.shape[:2], *([4] * (x.dim() - 2)))
    with pytest.raises(InputShapeError):
        model(tiny)


# --- golden figures from torchvision ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(n for n in TV if n != "googlenet"))
def test_param_count_and_keys_match_torchvision(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == TV[name]["num_params"]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == TV[name]["keys"]


@pytest.mark.parametrize("name", sorted(n for n in TV if "logits" in TV[n] and n != "googlenet"))
def test_logits_match_torchvision(name):
    model = create_model(name).eval()
    model.load_state_dict(fill_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        logits = model(golden_input()).flatten()
    torch.testing.assert_close(logits, torch.tensor(TV[name]["logits"]), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", list_models())
def test_smallest_advertised_size_works(name):
    """The contract printed in the README (min size, multiple) is one the network really accepts."""
    model = small_model(name).eval()
    contract = model.input_contract()
    if contract["fixed_size"]:
        size = tuple(contract["default_size"])
    else:
        n = contract["min_size"]
        n += (-n) % contract["multiple"]
        size = (n,) * contract["spatial_dims"]
    model.check_spatial_size(size)
    with torch.no_grad():
        out = model(torch.zeros(1, 1, *size))
    assert out.shape[:2] == (1, 3)
