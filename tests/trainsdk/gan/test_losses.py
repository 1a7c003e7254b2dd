"""GAN losses against hand computations (math on probabilities, not our own formulas on logits)."""
import math

import pytest
import torch

from trainsdk.gan import auxiliary_class_loss, gradient_difference_loss, gradient_penalty, minimax_d_loss, \
    minimax_g_loss, nonsaturating_g_loss, wgan_critic_loss, wgan_generator_loss

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_minimax_d_loss_is_minus_the_value_function():
    v = (sum(math.log(_sig(r)) for r in REAL.tolist()) / 3
         + sum(math.log(1 - _sig(f)) for f in FAKE.tolist()) / 3)
    assert minimax_d_loss(REAL, FAKE).item() == pytest.approx(-v, rel=1e-6)
    assert minimax_d_loss(REAL[:, None], FAKE[:, None]).item() == pytest.approx(-v, rel=1e-6)  # (N, 1) logits


def test_one_sided_label_smoothing():
    s = 0.1
    real = sum(-(1 - s) * math.log(_sig(r)) - s * math.log(1 - _sig(r)) for r in REAL.tolist()) / 3
    fake = sum(-math.log(1 - _sig(f)) for f in FAKE.tolist()) / 3  # fake targets stay 0
    assert minimax_d_loss(REAL, FAKE, label_smoothing=s).item() == pytest.approx(real + fake, rel=1e-6)
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 0.5\)"):
        minimax_d_loss(REAL, FAKE, label_smoothing=0.5)


def test_generator_losses_by_hand():
    sat = sum(math.log(1 - _sig(f)) for f in FAKE.tolist()) / 3
    nonsat = sum(-math.log(_sig(f)) for f in FAKE.tolist()) / 3
    assert minimax_g_loss(FAKE).item() == pytest.approx(sat, rel=1e-6)
    assert nonsaturating_g_loss(FAKE).item() == pytest.approx(nonsat, rel=1e-6)


def test_saturating_gradient_vanishes_where_the_nonsaturating_one_does_not():
    """D(G(z)) near 0 (a confident discriminator, early training): d/dl log(1 - sigmoid(l)) = -sigmoid(l) -> 0,
    while d/dl -log sigmoid(l) = -(1 - sigmoid(l)) -> -1."""
    logits = torch.full((4,), -10.0, requires_grad=True)  # D(G(z)) = 4.5e-5
    (g_sat,) = torch.autograd.grad(minimax_g_loss(logits), logits)
    (g_non,) = torch.autograd.grad(nonsaturating_g_loss(logits), logits)
    d = _sig(-10.0)
    torch.testing.assert_close(g_sat, torch.full((4,), -d / 4))
    torch.testing.assert_close(g_non, torch.full((4,), -(1 - d) / 4))
    assert g_non.abs().min() / g_sat.abs().max() > 1e4
    both = torch.zeros(4, requires_grad=True)  # at D(G(z)) = 1/2 the two agree
    torch.testing.assert_close(torch.autograd.grad(minimax_g_loss(both), both)[0],
                               torch.autograd.grad(nonsaturating_g_loss(both), both)[0])


def test_losses_stay_finite_for_extreme_logits():
    big = torch.tensor([200.0, -200.0])
    for value in (minimax_d_loss(big, -big), minimax_g_loss(big), nonsaturating_g_loss(-big)):
        assert torch.isfinite(value)
    assert minimax_g_loss(torch.tensor([200.0])).item() == pytest.approx(-200.0)  # log(1 - D) = -softplus(l)


def test_auxiliary_class_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))) + math.log(1 / (2 + math.e))) / 2
    assert auxiliary_class_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="integer class indices"):
        auxiliary_class_loss(logits, torch.tensor([0.0, 1.0]))


def test_wgan_losses():
    assert wgan_critic_loss(REAL, FAKE).item() == pytest.approx(FAKE.mean().item() - REAL.mean().item())
    assert wgan_generator_loss(FAKE).item() == pytest.approx(-FAKE.mean().item())
    with pytest.raises(ValueError, match=r"one score per sample"):
        wgan_critic_loss(torch.zeros(3, 2), FAKE)


def test_gradient_penalty_of_linear_critics():
    """f(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 whatever the samples."""
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(8, 1, 4, 4, generator=gen), torch.randn(8, 1, 4, 4, generator=gen)
    w = torch.randn(16, generator=gen)
    unit = w / w.norm()
    gp = gradient_penalty(lambda x: x.flatten(1) @ unit, real, fake, generator=gen)
    assert gp.item() < 1e-10
    gp2 = gradient_penalty(lambda x: (x.flatten(1) @ (3 * unit))[:, None], real, fake, generator=gen)
    assert gp2.item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_is_differentiable_for_the_critic():
    lin = torch.nn.Linear(6, 1)
    real, fake = torch.randn(5, 6), torch.randn(5, 6)
    gp = gradient_penalty(lin, real, fake, generator=torch.Generator().manual_seed(1))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    w = lin.weight.detach()
    torch.testing.assert_close(lin.weight.grad, 2 * (w.norm() - 1) * w / w.norm())


def test_gradient_difference_loss():
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(2, 1, 8, 8, generator=gen)
    assert gradient_difference_loss(img, img).item() == 0.0
    assert gradient_difference_loss(img + 5.0, img).item() == pytest.approx(0.0, abs=1e-10)  # offsets ignored
    # by hand: a step edge of height 1 in the target, none in the prediction
    target = torch.zeros(1, 1, 4, 4)
    target[..., 2:] = 1.0
    pred = torch.zeros(1, 1, 4, 4)
    # width axis: 4x3 differences, one column of |1 - 0|^2; height axis: none
    assert gradient_difference_loss(pred, target).item() == pytest.approx(4 / 12)
    assert gradient_difference_loss(pred, target, alpha=1.0).item() == pytest.approx(4 / 12)
    vol = torch.randn(1, 1, 4, 4, 4, generator=gen)
    assert gradient_difference_loss(vol, vol.flip(-1)).item() > 0
    with pytest.raises(ValueError, match="share a"):
        gradient_difference_loss(img, img[:, :, :4])
