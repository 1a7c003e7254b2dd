"""Argument checks of the fused ops, in Python, mirroring ``cpp_ext/csrc/checks.h``.

They run before either implementation (compiled or reference), so a bad call fails the same way with or without
the extension: ``TypeError`` for dtypes, ``ValueError`` for shapes and values, the message naming the op and
the argument. Only static properties (dims, dtypes, plain numbers) are checked, so tracing stays graph-friendly.
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["check_lrn", "check_bn_act", "check_add_relu", "check_bias_act", "check_affine_warp", "ACTS", "FLOATING",
           "WARP_MODES", "WARP_PADDINGS", "check_soft_dice_stats", "check_soft_dice_loss", "DICE_ACTIVATIONS",
           "REDUCTIONS"]

ACTS = ("identity", "relu", "leaky_relu")
WARP_MODES = ("bilinear", "nearest")
WARP_PADDINGS = ("zeros", "border", "reflection")
DICE_ACTIVATIONS = ("softmax", "sigmoid", "none")
REDUCTIONS = ("mean", "sum", "none")
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


def check_affine_warp(image: Any, theta: Any, mask: Any, mode: Any, padding_mode: Any, align_corners: Any) -> None:
    op = "medcnn::affine_warp"
    _tensor(op, "image", image)
    if image.dim() not in (4, 5):
        raise ValueError(f"{op}: image must be (N, C, H, W) or (N, C, D, H, W), got shape {tuple(image.shape)}")
    if any(s == 0 for s in image.shape[2:]):
        raise ValueError(f"{op}: image must have non-empty spatial dimensions, got shape {tuple(image.shape)}")
    _tensor(op, "theta", theta)
    _same(op, "image", image, "theta", theta, shape=False)
    dims, n = image.dim() - 2, image.shape[0]
    if theta.dim() != 3 or tuple(theta.shape) != (n, dims, dims + 1):
        raise ValueError(f"{op}: theta must have shape ({n}, {dims}, {dims + 1}) for an image of shape "
                         f"{tuple(image.shape)}, got {tuple(theta.shape)}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{op}: mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if mask.device != image.device:
            raise ValueError(f"{op}: image and mask must be on the same device, got {image.device} and {mask.device}")
        if mask.dim() != image.dim() or mask.shape[0] != n or mask.shape[2:] != image.shape[2:]:
            raise ValueError(f"{op}: mask must have the image's batch size and spatial size (N, C_mask, *spatial), "
                             f"got image {tuple(image.shape)} and mask {tuple(mask.shape)}")
        if mask.dtype.is_complex or mask.dtype.itemsize not in (1, 2, 4, 8) or "qint" in str(mask.dtype):
            raise TypeError(f"{op}: mask must be a real (bool, integer or floating-point) tensor, got {mask.dtype}")
    if mode not in WARP_MODES:
        raise ValueError(f"{op}: mode must be 'bilinear' (trilinear for 3-D) or 'nearest', got {mode!r}")
    if padding_mode not in WARP_PADDINGS:
        raise ValueError(f"{op}: padding_mode must be one of 'zeros', 'border', 'reflection', got {padding_mode!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"{op}: align_corners must be a bool, got {type(align_corners).__name__}")


def check_soft_dice_stats(logits: Any, target: Any, activation: Any) -> None:
    """As check_soft_dice_args (checks.h), for the target as the caller gives it: any integer or bool dtype is a
    label map, any floating dtype a dense target (soft_dice_stats converts both to what the kernel takes)."""
    op = "medcnn::soft_dice_stats"
    _tensor(op, "logits", logits)
    _dims(op, "logits", logits, 3)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != logits.device:
        raise ValueError(f"{op}: logits and target must be on the same device, got {logits.device} and "
                         f"{target.device}")
    if activation not in DICE_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {list(DICE_ACTIVATIONS)}, got {activation!r}")
    if activation == "softmax" and logits.shape[1] == 1:
        raise ValueError(f"{op}: softmax over a single channel is constant 1 (no gradient); use "
                         f"activation='sigmoid' for one-channel (binary) logits, got shape {tuple(logits.shape)}")
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"{op}: logits and target must have the same shape, got {tuple(logits.shape)} and "
                             f"{tuple(target.shape)} (a floating-point target is dense: one-hot or soft labels)")
        return
    if target.is_complex():
        raise TypeError(f"{op}: target must be an integer label map or a floating-point dense target, got "
                        f"{target.dtype}")
    n, spatial = logits.shape[0], tuple(logits.shape[2:])
    if tuple(target.shape) not in ((n, *spatial), (n, 1, *spatial)):
        raise ValueError(f"{op}: a label-map target must have shape (N, *spatial) or (N, 1, *spatial) for logits of "
                         f"shape {tuple(logits.shape)}, got {tuple(target.shape)}")


def _class_weight(op: str, weight: Any, channels: int, kept: int, device: torch.device) -> None:
    lengths = sorted({channels, kept})
    if isinstance(weight, torch.Tensor):
        if weight.is_complex() or weight.dtype == torch.bool:
            raise TypeError(f"{op}: weight must be real numbers, got {weight.dtype}")
        if weight.device != device:
            raise ValueError(f"{op}: logits and weight must be on the same device, got {device} and {weight.device}")
        if weight.dim() == 0 or (weight.dim() == 1 and weight.shape[0] in lengths):
            return  # values (finite, >= 0) are checked in eager mode by soft_dice_loss
        raise ValueError(f"{op}: weight must be a number or have one value per class ({' or '.join(map(str, lengths))}"
                         f" values for {channels} channels), got shape {tuple(weight.shape)}")
    values = list(weight) if isinstance(weight, (list, tuple)) else [weight]
    for v in values:
        _finite(op, "weight", v)
        if v < 0:
            raise ValueError(f"{op}: weight must be >= 0, got {weight}")
    if isinstance(weight, (list, tuple)) and len(values) not in lengths:
        raise ValueError(f"{op}: weight must be a number or have one value per class ({' or '.join(map(str, lengths))}"
                         f" values for {channels} channels), got {len(values)} values")


def check_soft_dice_loss(logits: torch.Tensor, include_background: Any, smooth_nr: Any, smooth_dr: Any, batch: Any,
                         reduction: Any, weight: Any) -> None:
    """The loss's own arguments (after check_soft_dice_stats has checked the tensors)."""
    op = "medcnn::soft_dice_loss"
    for name, v in (("include_background", include_background), ("batch", batch)):
        if not isinstance(v, bool):
            raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    for name, v in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        _finite(op, name, v)
        if v < 0:
            raise ValueError(f"{op}: {name} must be >= 0, got {v}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    channels = logits.shape[1]
    if not include_background and channels == 1:
        raise ValueError(f"{op}: include_background=False drops channel 0, which leaves no channel of logits with "
                         f"shape {tuple(logits.shape)}")
    if weight is not None:
        _class_weight(op, weight, channels, channels if include_background else channels - 1, logits.device)
