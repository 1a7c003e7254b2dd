"""Building blocks shared by the zoo: N-d layer factories, conv-norm-act, local response normalization."""
from __future__ import annotations

import torch.nn as nn

from .fused import BatchNormAct2d, FusedLRN

__all__ = ["conv_nd", "conv_transpose_nd", "max_pool_nd", "norm_layer", "act_layer", "ConvNormAct", "paper_lrn",
           "NORMS", "ACTS"]

NORMS = (None, "batch", "instance", "group")
ACTS = ("relu", "leaky_relu", "tanh", "gelu", "identity")


def _pick(spatial_dims: int, two: type, three: type) -> type:
    if spatial_dims == 2:
        return two
    if spatial_dims == 3:
        return three
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    return _pick(spatial_dims, nn.Conv2d, nn.Conv3d)


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    return _pick(spatial_dims, nn.ConvTranspose2d, nn.ConvTranspose3d)


def max_pool_nd(spatial_dims: int) -> type[nn.Module]:
    return _pick(spatial_dims, nn.MaxPool2d, nn.MaxPool3d)


def norm_layer(kind: str | None, channels: int, spatial_dims: int = 2) -> nn.Module:
    """``batch`` | ``instance`` (affine) | ``group`` (8 groups, or fewer if channels demand) | ``None``."""
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return _pick(spatial_dims, nn.BatchNorm2d, nn.BatchNorm3d)(channels)
    if kind == "instance":
        return _pick(spatial_dims, nn.InstanceNorm2d, nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")


def act_layer(kind: str, inplace: bool = True) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=inplace)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=inplace)
    if kind == "tanh":
        return nn.Tanh()
    if kind == "gelu":
        return nn.GELU()
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"activation must be one of {list(ACTS)}, got {kind!r}")


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act, with stable child names ``conv``, ``norm``, ``act``.

    The conv has no bias when a norm follows it (the norm's shift makes it redundant). ``fused=True`` runs a 2-D
    batch norm and its relu/leaky_relu/identity as one ``BatchNormAct2d`` in the ``norm`` slot (``act`` becomes
    an Identity), with the same state_dict keys.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, *, stride: int = 1, padding: int | None = None,
                 norm: str | None = "batch", act: str = "relu", spatial_dims: int = 2, bias: bool | None = None,
                 fused: bool = False):
        if padding is None:
            padding = kernel_size // 2
        if bias is None:
            bias = norm is None
        super().__init__()
        self.conv = conv_nd(spatial_dims)(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias)
        if fused and norm == "batch" and spatial_dims == 2 and act in ("relu", "leaky_relu", "identity"):
            self.norm = BatchNormAct2d(out_ch, act=act, negative_slope=0.01)
            self.act = nn.Identity()
        else:
            self.norm = norm_layer(norm, out_ch, spatial_dims)
            self.act = act_layer(act)


def paper_lrn(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
              fused: bool = False) -> nn.LocalResponseNorm:
    """Local response normalization with the constants as AlexNet's paper writes them.

    The paper computes ``a / (k + alpha * sum(a^2))^beta``; PyTorch (like Caffe and ONNX) divides ``alpha`` by
    ``size`` inside, so it is scaled here to give the paper's formula. ``fused=True``: the fused kernel
    (``FusedLRN``, a subclass with the same formula).
    """
    return (FusedLRN if fused else nn.LocalResponseNorm)(size, alpha=alpha * size, beta=beta, k=k)
