"""Fused residual add + ReLU (the end of every ResNet block).

Eager PyTorch writes ``a + b`` to a new tensor and then runs ReLU over it; the compiled op reads a and b once
and writes the result once. Backward needs only the output (grad * (out > 0), the same for both inputs).
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from . import _extension, reference
from ._checks import check_add_relu
from ._dispatch import use_compiled

__all__ = ["add_relu"]


def add_relu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``relu(a + b)`` for two tensors of the same shape, dtype and device; keeps a's memory format."""
    check_add_relu(a, b)
    if use_compiled(a, b):
        return torch.ops.medcnn.add_relu(a, b)
    return reference.add_relu(a, b)


# --- torch.library registrations ------------------------------------------------------------------------------------
def _fake(a, b):
    return torch.empty_like(a, memory_format=suggest_memory_format(a))


def _backward_fake(grad, out):
    return torch.empty_like(out, memory_format=suggest_memory_format(out))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _backward(ctx, grad):
    (out,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # backward(create_graph=True), e.g. a gradient penalty: differentiable formula
        g = grad * (out > 0).to(grad.dtype)
    else:
        g = torch.ops.medcnn.relu_backward(grad, out)
    return g, g


@_extension.on_load
def _register() -> None:
    torch.library.register_fake("medcnn::add_relu")(_fake)
    torch.library.register_fake("medcnn::relu_backward")(_backward_fake)
    torch.library.register_autograd("medcnn::add_relu", _backward, setup_context=_setup_context)
