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

__all__ = ["local_response_norm", "batch_norm_act", "activation", "add_relu", "bias_act"]


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
