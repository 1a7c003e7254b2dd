"""Fused cross-channel local response normalization (AlexNet, GoogLeNet).

``torch.nn.LocalResponseNorm`` is a Python composite of about seven full-size ops (square, pad, average pool,
scale, add, pow, divide) and autograd keeps their intermediates; the compiled op makes one sweep over the channels
with a running window sum, forward and backward, and keeps only its input for backward.

During ONNX export an odd ``size`` on a 4-D float32 input becomes the standard ONNX ``LRN`` operator (same
formula: alpha divided by size, bias = k); even sizes (whose window ONNX centres differently) and other inputs
export as the reference composite.
"""
from __future__ import annotations

import torch

from . import _extension, reference
from ._checks import check_lrn
from ._dispatch import onnx_exporting, use_compiled

__all__ = ["local_response_norm"]


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """Same signature and result as ``torch.nn.functional.local_response_norm``; x: (N, C, *)."""
    check_lrn(x, size, alpha, beta, k)
    if onnx_exporting() and _onnx_lrn_applies(x, size):
        return torch.onnx.ops.symbolic("LRN", (x,), {"size": size, "alpha": float(alpha), "beta": float(beta),
                                                     "bias": float(k)}, dtype=x.dtype, shape=x.shape)
    if use_compiled(x):
        return torch.ops.medcnn.lrn(x, size, float(alpha), float(beta), float(k))
    return reference.local_response_norm(x, size, alpha, beta, k)


def _onnx_lrn_applies(x: torch.Tensor, size: int) -> bool:
    # ONNX's window is [c - floor((size-1)/2), c + ceil((size-1)/2)]: PyTorch's only for odd sizes.
    # ONNX Runtime implements LRN for 4-D float32. torch.onnx.ops (torch >= 2.8) serves the torch.export-based
    # exporter only; the TorchScript exporter (tracing) gets the reference composite.
    return (size % 2 == 1 and x.dim() == 4 and x.dtype == torch.float32 and not torch.jit.is_tracing()
            and hasattr(torch.onnx, "ops"))


# --- torch.library registrations (run once the compiled library is loaded) -----------------------------------------
def _fake(x, size, alpha, beta, k):
    torch._check(x.dim() >= 3, lambda: "medcnn::lrn: x must have at least 3 dimensions")
    return x.new_empty(x.shape)  # contiguous, like the kernel's output


def _backward_fake(grad, x, size, alpha, beta, k):
    return x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k = inputs
    ctx.save_for_backward(x)  # only x: the window sums are recomputed in backward
    ctx.params = (size, alpha, beta, k)


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.medcnn.lrn_backward(grad, x, *ctx.params), None, None, None, None


@_extension.on_load
def _register() -> None:
    torch.library.register_fake("medcnn::lrn")(_fake)
    torch.library.register_fake("medcnn::lrn_backward")(_backward_fake)
    torch.library.register_autograd("medcnn::lrn", _backward, setup_context=_setup_context)
