"""GAN models of the zoo beyond the registry-wide tests (test_zoo.py, test_export.py): shapes, conditioning,
spectral norm, the auto-context cascade, configuration errors and a deployable denoiser."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from trainsdk.models import InputShapeError, create_model, list_models, model_entry
from trainsdk.models.gans import ACGANDiscriminator, BiasLeakyReLU

GANS = ["dcgan_generator", "dcgan_discriminator", "acgan_generator", "acgan_discriminator", "context_gan_generator",
        "context_gan_cascade", "wgan_ct_generator", "wgan_critic"]


def test_registered_in_one_family_with_tasks():
    assert set(GANS) == set(list_models(family="gans"))
    assert {n for n in GANS if model_entry(n).task == "discrimination"} == {
        "dcgan_discriminator", "acgan_discriminator", "wgan_critic"}


@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_shapes(size):
    G = create_model("dcgan_generator", image_size=size, width=8, num_classes=3, latent_dim=16).eval()
    D = create_model("dcgan_discriminator", image_size=size, width=8, in_channels=3).eval()
    z = G.sample_latent(4, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4, 1, 16)
    with torch.no_grad():
        img = G(z)
        assert img.shape == (4, 3, size, size)
        assert img.abs().max() <= 1.0  # tanh output
        assert D(img).shape == (4, 1)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert n_bn == int(np.log2(size)) - 2  # batch norm after every layer but the output (DCGAN)
    assert not isinstance(D.stem[-1], nn.BatchNorm2d) and isinstance(D.down1.norm, nn.BatchNorm2d)


def test_dcgan_matches_the_pytorch_example_layer_for_layer():
    """PyTorch's DCGAN example (nz=100, ngf=ndf=64, nc=3, 64x64) has 3,576,704 / 2,765,568 parameters, all convs
    without bias; ours add the output conv's bias (G: 3, D: 1) and the first D layer's bias (64)."""
    G = create_model("dcgan_generator", num_classes=3)
    D = create_model("dcgan_discriminator", in_channels=3)
    assert sum(p.numel() for p in G.parameters()) == 3_576_704 + 3
    assert sum(p.numel() for p in D.parameters()) == 2_765_568 + 64 + 1
    assert [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)] == [512, 256, 128, 64, 3]
    assert [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512, 1]


def test_acgan_generator_code_is_noise_plus_one_hot():
    G = create_model("acgan_generator", num_labels=3, latent_dim=5, image_size=16, width=4).eval()
    z = torch.randn(4, 5)
    code = G.make_input(z, torch.tensor([0, 2, 1, 2]))
    assert code.shape == (4, 1, 8) and G.code_length == 8
    torch.testing.assert_close(code[:, 0, :5], z)
    torch.testing.assert_close(code[:, 0, 5:], torch.eye(3)[[0, 2, 1, 2]])
    ex = G.example_input(batch_size=4)
    torch.testing.assert_close(ex[:, 0, 5:], torch.eye(3)[[0, 1, 2, 0]])  # labels, not noise, in the one-hot part
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        G.make_input(z, torch.tensor([0, 3, 1, 2]))
    with pytest.raises(ValueError, match="pass labels"):
        G.make_input(z)
    with pytest.raises(ValueError, match="unconditional"):
        create_model("dcgan_generator", latent_dim=5).make_input(z, torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputShapeError, match=r"\(N, 1, 5\)"):
        G.make_input(torch.randn(4, 6))
    with pytest.raises(InputShapeError, match="expects a 3-D latent code"):
        G(torch.randn(4, 8))


def test_acgan_discriminator_heads():
    D = create_model("acgan_discriminator", num_classes=3, image_size=16, width=4).eval()
    assert isinstance(D, ACGANDiscriminator)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        out = D.discriminate(x)
        assert out.source.shape == (2, 1) and out.classes.shape == (2, 3)
        torch.testing.assert_close(D(x), out.classes)  # forward: the class logits (a lesion classifier)
        both = torch.flatten(D.head(D.forward_features(x)), 1)
    torch.testing.assert_close(both, torch.cat([out.source, out.classes], 1))


def test_spectral_norm_is_applied_and_bounds_the_weights():
    D = create_model("dcgan_discriminator", image_size=16, width=8, norm=None, spectral_norm=True)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    assert any(k.endswith("parametrizations.weight.original") for k in D.state_dict())
    x = torch.randn(4, 1, 16, 16)
    D.train()
    for _ in range(30):  # power iterations run in training-mode forwards
        D(x)
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.02
    plain = create_model("dcgan_discriminator", image_size=16, width=8, norm=None)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert all(isinstance(m.act, BiasLeakyReLU) for m in (plain.stem, plain.down1))


def test_context_generator_keeps_size_and_checks_multiples():
    G = create_model("context_gan_generator", width=8, levels=2).eval()
    with torch.no_grad():
        assert G(torch.randn(1, 1, 40, 24)).shape == (1, 1, 40, 24)
    with pytest.raises(InputShapeError, match="multiples of 4"):
        G(torch.randn(1, 1, 42, 24))


def test_auto_context_cascade_feeds_each_stage_the_previous_estimate():
    C = create_model("context_gan_cascade", stages=3, width=4, levels=1, num_classes=2).eval()
    assert [s.in_channels for s in C.stages] == [1, 3, 3]
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        est = C.forward_stages(x)
        assert len(est) == 3 and all(e.shape == (2, 2, 16, 16) for e in est)
        torch.testing.assert_close(est[1], C.stages[1](torch.cat([x, est[0]], 1)))
        torch.testing.assert_close(est[2], C.stages[2](torch.cat([x, est[1]], 1)))
        torch.testing.assert_close(C(x), est[-1])


def test_cascade_detach_context_stops_gradients_between_stages():
    C = create_model("context_gan_cascade", stages=2, width=4, levels=1, detach_context=True)
    C(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is None for p in C.stages[0].parameters())
    assert all(p.grad is not None for p in C.stages[1].parameters())


def test_wgan_models_follow_yang_et_al():
    G = create_model("wgan_ct_generator")
    convs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and [c.out_channels for c in convs] == [32] * 7 + [1]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in G.modules())
    C = create_model("wgan_critic")
    assert [m.out_channels for m in C.modules() if isinstance(m, nn.Conv2d)] == [64, 64, 128, 128, 256, 256]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in C.modules())
    with torch.no_grad():
        assert C.eval()(torch.randn(2, 1, 48, 40)).shape == (2, 1)  # any size: global pooling
    layer = create_model("wgan_critic", norm="layer", width=4)
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in layer.modules())


@pytest.mark.parametrize("name,kwargs,match", [
    ("wgan_critic", dict(norm="batch"), "norm='batch' breaks the gradient penalty"),
    ("dcgan_generator", dict(in_channels=2), "in_channels must be 1"),
    ("dcgan_generator", dict(image_size=48), "image_size must be one of"),
    ("acgan_generator", dict(num_labels=0), "num_labels must be >= 1"),
    ("dcgan_discriminator", dict(spectral_norm="yes"), "spectral_norm must be True or False"),
    ("wgan_ct_generator", dict(depth=1), "depth must be an integer >= 2"),
])
def test_bad_configs_are_explained(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def test_ct_denoiser_exports_and_runs_in_deploysdk_runtime(tmp_path):
    from deploysdk import Runtime
    from deploysdk.export import export_onnx

    G = create_model("wgan_ct_generator", width=8, depth=4).eval()
    export_onnx(G, tmp_path / "denoiser.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 80, 48)).astype(np.float32)  # another size than exported
    with Runtime(tmp_path / "denoiser.onnx", backend="onnxruntime", device="cpu") as rt, torch.no_grad():
        np.testing.assert_allclose(rt(x), G(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_spectral_norm_discriminator_exports(tmp_path):
    from deploysdk.export import export_onnx

    D = create_model("dcgan_discriminator", image_size=16, width=4, norm=None, spectral_norm=True)
    report = export_onnx(D, tmp_path / "d.onnx")
    assert report.exporter == "dynamo" and all(e.ok for e in report.errors)
