"""nn.Module wrappers of the fused ops (``trainsdk.ops``), drop-in replacements for the unfused modules.

Each one subclasses (or mirrors) the module it replaces, with the same parameters and buffers under the same
names, so a checkpoint of a ``fused=False`` model loads into a ``fused=True`` one and back, and code that looks
for ``nn.BatchNorm2d`` (weight init, weight loaders, freezing) still finds it. The extension is loaded (built if
needed) when a module is created, never during tracing; ``MEDCNN_NO_EXT=1`` makes them run the reference ops.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from trainsdk import ops  # importing builds nothing: ops.load() does, on first use
from trainsdk.ops._checks import ACTS

__all__ = ["FusedLRN", "BatchNormAct2d", "AddReLU", "BiasAct"]


class FusedLRN(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (same arguments, same formula) running the fused kernel."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__(size, alpha, beta, k)
        ops.load()  # raises ExtensionBuildError with a hint if the build fails and MEDCNN_NO_EXT is not set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.local_response_norm(x, self.size, self.alpha, self.beta, self.k)  # (N, C, *) -> same


class BatchNormAct2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` followed by an activation, in one fused op; state_dict keys are BatchNorm2d's.

    ``act``: "identity" | "relu" | "leaky_relu" (``negative_slope``). ``inplace=True`` (leaky_relu with a
    positive slope, or identity) is the InPlace-ABN form: the output overwrites the input and only the output is
    kept for backward, saving one activation-sized tensor per layer; as with ``nn.ReLU(inplace=True)``, the input
    must not be needed elsewhere.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, act: str = "relu", negative_slope: float = 0.01,
                 inplace: bool = False, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        ops.load()
        if act not in ACTS:
            raise ValueError(f"BatchNormAct2d: act must be one of {list(ACTS)}, got {act!r}")
        if inplace and not (act == "identity" or (act == "leaky_relu" and negative_slope > 0)):
            raise ValueError("BatchNormAct2d: inplace=True needs an invertible activation ('identity', or "
                             f"'leaky_relu' with negative_slope > 0), got act={act!r}")
        self.act, self.negative_slope, self.inplace = act, negative_slope, inplace

    def extra_repr(self) -> str:
        extra = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act}{extra}" + (", inplace=True" if self.inplace else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """nn.BatchNorm2d.forward's bookkeeping (momentum=None: cumulative average), then the fused op."""
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        stats = (self.running_mean, self.running_var) if track else (None, None)
        return ops.batch_norm_act(x, *stats, self.weight, self.bias, use_batch_stats, factor, self.eps, self.act,
                                  self.negative_slope, self.inplace)  # (N, C, H, W) -> same


class AddReLU(nn.Module):
    """``relu(a + b)``: the end of a residual block, in one pass. No parameters."""

    def __init__(self):
        super().__init__()
        ops.load()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ops.add_relu(a, b)  # (N, C, H, W) x 2 -> same


class BiasAct(nn.Module):
    """``act(x + bias[c]) * gain`` in one pass (GAN layers: a conv without bias followed by this).

    ``bias`` is a learnable (C,) parameter named ``bias``, zero-initialised; ``bias=False`` leaves it out. The
    unfused equivalent is ``F.leaky_relu(x + bias.view(1, -1, 1, 1), slope) * gain``.
    """

    def __init__(self, channels: int, *, act: str = "leaky_relu", negative_slope: float = 0.2, gain: float = 1.0,
                 bias: bool = True):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"BiasAct: channels must be a positive integer, got {channels!r}")
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.act, self.negative_slope, self.gain = act, float(negative_slope), float(gain)
        ops.load()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.bias_act(x, self.bias, self.act, self.negative_slope, self.gain)  # (N, C, *) -> same

    def extra_repr(self) -> str:
        return f"{0 if self.bias is None else self.bias.numel()}, act={self.act!r}, gain={self.gain:g}"
