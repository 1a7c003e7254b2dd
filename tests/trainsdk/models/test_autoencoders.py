"""Autoencoders, RED-Net and the cross-modality network: reconstruction shapes, summed skips, greedy pretraining,
transfer of the encoder, encode/decode, latent-space pictures. (Shapes/backward/export of every registered model
are in test_zoo.py and test_export.py.)"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from trainsdk.data import load_digits
from trainsdk.models import create_model, list_models, load_weights
from trainsdk.models.autoencoders import finetune_autoencoder, greedy_pretrain
from trainsdk.models.latent_plots import (PALETTE, interpolation_codes, save_code_scatter,
                                          save_interpolation_grid)

AUTOENCODERS = ["stacked_ae", "conv_dae", "conv_ae2d", "rednet10", "rednet20", "rednet30", "cross_modality_net"]
SMALL = {"conv_dae": dict(widths=(8, 8)), "rednet10": dict(width=8), "rednet20": dict(width=8),
         "rednet30": dict(width=8), "cross_modality_net": dict(base_width=8), "stacked_ae": dict(hidden_sizes=(32, 8))}


def _small(name, **kw):
    return create_model(name, **{**SMALL.get(name, {}), **kw}).eval()


@pytest.fixture(scope="module")
def digits():
    d = load_digits(32)
    return (d.x_train[:256] * d.std + d.mean).clamp(0, 1), d.y_train[:256]  # back to [0, 1] for sigmoid outputs


def test_registered_by_task():
    assert {"conv_dae", "rednet10", "rednet20", "rednet30"} <= set(list_models(task="restore"))
    assert {"stacked_ae", "conv_ae2d"} <= set(list_models(task="reconstruct"))
    assert "cross_modality_net" in list_models(task="translate")
    assert "stacked_ae_classifier" in list_models(task="classification")


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_forward_reconstructs_the_input_shape(name):
    model = _small(name)
    x = model.example_input(batch_size=2)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape, "output channels default to in_channels"
    assert model.config.num_classes == 1


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_encode_decode_round_trip_is_forward(name):
    model = _small(name)
    x = model.example_input(batch_size=3)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(model.encode(x)), model(x), rtol=0, atol=0)


def test_code_shapes():
    x = torch.rand(4, 1, 32, 32)
    assert create_model("conv_ae2d").encode(x).shape == (4, 2)
    assert create_model("stacked_ae").encode(x).shape == (4, 64)
    assert create_model("conv_ae2d", image_size=28).encode(torch.rand(4, 1, 28, 28)).shape == (4, 2)
    assert create_model("conv_dae").encode(torch.rand(2, 1, 64, 64)).shape == (2, 64, 16, 16)


def test_rednet_takes_any_size_and_other_channel_counts():
    model = _small("rednet10")
    with torch.no_grad():
        assert model(torch.rand(1, 1, 37, 45)).shape == (1, 1, 37, 45)
    two = _small("rednet10", in_channels=2)
    assert two(torch.rand(1, 2, 20, 20)).shape == (1, 2, 20, 20)
    assert _small("cross_modality_net", in_channels=2, num_classes=1)(torch.rand(1, 2, 32, 40)).shape == (1, 1, 32, 40)


def _conv_params(cin, cout, k=3):
    return cin * cout * k * k + cout


@pytest.mark.parametrize("name,n", [("rednet10", 5), ("rednet20", 10), ("rednet30", 15)])
def test_rednet_parameter_count_is_the_papers_layout(name, n):
    """n 3x3 convs + n 3x3 deconvs of 64 channels; the skips are sums, so they add no parameters."""
    expected = (_conv_params(1, 64) + (n - 1) * _conv_params(64, 64)  # encoder
                + (n - 1) * _conv_params(64, 64) + _conv_params(64, 1))  # decoder
    count = sum(p.numel() for p in create_model(name).parameters())
    assert count == expected
    assert sum(p.numel() for p in create_model(name, skip_every=0).parameters()) == expected
    assert create_model(name).skip_from == tuple(range(2, n, 2))


def _zero_(modules):
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.zero_()


def test_rednet_skips_carry_the_image_past_a_zeroed_encoder():
    """Zero the deep encoder (conv3..conv5): the code is then constant, so only the skip from conv2 (summed into
    deconv3) can bring the input to the output."""
    outs = {}
    for skip_every in (2, 0):
        model = _small("rednet10", residual=False, skip_every=skip_every)
        _zero_([getattr(model, f"conv{i}") for i in (3, 4, 5)])
        with torch.no_grad():
            a, b = model(torch.rand(1, 1, 24, 24)), model(torch.rand(1, 1, 24, 24))
        outs[skip_every] = (a - b).abs().max().item()
    assert outs[0] == 0.0, "without skips a constant code gives a constant output"
    assert outs[2] > 1e-4


def test_rednet_residual_adds_the_input():
    model = _small("rednet10")
    _zero_([model])
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x, rtol=0, atol=0)


def test_cross_modality_skips_are_summed_past_a_zeroed_bottleneck():
    model = _small("cross_modality_net", norm=None)
    _zero_([model.down3])
    with torch.no_grad():
        diff = (model(torch.rand(1, 1, 32, 32)) - model(torch.rand(1, 1, 32, 32))).abs().max().item()
    assert diff > 1e-4
    assert model.up1.conv.conv.in_channels == 8, "summed: the decoder conv sees the level's width, not twice it"


def test_greedy_pretraining_reduces_each_layers_error_on_digits(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = create_model("stacked_ae", hidden_sizes=(64, 16))
    logs = greedy_pretrain(model, x, epochs=2, batch_size=32, lr=3e-3, seed=0)
    assert [log.layer for log in logs] == ["layer1", "layer2"]
    for log in logs:
        assert len(log.epoch_losses) == 2
        assert log.final_loss < 0.7 * log.initial_loss, log
    torch.manual_seed(0)
    again = create_model("stacked_ae", hidden_sizes=(64, 16))
    greedy_pretrain(again, x, epochs=2, batch_size=32, lr=3e-3, seed=0)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{k}: same seed, same weights")


def test_denoising_pretraining_and_finetuning_reduce_reconstruction_error(digits):
    x, _ = digits
    model = create_model("stacked_ae", hidden_sizes=(64, 16))
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model(x), x).item()
    greedy_pretrain(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64),
                    epochs=2, noise=0.25, noise_kind="mask", seed=1)
    losses = finetune_autoencoder(model, x, epochs=3, lr=2e-3, seed=1)
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(model(x), x).item()
    assert losses[-1] < losses[0] and after < 0.5 * before


def test_encoder_transfers_to_a_classifier(digits):
    x, _ = digits
    ae = create_model("stacked_ae", hidden_sizes=(64, 16))
    clf = ae.encoder_as_classifier(num_classes=10)
    assert clf.model_name == "stacked_ae_classifier"
    assert clf(x[:5]).shape == (5, 10)
    for key, value in ae.encoder.state_dict().items():
        torch.testing.assert_close(clf.encoder.state_dict()[key], value, rtol=0, atol=0)
    assert clf.encoder.layer1.weight.data_ptr() != ae.encoder.layer1.weight.data_ptr(), "a copy, not shared"
    other = create_model("stacked_ae_classifier", num_classes=10, hidden_sizes=(64, 16))
    report = load_weights(other, ae.state_dict(), strict=False, ignore_unexpected=("decoder.",))
    assert report.missing == ["head.bias", "head.weight"] and report.unexpected == [], "only the new head is new"
    torch.testing.assert_close(other.forward_features(x[:5]), ae.encode(x[:5]))
    assert [f["module"] for f in other.feature_info] == ["encoder.layer1", "encoder.layer2"]


def test_bad_configurations_are_explained():
    with pytest.raises(ValueError, match="residual=True.*num_classes.*3.*in_channels.*1"):
        create_model("rednet10", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match="num_layers must be even"):
        create_model("rednet10", num_layers=7)
    with pytest.raises(ValueError, match="image_size must be a multiple of 4"):
        create_model("conv_ae2d", image_size=30)
    with pytest.raises(ValueError, match="out_activation"):
        create_model("conv_dae", out_activation="softmax")
    with pytest.raises(TypeError, match="StackedAutoencoder"):
        greedy_pretrain(create_model("conv_dae"), torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="output channels"):
        greedy_pretrain(create_model("stacked_ae", num_classes=2), torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="noise must be in"):
        greedy_pretrain(create_model("stacked_ae"), torch.rand(2, 1, 32, 32), noise=1.5)


@pytest.mark.slow  # ~5 s of CPU; the zoo's export test covers RED-Net without the residual add
def test_residual_rednet_exports_with_dynamic_size(tmp_path):
    from deploysdk.export import export_onnx

    model = _small("rednet10")
    report = export_onnx(model, tmp_path / "red.onnx", opset=18)
    assert report.exporter == "dynamo" and all(e.ok for e in report.errors)
    assert len({s[2:] for s in report.checked_shapes}) >= 2


# --- latent-space pictures ------------------------------------------------------------------------------------------
def test_code_scatter_png(tmp_path):
    codes = np.array([[0.0, 0.0], [1.0, 2.0], [0.5, 1.0], [0.2, 1.5]])
    path = save_code_scatter(codes, [0, 1, 2, 2], tmp_path / "codes.png", size=200)
    assert os.listdir(tmp_path) == ["codes.png"], "written atomically, nothing left behind"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (270, 200)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    for label in (0, 1, 2):
        assert (pixels == PALETTE[label]).all(axis=1).any(), f"class {label} colour drawn"
    assert not (pixels == PALETTE[3]).all(axis=1).any()
    with pytest.raises(ValueError, match=r"codes must have shape \(N, 2\)"):
        save_code_scatter(np.zeros((3, 3)), None, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="labels must have shape"):
        save_code_scatter(codes, [0, 1], tmp_path / "bad.png")


def test_interpolation_codes():
    grid = interpolation_codes([0, 0], [1, 2], steps=3)
    assert grid.shape == (9, 2)
    np.testing.assert_allclose(grid[:3], [[0, 2], [0.5, 2], [1, 2]])  # top row: largest second coordinate
    np.testing.assert_allclose(grid[-3:], [[0, 0], [0.5, 0], [1, 0]])
    line = interpolation_codes([0, 0, 0], [1, 1, 1], steps=4)
    np.testing.assert_allclose(line[:, 0], [0, 1 / 3, 2 / 3, 1])
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        interpolation_codes([0, 0], [1, 1], steps=1)
    with pytest.raises(ValueError, match="same length"):
        interpolation_codes([0, 0], [1, 1, 1])


def test_interpolation_grid_png_tiles_follow_the_codes(tmp_path):
    def decoder(z):  # a flat 8x8 image, brightness (x + 2y) / 3 of the code (x, y)
        return ((z[:, 0] + 2 * z[:, 1]) / 3).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()

    images = save_interpolation_grid(decoder, [0.0, 0.0], [1.0, 1.0], tmp_path / "grid.png", steps=4,
                                     value_range=(0.0, 1.0), zoom=1)
    assert images.shape == (4, 4, 8, 8)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.size == (32, 32)
        tiles = np.asarray(img, dtype=np.float64)[::8, ::8] / 255.0  # one pixel per tile, (rows, cols)
    t = np.linspace(0, 1, 4)
    expected = (t[None, :] + 2 * t[::-1, None]) / 3  # x grows to the right, y grows upwards
    np.testing.assert_allclose(tiles, expected, atol=1 / 255)


def test_conv_ae2d_pictures_from_a_trained_model(tmp_path, digits):
    x, y = digits
    torch.manual_seed(0)
    model = create_model("conv_ae2d")
    losses = finetune_autoencoder(model, x, epochs=3, lr=3e-3, seed=0)
    assert losses[-1] < losses[0]
    model.train()
    codes = model.encode(x).detach()
    save_code_scatter(codes, y, tmp_path / "codes.png")
    images = save_interpolation_grid(model, codes.min(0).values, codes.max(0).values, tmp_path / "grid.png", steps=5)
    assert model.training, "the model's mode is restored"
    assert images.shape == (5, 5, 32, 32) and ((images >= 0) & (images <= 1)).all()
    with Image.open(tmp_path / "grid.png") as img:
        assert img.size == (5 * 32 * 2, 5 * 32 * 2)
