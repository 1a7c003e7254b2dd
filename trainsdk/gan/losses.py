"""GAN losses: the lecture's minimax game and its non-saturating generator loss, AC-GAN's auxiliary class loss,
WGAN-GP's critic loss and gradient penalty, and the image-gradient-difference loss of Nie et al. (2017).

Discriminator outputs are logits (before the sigmoid): ``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)``,
which stay finite where ``log(sigmoid(l))`` would underflow. Every loss is a mean over the batch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["minimax_d_loss", "minimax_g_loss", "nonsaturating_g_loss", "auxiliary_class_loss", "wgan_critic_loss",
           "wgan_generator_loss", "gradient_penalty", "gradient_difference_loss"]


def _scores(name: str, x) -> torch.Tensor:
    """One score per sample: (N,) or (N, 1) -> (N,)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point (logits or critic scores), got dtype {x.dtype}")
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"{name} must hold one score per sample, shape (N,) or (N, 1), got {tuple(x.shape)}")
    return x


def minimax_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """``-(E[log D(x)] + E[log(1 - D(G(z)))])``: the discriminator ascends the value function, so it descends this.

    ``label_smoothing`` s is one-sided (Salimans et al. 2016): real targets become 1 - s, fake targets stay 0, so
    the discriminator is never rewarded for over-confidence on real data and still pushes fakes down.
    """
    real, fake = _scores("real_logits", real_logits), _scores("fake_logits", fake_logits)
    if isinstance(label_smoothing, bool) or not 0.0 <= float(label_smoothing) < 0.5:
        raise ValueError(f"label_smoothing must be a number in [0, 0.5), got {label_smoothing!r}")
    real_target = torch.full_like(real, 1.0 - float(label_smoothing))
    return (F.binary_cross_entropy_with_logits(real, real_target)
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def minimax_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``E[log(1 - D(G(z)))]``, which the generator descends (Goodfellow et al.'s original, saturating form).

    Its gradient with respect to the logit is ``-D(G(z))``: when the discriminator rejects the fakes confidently
    (D(G(z)) near 0, as early in training) the generator receives almost no gradient.
    """
    return -F.softplus(_scores("fake_logits", fake_logits)).mean()


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-E[log D(G(z))]``: the same fixed point, but the gradient ``-(1 - D(G(z)))`` is largest exactly where the
    saturating loss's vanishes (Goodfellow et al. 2014, section 3)."""
    return F.softplus(-_scores("fake_logits", fake_logits)).mean()


def auxiliary_class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN's ``-E[log P(C = c | X)]`` (cross-entropy of the class head), for real and for generated images."""
    if not isinstance(class_logits, torch.Tensor) or class_logits.dim() != 2:
        got = tuple(class_logits.shape) if isinstance(class_logits, torch.Tensor) else type(class_logits).__name__
        raise ValueError(f"class_logits must be a (N, K) tensor, got {got}")
    if not isinstance(labels, torch.Tensor) or labels.shape != class_logits.shape[:1] or labels.is_floating_point():
        raise ValueError(f"labels must be {class_logits.shape[0]} integer class indices, got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    return F.cross_entropy(class_logits, labels.long())


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``E[C(G(z))] - E[C(x)]``: minus the critic's estimate of the Wasserstein-1 distance (Arjovsky et al.)."""
    return _scores("fake_scores", fake_scores).mean() - _scores("real_scores", real_scores).mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[C(G(z))]``."""
    return -_scores("fake_scores", fake_scores).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``E[(||grad C(x_hat)||_2 - 1)^2]`` on ``x_hat = e * real + (1 - e) * fake``, ``e ~ U[0, 1]`` per sample
    (Gulrajani et al. 2017): a soft 1-Lipschitz constraint where the critic is evaluated. Differentiable (for
    the critic's update); multiply by the weight (10 in the paper) yourself. ``critic`` is any callable, e.g.
    ``lambda x: D(torch.cat([source, x], 1))`` for a conditional critic.
    """
    if not isinstance(real, torch.Tensor) or not isinstance(fake, torch.Tensor) or real.shape != fake.shape:
        raise ValueError(f"real and fake must be tensors of one shape, got "
                         f"{getattr(real, 'shape', type(real))} and {getattr(fake, 'shape', type(fake))}")
    gen_device = generator.device if generator is not None else real.device
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device=gen_device,
                     dtype=real.dtype).to(real.device)  # (N, 1, 1, ...)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = _scores("critic(x_hat)", critic(x_hat))
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()  # the offset keeps sqrt's gradient finite at 0
    return (norm - 1.0).pow(2).mean()


def gradient_difference_loss(pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0) -> torch.Tensor:
    """Image-gradient-difference loss (Mathieu et al. 2016; Nie et al. 2017 with ``alpha=2``): per spatial axis,
    ``| |d target| - |d pred| |^alpha`` of forward differences, averaged, summed over axes. It penalises blurred
    edges that an L2 loss tolerates, and ignores a constant intensity offset. (N, C, H, W) or (N, C, D, H, W).
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("pred and target must be torch tensors")
    if pred.shape != target.shape or pred.dim() not in (4, 5):
        raise ValueError(f"pred and target must share a (N, C, H, W) or (N, C, D, H, W) shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if isinstance(alpha, bool) or not float(alpha) > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    total = pred.new_zeros(())
    for axis in range(2, pred.dim()):
        if pred.shape[axis] < 2:
            continue
        d_pred = pred.diff(dim=axis).abs()
        d_target = target.diff(dim=axis).abs()
        total = total + (d_target - d_pred).abs().pow(alpha).mean()
    return total
