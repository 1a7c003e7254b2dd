"""Fused bias + activation with gain (StyleGAN's ``fused_bias_act``): ``act(x + bias[c]) * gain``.

Eager PyTorch makes three passes with two full-size intermediates (add, activation, mul); the compiled op reads x
once and writes y once. Backward works from the saved output alone (dx = grad * gain * act'(out), dbias = the
per-channel sum of dx, in the same pass): that needs the output to carry the sign of the activation's input, hence
``gain > 0`` and, for leaky ReLU, ``negative_slope >= 0`` (both checked, with a ValueError saying why).
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from . import _extension, reference
from ._checks import check_bias_act
from ._dispatch import use_compiled

__all__ = ["bias_act"]


def bias_act(x: torch.Tensor, bias: torch.Tensor | None = None, act: str = "leaky_relu",
             negative_slope: float = 0.2, gain: float = 1.0) -> torch.Tensor:
    """``act(x + bias[c]) * gain`` for x of shape (N, C, *) and bias of shape (C,) or None.

    act: ``"identity"``, ``"relu"`` or ``"leaky_relu"`` (with ``negative_slope`` >= 0); gain > 0 (StyleGAN uses
    ``sqrt(2)`` with leaky ReLU 0.2). Keeps x's memory format (contiguous or channels-last).
    """
    check_bias_act(x, bias, act, negative_slope, gain)
    tensors = (x,) if bias is None else (x, bias)
    if use_compiled(*tensors):
        return torch.ops.medcnn.bias_act(x, bias, act, float(negative_slope), float(gain))
    return reference.bias_act(x, bias, act, negative_slope, gain)


# --- torch.library registrations ------------------------------------------------------------------------------------
def _fake(x, bias, act, negative_slope, gain):
    return torch.empty_like(x, memory_format=suggest_memory_format(x))


def _backward_fake(grad, out, act, negative_slope, gain):
    return (torch.empty_like(out, memory_format=suggest_memory_format(out)),
            out.new_empty((out.shape[1],)))


def _setup_context(ctx, inputs, output):
    x, bias, act, negative_slope, gain = inputs
    ctx.save_for_backward(output)
    ctx.has_bias = bias is not None
    ctx.args = (act, negative_slope, gain)


def _differentiable_backward(grad, out, act, negative_slope, gain):
    """dx = grad * gain * act'(out) in autograd-tracked ops (act' is piecewise constant, so its own derivative is
    zero almost everywhere): double backward through the fused op gives the eager composite's gradients."""
    slope = {"identity": None, "relu": 0.0, "leaky_relu": float(negative_slope)}[act]
    dx = grad * gain if slope is None else torch.where(out > 0, grad, grad * slope) * gain
    dbias = dx.sum(dim=[d for d in range(dx.dim()) if d != 1]) if dx.dim() > 1 else dx
    return dx, dbias


def _backward(ctx, grad):
    (out,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # backward(create_graph=True), e.g. WGAN-GP's penalty: differentiable formula
        dx, dbias = _differentiable_backward(grad, out, *ctx.args)
    else:
        dx, dbias = torch.ops.medcnn.bias_act_backward(grad, out, *ctx.args)
    return dx, (dbias if ctx.has_bias else None), None, None, None


@_extension.on_load
def _register() -> None:
    torch.library.register_fake("medcnn::bias_act")(_fake)
    torch.library.register_fake("medcnn::bias_act_backward")(_backward_fake)
    torch.library.register_autograd("medcnn::bias_act", _backward, setup_context=_setup_context)
