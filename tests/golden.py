"""Deterministic weights and inputs shared by the golden-fixture generator and the tests.

The fixture ``tests/fixtures/torchvision_golden.json`` was made by ``tests/fixtures/make_torchvision_golden.py`` in
a separate environment that has torchvision: for each model it records every state_dict key with its shape, the
parameter count, and the logits torchvision's model gives when every tensor is filled by ``fill_state_dict``.
A zoo model that loads the same keys and gives the same logits computes exactly what torchvision's does.
"""
from __future__ import annotations

import math

import torch


def _wave(numel: int, phase: float) -> torch.Tensor:
    return torch.sin(torch.arange(numel, dtype=torch.float64) * 0.7311 + phase)


def fill_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A deterministic value for every float tensor, keyed only by name and shape."""
    out = {}
    for i, key in enumerate(sorted(state)):
        t = state[key]
        if not t.is_floating_point():
            out[key] = t.clone()
            continue
        phase = float(sum(map(ord, key)) % 97) / 7.0
        w = _wave(t.numel(), phase)
        if key.endswith("running_var"):
            w = 1.0 + 0.5 * w.abs()
        elif key.endswith("running_mean"):
            w = 0.05 * w
        elif t.dim() == 1 and key.endswith("weight"):  # norm scale
            w = 1.0 + 0.1 * w
        elif t.dim() == 1:  # biases, norm shifts
            w = 0.02 * w
        else:
            fan_in = t.numel() // t.shape[0]
            w = w * math.sqrt(3.0 / fan_in)
        out[key] = w.reshape(t.shape).to(t.dtype)
    return out


def golden_input(shape=(1, 3, 224, 224)) -> torch.Tensor:
    n = math.prod(shape)
    return _wave(n, 0.5).reshape(shape).float()
