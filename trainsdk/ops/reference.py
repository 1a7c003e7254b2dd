"""Pure-PyTorch references of the fused ops: the specification the kernels are tested against, the fallback when
the extension is disabled (``MEDCNN_NO_EXT=1``) or has no kernel for a device/dtype, and what ONNX export and
TorchScript tracing see (standard ops only).

Each function computes the same result as its fused op from standard differentiable ops; gradients come from
autograd.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["local_response_norm", "batch_norm_act", "activation", "add_relu", "bias_act", "affine_warp",
           "dice_activation", "one_hot_labels", "soft_dice_stats", "dice_loss_from_stats",
           "soft_dice_loss"]


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """``x / (k + alpha / size * window_sum(x^2)) ** beta`` over channels, as ``torch.nn.LocalResponseNorm``.

    The window of channel c is [c - size // 2, c + (size - 1) // 2]; channels outside [0, C) count as zero.
    Written as a sum of ``size`` shifted slices (not F.local_response_norm's avg-pool) so it is an independent
    statement of the formula.
    """
    n, c = x.shape[0], x.shape[1]
    s = math.prod(x.shape[2:])
    sq = (x * x).reshape(n, c, s)  # (N, C, S)
    padded = F.pad(sq, (0, 0, size // 2, (size - 1) // 2))  # (N, C + size - 1, S)
    window = padded[:, 0:c]
    for j in range(1, size):
        window = window + padded[:, j:j + c]  # (N, C, S)
    scale = (k + (alpha / size) * window).pow(beta)
    return x / scale.reshape(x.shape)


def activation(z: torch.Tensor, act: str, negative_slope: float = 0.01) -> torch.Tensor:
    if act == "relu":
        return F.relu(z)
    if act == "leaky_relu":
        return F.leaky_relu(z, negative_slope)
    return z


def batch_norm_act(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                   weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5, act: str = "relu",
                   negative_slope: float = 0.01) -> torch.Tensor:
    """``act(F.batch_norm(...))``: normalizes and, when training, updates the running statistics in place."""
    z = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return activation(z, act, negative_slope)


def add_relu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``relu(a + b)``: the end of a residual block."""
    return F.relu(a + b)


def bias_act(x: torch.Tensor, bias: torch.Tensor | None = None, act: str = "leaky_relu",
             negative_slope: float = 0.2, gain: float = 1.0) -> torch.Tensor:
    """``act(x + bias[c]) * gain`` over (N, C, *) (StyleGAN's fused_bias_act); ONNX: Add + activation + Mul."""
    if bias is not None:
        x = x + bias.reshape((1, -1) + (1,) * (x.dim() - 2))
    y = activation(x, act, negative_slope)
    return y * gain if gain != 1.0 else y


def affine_warp(image: torch.Tensor, theta: torch.Tensor, mask: torch.Tensor | None = None, mode: str = "bilinear",
                padding_mode: str = "zeros", align_corners: bool = False):
    """``F.grid_sample(image, F.affine_grid(theta, image.shape))``; the mask by nearest on the same grid.

    The mask goes through grid_sample as floating point (the image's dtype, float32 for half images) and back to
    its dtype: exact for labels up to 2**24 in float32 (the compiled op copies raw values, exact for any).
    """
    grid = F.affine_grid(theta, list(image.shape), align_corners=align_corners)  # (N, *spatial, DIM)
    out = F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    if mask is None:
        return out
    dt = grid.dtype if grid.dtype in (torch.float32, torch.float64) else torch.float32
    warped = F.grid_sample(mask.detach().to(dt), grid.detach().to(dt), mode="nearest", padding_mode=padding_mode,
                           align_corners=align_corners)
    return out, warped.to(mask.dtype)


def dice_activation(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Probabilities from logits (N, C, *): softmax over C, per-channel sigmoid, or the logits as they are."""
    if activation == "softmax":
        return torch.softmax(logits, 1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def soft_dice_stats(logits: torch.Tensor, target: torch.Tensor,
                    activation: str = "softmax") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-(n, c) sums over the spatial dims: ``(sum p*g, sum p, sum g)``, each (N, C).

    target: an int64 label map (N, *spatial) or (N, 1, *spatial) (one-hot implied, by comparison with the class
    index: labels outside [0, C) match no class), or a dense target of the logits' shape.
    """
    p = dice_activation(logits, activation)  # (N, C, *spatial)
    g = target if target.is_floating_point() else one_hot_labels(target, logits)
    dims = tuple(range(2, logits.dim()))
    return (p * g).sum(dims), p.sum(dims), g.sum(dims)


def one_hot_labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """One-hot (N, C, *spatial) in the logits' dtype of a label map (N, *spatial) or (N, 1, *spatial), by comparison
    with the class index (labels outside [0, C) match no class)."""
    labels = target if target.dim() == logits.dim() - 1 else target[:, 0]  # (N, *spatial)
    classes = torch.arange(logits.shape[1], device=logits.device).reshape((1, -1) + (1,) * (logits.dim() - 2))
    return (labels.unsqueeze(1) == classes).to(logits.dtype)


def dice_loss_from_stats(inter: torch.Tensor, psum: torch.Tensor, gsum: torch.Tensor, *,
                         include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                         batch: bool = False, reduction: str = "mean",
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """MONAI's DiceLoss formula on the (N, C) sums: ``1 - (2 I + smooth_nr) / (P + G + smooth_dr)`` per (n, c), or
    per c with the sums taken over the batch too (``batch``); channel 0 dropped unless ``include_background``;
    times ``weight`` (one value per kept channel); then mean / sum / none ((N, C') or (C',))."""
    if not include_background:
        inter, psum, gsum = inter[:, 1:], psum[:, 1:], gsum[:, 1:]
    if batch:
        inter, psum, gsum = inter.sum(0), psum.sum(0), gsum.sum(0)
    f = 1 - (2 * inter + smooth_nr) / (psum + gsum + smooth_dr)  # (N, C') or (C',)
    if weight is not None:
        f = f * weight
    if reduction == "mean":
        return f.mean()
    if reduction == "sum":
        return f.sum()
    return f


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, activation: str = "softmax",
                   include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                   batch: bool = False, reduction: str = "mean", weight: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice loss as a PyTorch composite (probabilities, one-hot, products and sums all materialized)."""
    return dice_loss_from_stats(*soft_dice_stats(logits, target, activation), include_background=include_background,
                                smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch, reduction=reduction,
                                weight=weight)
