"""PerceptualLoss: frozen zoo features, user weights, layer names, grey images."""
import pytest
import torch
import torch.nn.functional as F

from trainsdk.gan import PerceptualLoss
from trainsdk.models import create_model

VGG = dict(in_channels=3, num_classes=2, hidden_dim=8)  # vgg11 layout, small dense head (unused here)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(3)
    net = create_model("vgg11", **VGG)
    path = tmp_path_factory.mktemp("w") / "vgg11.pt"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def test_loss_is_the_feature_mse_of_the_user_weights(vgg_file):
    net, path = vgg_file
    loss = PerceptualLoss("vgg11", ["features.4", "features.9"], weights=path, model_kwargs=VGG,
                          layer_weights=[1.0, 0.5])
    assert loss.load_report.ok
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 32, 32, generator=gen), torch.rand(2, 1, 32, 32, generator=gen)
    with torch.no_grad():
        fa = net.features[:10](a.repeat(1, 3, 1, 1))  # grey -> 3 channels by repetition
        fb = net.features[:10](b.repeat(1, 3, 1, 1))
        ha, hb = net.features[:5](a.repeat(1, 3, 1, 1)), net.features[:5](b.repeat(1, 3, 1, 1))
    expected = F.mse_loss(ha, hb) + 0.5 * F.mse_loss(fa, fb)
    torch.testing.assert_close(loss(a, b), expected, rtol=1e-5, atol=1e-7)
    assert loss(a, a).item() == 0.0


def test_frozen_extractor_passes_gradients_to_the_prediction(vgg_file):
    net, _ = vgg_file
    loss = PerceptualLoss(net, ["features.2"])
    assert loss.extractor is not net  # a frozen copy: the user's model is untouched
    assert all(p.requires_grad for p in net.parameters())
    pred = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss.train()(pred, torch.rand(1, 3, 32, 32)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    assert not loss.extractor.training


def test_bad_layers_and_inputs_are_explained(vgg_file):
    net, _ = vgg_file
    with pytest.raises(ValueError, match="no layer 'feature.3'.*did you mean 'features.3'"):
        PerceptualLoss(net, ["feature.3"])
    with pytest.raises(ValueError, match="non-empty list"):
        PerceptualLoss(net, "features.3")
    loss = PerceptualLoss(net, ["features.3"])
    with pytest.raises(ValueError, match="takes 3 channels, got 2"):
        loss(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))
    head = PerceptualLoss(net, ["classifier.0"])
    with pytest.raises(RuntimeError, match="did not run"):
        head(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
