"""Fused batch norm + activation (identity, ReLU, LeakyReLU), training and eval, with an InPlace-ABN form.

Eager PyTorch runs batch norm (statistics, then normalize) and the activation as separate full passes over
memory; the compiled op computes statistics in one read and normalizes + activates in one read/write, and its
backward recomputes the activation's mask instead of reading a stored one.

InPlace-ABN form (``inplace=True``, LeakyReLU with slope > 0 or identity): the output overwrites the input and
autograd keeps only the output; backward inverts the activation and the affine transform to recover the
normalized input (Rota Bulò et al. 2018). The unfused pair keeps both the batch norm's input and the activation's
output for backward, so this saves one activation-sized tensor per layer (``inplace_abn_bytes_saved``). Channels
whose weight is exactly 0 cannot be inverted (backward raises); keep such layers in the standard form.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import _extension, reference
from ._checks import check_bn_act
from ._dispatch import use_compiled

__all__ = ["batch_norm_act", "inplace_abn_bytes_saved"]


def batch_norm_act(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                   weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5, act: str = "relu", negative_slope: float = 0.01,
                   inplace: bool = False) -> torch.Tensor:
    """``act(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps))``; x: (N, C, *).

    Same arguments and running-statistics update as ``F.batch_norm``. ``inplace=True`` selects the InPlace-ABN
    form (see the module docstring): in eager mode x is overwritten with the output, and under torch.compile /
    torch.export the functional op that keeps only the output runs instead.
    """
    check_bn_act(x, running_mean, running_var, weight, bias, training, momentum, eps, act, negative_slope, inplace)
    if not use_compiled(x):
        return reference.batch_norm_act(x, running_mean, running_var, weight, bias, training, momentum, eps, act,
                                        negative_slope)
    eps, slope = float(eps), float(negative_slope)
    stats = running_mean, running_var
    if inplace and not torch.compiler.is_compiling():
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            out, mean, var = _InplaceABN.apply(x, weight, bias, *stats, training, eps, act, slope)
        else:
            mean, var = torch.ops.medcnn.bn_act_(x, weight, bias, *stats, training, eps, act, slope)
            out = x
    else:
        out, mean, var = torch.ops.medcnn.bn_act(x, weight, bias, *stats, training, eps, act, slope, inplace)
    if training and running_mean is not None and running_var is not None and x.numel() > 0:
        _update_running_stats(running_mean, running_var, mean, var, float(momentum), x.numel() // x.shape[1])
    return out


def _update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                          var: torch.Tensor, momentum: float, count: int) -> None:
    """nn.BatchNorm's update: running = (1 - momentum) * running + momentum * batch, variance unbiased."""
    with torch.no_grad():
        running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1.0 - momentum).add_(var, alpha=momentum * count / max(count - 1, 1))


def inplace_abn_bytes_saved(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Activation memory the InPlace-ABN form saves per call, in bytes, against BatchNorm2d + LeakyReLU.

    The unfused pair keeps the batch norm's input x and the activation's output y for backward (y is also what
    the next layer keeps); the in-place form keeps only y, so one tensor of ``shape`` is saved. The tests measure
    this with ``trainsdk.ops.saved_tensor_bytes``.
    """
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


class _InplaceABN(torch.autograd.Function):
    """Eager in-place form: ``bn_act_`` overwrites x, autograd keeps x (now the output) and inverts it."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, eps, act, slope):
        mean, var = torch.ops.medcnn.bn_act_(x, weight, bias, running_mean, running_var, training, eps, act, slope)
        ctx.mark_dirty(x)
        ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.cfg = (training, eps, act, slope)
        return x, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        y, weight, bias, mean, var = ctx.saved_tensors
        dx, dw, db = torch.ops.medcnn.bn_act_backward(grad, y, weight, bias, mean, var, *ctx.cfg, True)
        return (dx, dw if ctx.needs_input_grad[1] else None, db if ctx.needs_input_grad[2] else None,
                None, None, None, None, None, None)


# --- torch.library registrations ------------------------------------------------------------------------------------
def _fake(x, weight, bias, running_mean, running_var, training, eps, act, negative_slope, save_output):
    c = x.shape[1]
    return x.new_empty(x.shape), x.new_empty(c), x.new_empty(c)


def _inplace_fake(x, weight, bias, running_mean, running_var, training, eps, act, negative_slope):
    c = x.shape[1]
    return x.new_empty(c), x.new_empty(c)


def _backward_fake(grad, saved, weight, bias, mean, var, training, eps, act, negative_slope, saved_is_output):
    c = saved.shape[1]
    return saved.new_empty(saved.shape), saved.new_empty(c), saved.new_empty(c)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _rm, _rv, training, eps, act, slope, save_output = inputs
    out, mean, var = output
    ctx.mark_non_differentiable(mean, var)
    ctx.save_for_backward(out if save_output else x, weight, bias, mean, var)
    ctx.cfg = (training, eps, act, slope, save_output)


def _backward(ctx, grad, _grad_mean, _grad_var):
    saved, weight, bias, mean, var = ctx.saved_tensors
    dx, dw, db = torch.ops.medcnn.bn_act_backward(grad, saved, weight, bias, mean, var, *ctx.cfg)
    return (dx, dw if weight is not None else None, db if bias is not None else None,
            None, None, None, None, None, None, None)


@_extension.on_load
def _register() -> None:
    torch.library.register_fake("medcnn::bn_act")(_fake)
    torch.library.register_fake("medcnn::bn_act_")(_inplace_fake)
    torch.library.register_fake("medcnn::bn_act_backward")(_backward_fake)
    torch.library.register_autograd("medcnn::bn_act", _backward, setup_context=_setup_context)
