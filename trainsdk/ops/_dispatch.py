"""Which implementation a call takes: the compiled op, or the pure-PyTorch reference.

The compiled op runs in eager mode, under ``torch.compile`` and under ``torch.export`` (its fake kernel lets both
trace it without running it). The reference runs when the extension is not in use, for devices/dtypes without
compiled kernels (e.g. float16), under TorchScript tracing, and during ONNX export, where it lowers to standard
ONNX operators (BatchNormalization, Relu, Add, ...) that any runtime executes without a custom op.
"""
from __future__ import annotations

import torch

from . import _extension

__all__ = ["use_compiled", "onnx_exporting", "KERNEL_DTYPES"]

KERNEL_DTYPES = (torch.float32, torch.float64)


def onnx_exporting() -> bool:
    """True during ``torch.onnx.export`` (both the torch.export-based and the TorchScript exporter)."""
    return torch.onnx.is_in_onnx_export()


def use_compiled(*tensors: torch.Tensor) -> bool:
    status = _extension.load()
    if not status.compiled:
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or onnx_exporting():
        return False
    return all(t.device.type in status.devices and t.dtype in KERNEL_DTYPES for t in tensors)
