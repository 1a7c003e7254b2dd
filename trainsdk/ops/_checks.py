"""Argument checks of the fused ops, in Python, mirroring ``cpp_ext/csrc/checks.h``.

They run before either implementation (compiled or reference), so a bad call fails the same way with or without
the extension: ``TypeError`` for dtypes, ``ValueError`` for shapes and values, the message naming the op and
the argument. Only static properties (dims, dtypes, plain numbers) are checked, so tracing stays graph-friendly.
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["check_lrn", "check_bn_act", "check_add_relu", "check_bias_act", "ACTS", "FLOATING"]

ACTS = ("identity", "relu", "leaky_relu")
FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)  # half types: reference path only


def _tensor(op: str, name: str, t: Any) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOATING:
        raise TypeError(f"{op}: {name} must be a floating-point tensor (float32 or float64), got {t.dtype}")


def _int_at_least(op: str, name: str, v: Any, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{op}: {name} must be >= {low}, got {v}")


def _finite(op: str, name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{op}: {name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{op}: {name} must be finite, got {v}")


def _dims(op: str, name: str, t: torch.Tensor, low: int) -> None:
    if t.dim() < low:
        raise ValueError(f"{op}: {name} must have at least {low} dimensions (N, C, *spatial), got shape "
                         f"{tuple(t.shape)}")


def _same(op: str, na: str, a: torch.Tensor, nb: str, b: torch.Tensor, shape: bool = True) -> None:
    if a.device != b.device:
        raise ValueError(f"{op}: {na} and {nb} must be on the same device, got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {na} and {nb} must have the same dtype, got {a.dtype} and {b.dtype}")
    if shape and a.shape != b.shape:
        raise ValueError(f"{op}: {na} and {nb} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_lrn(x: Any, size: Any, alpha: Any, beta: Any, k: Any) -> None:
    op = "medcnn::lrn"
    _tensor(op, "x", x)
    _dims(op, "x", x, 3)
    _int_at_least(op, "size", size, 1)
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        _finite(op, name, v)


def check_bn_act(x: Any, running_mean, running_var, weight, bias, training: bool, momentum, eps, act: Any,
                 negative_slope: Any, inplace: bool) -> None:
    op = "medcnn::bn_act"
    _tensor(op, "x", x)
    _dims(op, "x", x, 2)
    for name, p in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if p is None:
            continue
        _tensor(op, name, p)
        if p.dim() != 1 or p.shape[0] != x.shape[1]:
            raise ValueError(f"{op}: {name} must have shape ({x.shape[1]},) for an input with {x.shape[1]} "
                             f"channels, got {tuple(p.shape)}")
        _same(op, "x", x, name, p, shape=False)
    if act not in ACTS:
        raise ValueError(f"{op}: act must be one of {list(ACTS)}, got {act!r}")
    _finite(op, "eps", eps)
    if eps <= 0:
        raise ValueError(f"{op}: eps must be positive, got {eps}")
    _finite(op, "negative_slope", negative_slope)
    if momentum is not None:
        _finite(op, "momentum", momentum)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: running_mean and running_var are required when training=False")
    if inplace and not (act == "identity" or (act == "leaky_relu" and negative_slope > 0)):
        raise ValueError(f"{op}: the in-place / output-saving form needs an invertible activation ('identity', or "
                         f"'leaky_relu' with negative_slope > 0), got act={act!r}, negative_slope={negative_slope}")
    if training and x.numel() > 0 and x.numel() // x.shape[1] == 1:  # same rule as F.batch_norm
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")


def check_add_relu(a: Any, b: Any) -> None:
    op = "medcnn::add_relu"
    _tensor(op, "a", a)
    _tensor(op, "b", b)
    _same(op, "a", a, "b", b)


def check_bias_act(x: Any, bias: Any, act: Any, negative_slope: Any, gain: Any) -> None:
    op = "medcnn::bias_act"
    _tensor(op, "x", x)
    _dims(op, "x", x, 2)
    if bias is not None:
        _tensor(op, "bias", bias)
        if bias.dim() != 1 or bias.shape[0] != x.shape[1]:
            raise ValueError(f"{op}: bias must have shape ({x.shape[1]},) for an input with {x.shape[1]} "
                             f"channels, got {tuple(bias.shape)}")
        _same(op, "x", x, "bias", bias, shape=False)
    if act not in ACTS:
        raise ValueError(f"{op}: act must be one of {list(ACTS)}, got {act!r}")
    _finite(op, "negative_slope", negative_slope)
    if act == "leaky_relu" and negative_slope < 0:
        raise ValueError(f"{op}: negative_slope must be >= 0 (backward recovers the activation's slope from the "
                         f"sign of the output), got {negative_slope}")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)):
        raise TypeError(f"{op}: gain must be a number, got {type(gain).__name__}")
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"{op}: gain must be finite and > 0 (backward recovers the activation's slope from the "
                         f"sign of the output), got {gain}")
