import pytest
import torch

from tests.golden import fill_state_dict
from trainsdk.models import adapt_input_channels, create_model, load_weights
from trainsdk.models.weights import WeightsError


def _torchvision_like(name):
    """A 3-channel, 1000-class state_dict with torchvision's keys (our default config is torchvision's layout)."""
    return fill_state_dict(create_model(name).state_dict())


def test_adapt_to_one_channel_sums():
    w = torch.randn(8, 3, 3, 3)
    a = adapt_input_channels(w, 1)
    assert a.shape == (8, 1, 3, 3)
    x = torch.randn(1, 1, 9, 9)
    torch.testing.assert_close(torch.conv2d(x, a), torch.conv2d(x.repeat(1, 3, 1, 1), w), rtol=1e-5, atol=1e-5)


def test_adapt_to_more_channels_keeps_constant_response():
    w = torch.randn(8, 3, 3, 3)
    a = adapt_input_channels(w, 5)
    assert a.shape == (8, 5, 3, 3)
    torch.testing.assert_close(a.sum(1), w.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,first,head", [("resnet18", "conv1.weight", "fc."), ("vgg11", "features.0.weight",
                                                                                    "classifier.6."),
                                             ("alexnet", "features.0.weight", "classifier.6.")])
def test_torchvision_weights_into_one_channel_model(name, first, head, tmp_path):
    state = _torchvision_like(name)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    model = create_model(name, in_channels=1, num_classes=2)
    report = load_weights(model, path, skip_mismatched=(head,))
    assert report.ok and first in report.adapted and report.adapted[first] == "3->1 channels"
    assert set(report.skipped) == {head + "weight", head + "bias"}
    torch.testing.assert_close(model.state_dict()[first], state[first].sum(1, keepdim=True))


def test_strict_load_of_same_layout():
    model = create_model("resnet18")
    report = load_weights(model, _torchvision_like("resnet18"))
    assert report.ok and not report.adapted and not report.skipped


def test_missing_and_unexpected_keys_raise():
    state = _torchvision_like("resnet18")
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"missing keys \['fc.bias'\].*unexpected keys \['extra.weight'\]"):
        load_weights(create_model("resnet18"), state)
    report = load_weights(create_model("resnet18"), state, strict=False)
    assert report.missing == ["fc.bias"] and report.unexpected == ["extra.weight"]


def test_shape_mismatch_names_key_and_hint():
    with pytest.raises(WeightsError, match=r"'fc\.(weight|bias)'.*file has \(1000.*model expects \(2.*skip_mismatched"):
        load_weights(create_model("resnet18", num_classes=2), _torchvision_like("resnet18"))


def test_checkpoint_wrappers_and_ddp_prefix(tmp_path):
    state = {"module." + k: v for k, v in _torchvision_like("lenet5").items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    assert load_weights(create_model("lenet5"), tmp_path / "ckpt.pt").ok


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_weights(create_model("lenet5"), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="could not read"):
        load_weights(create_model("lenet5"), tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="does not hold a state_dict"):
        load_weights(create_model("lenet5"), tmp_path / "list.pt")
