"""GoogLeNet (Inception v1), Szegedy et al. 2015, "Going Deeper with Convolutions".

Two forms share one class:

* ``googlenet``: torchvision's layout and names, so a torchvision state_dict loads with ``strict=True`` and gives the
  same logits. That includes torchvision's batch norm (eps 1e-3) and its known quirk: the inception "5x5" branch
  (``branch3``) uses a 3x3 kernel, which its pretrained weights were trained with.
* ``googlenet_original``: the paper's network: true 5x5 kernels, convs with bias and no batch norm, local response
  normalization in the stem, dropout 0.4 before the classifier.

``fused=True`` runs each batch norm + ReLU as one ``BatchNormAct2d`` (in the ``bn`` slot, same keys) and the LRN
layers as ``FusedLRN``, so checkpoints load either way.

The file follows torchvision's order: helpers, blocks (``BasicConv2d``, ``InceptionModule``, ``InceptionAux``), the
model class, builders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._base import ModelBase, ModelConfig, build_config
from ._registry import register_model
from .fused import BatchNormAct2d, FusedLRN

__all__ = ["GoogLeNetConfig", "GoogLeNetOutputs", "BasicConv2d", "InceptionModule", "InceptionAux", "GoogLeNet",
           "googlenet", "googlenet_original"]

# (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) per inception module: Table 1 of the paper.
_INCEPTION_SPECS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),  # -> 256
    "inception3b": (128, 128, 192, 32, 96, 64),  # -> 480
    "inception4a": (192, 96, 208, 16, 48, 64),  # -> 512
    "inception4b": (160, 112, 224, 24, 64, 64),  # -> 512
    "inception4c": (128, 128, 256, 24, 64, 64),  # -> 512
    "inception4d": (112, 144, 288, 32, 64, 64),  # -> 528
    "inception4e": (256, 160, 320, 32, 128, 128),  # -> 832
    "inception5a": (256, 160, 320, 32, 128, 128),  # -> 832
    "inception5b": (384, 192, 384, 48, 128, 128),  # -> 1024
}


# --- helpers ------------------------------------------------------------------------------------------------------
class GoogLeNetOutputs(NamedTuple):
    """Training-mode output with auxiliary heads, in torchvision's order (so its training loops work unchanged)."""

    logits: torch.Tensor
    aux_logits2: Optional[torch.Tensor]
    aux_logits1: Optional[torch.Tensor]


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")


def _check_prob(owner: str, name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{owner}: {name} must be a dropout probability in [0, 1), got {value!r}")


def _exporting() -> bool:
    """True under torch.export / ONNX export / jit tracing, which want one output tensor. Unlike ``_base``'s check
    this ignores ``torch.compile``, so a compiled training step still gets the aux logits."""
    is_exporting = getattr(getattr(torch, "compiler", None), "is_exporting", None)
    if is_exporting is not None and is_exporting():
        return True
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def _lrn(fused: bool = False) -> nn.LocalResponseNorm:
    """The paper gives no LRN constants; these are its Caffe release's (bvlc_googlenet: size 5, alpha 1e-4,
    beta 0.75, k 1, alpha divided by size as PyTorch does). No parameters, so state_dict keys are unchanged."""
    return (FusedLRN if fused else nn.LocalResponseNorm)(5, alpha=1e-4, beta=0.75, k=1.0)


def _conv_factory(norm: bool, bias: bool | None, fused: bool = False):
    """A ``BasicConv2d`` maker with "same" padding, so the four branches line up for concatenation."""

    def make(in_ch: int, out_ch: int, k: int) -> BasicConv2d:
        return BasicConv2d(in_ch, out_ch, k, padding=k // 2, norm=norm, bias=bias, fused=fused)

    return make


def _reduce_then(conv, in_ch: int, reduce_ch: int | None, out_ch: int, k: int) -> nn.Sequential:
    """``[1x1 reduce,] kxk``: torchvision's ``branch2``/``branch3`` (``.0`` reduce, ``.1`` conv)."""
    if reduce_ch is None:
        return nn.Sequential(conv(in_ch, out_ch, k))
    return nn.Sequential(conv(in_ch, reduce_ch, 1), conv(reduce_ch, out_ch, k))


@dataclass
class GoogLeNetConfig(ModelConfig):
    """Defaults are torchvision's ``googlenet``; ``googlenet_original`` overrides them with the paper's choices.

    ``norm``: batch norm after every conv (convs then have no bias); ``lrn``: local response normalization after
    the stem's first pool and after ``conv3`` as in the paper; ``five_by_five_kernel``: kernel of the inception
    "5x5" branch (torchvision uses 3, the paper 5).
    """

    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = True
    dropout: float = 0.2
    aux_dropout: float = 0.7
    norm: bool = True
    lrn: bool = False
    five_by_five_kernel: int = 3
    fused: bool = False

    def validate(self) -> None:
        owner = type(self).__name__
        for name in ("aux_logits", "norm", "lrn", "fused"):
            _check_bool(owner, name, getattr(self, name))
        _check_prob(owner, "dropout", self.dropout)
        _check_prob(owner, "aux_dropout", self.aux_dropout)
        k = self.five_by_five_kernel
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(
                f"{owner}: five_by_five_kernel must be an odd positive integer (3 as torchvision, 5 as the paper), "
                f"got {k!r}"
            )


# --- blocks -------------------------------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """conv -> (batch norm) -> ReLU with torchvision's child names ``conv``/``bn`` so its weights load.

    Without norm the conv keeps its bias (the paper's form) and there is no ``bn`` child at all, so the state_dict
    holds only real parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 norm: bool = True, bias: bool | None = None, fused: bool = False):
        super().__init__()
        bias = (not norm) if bias is None else bias
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        # torchvision's eps (1e-3, from TensorFlow's Inception) differs from PyTorch's default; logits depend on it.
        self.bn = None
        if norm and fused:  # batch norm + ReLU in one op, same keys
            self.bn = BatchNormAct2d(out_channels, eps=0.001, act="relu")
        elif norm:
            self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.bn_has_relu = norm and fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.bn_has_relu else F.relu(x, inplace=True)


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 3x3 | 5x5 | 3x3 max pool.

    ``bottleneck=True`` (the module GoogLeNet uses) puts 1x1 reductions before the 3x3 and 5x5 convs and a 1x1
    projection after the pool; this is what keeps the module cheap (the lecture's 256-channel example: 1,089,536
    weights naive, 346,112 with 64-channel bottlenecks). ``bottleneck=False`` builds the naive module: the
    reduce/proj arguments are ignored (pass None) and the pool branch passes its ``in_channels`` through, which is
    why naive modules grow the channel count at every stage.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int | None, ch3x3: int, ch5x5red: int | None,
                 ch5x5: int, pool_proj: int | None, *, bottleneck: bool = True, bias: bool | None = None,
                 norm: bool = True, five_by_five_kernel: int = 5, fused: bool = False):
        super().__init__()
        if bottleneck and None in (ch3x3red, ch5x5red, pool_proj):
            raise ValueError("InceptionModule: bottleneck=True needs ch3x3red, ch5x5red and pool_proj, got None")
        conv = _conv_factory(norm, bias, fused)
        k5 = five_by_five_kernel
        self.branch1 = conv(in_channels, ch1x1, 1)
        self.branch2 = _reduce_then(conv, in_channels, ch3x3red if bottleneck else None, ch3x3, 3)
        self.branch3 = _reduce_then(conv, in_channels, ch5x5red if bottleneck else None, ch5x5, k5)
        pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        if bottleneck:
            self.branch4 = nn.Sequential(pool, conv(in_channels, pool_proj, 1))
        else:
            self.branch4 = nn.Sequential(pool)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + (pool_proj if bottleneck else in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x C x H x W -> N x out_channels x H x W (every branch keeps the spatial size)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate stage (after 4a and 4d), used only for training.

    Paper: 5x5/3 average pool (14x14 -> 4x4), 1x1 conv to 128, FC 1024 + ReLU, dropout 0.7, linear. The pool is
    adaptive to 4x4 as in torchvision so any input size works; at the 224x224 design size both give 4x4.
    """

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.7, norm: bool = True,
                 fused: bool = False):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, 1, norm=norm, fused=fused)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))  # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        x = self.conv(x)  # N x 128 x 4 x 4
        x = torch.flatten(x, 1)  # N x 2048
        x = F.relu(self.fc1(x), inplace=True)  # N x 1024
        x = self.dropout(x)
        return self.fc2(x)  # N x num_classes


# --- model --------------------------------------------------------------------------------------------------------
class GoogLeNet(ModelBase):
    """GoogLeNet with torchvision's module names; see the module docstring for the two forms.

    ``forward`` returns the logits tensor, except in training mode with ``aux_logits`` where it returns
    ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` (never while exporting/tracing, which sees eval graphs).
    """

    default_input_size = (224, 224)
    # Smallest size every ceil-mode pool (and so also both aux heads) accepts; 1x1 at the end.
    min_input_size = 15

    def __init__(self, config: GoogLeNetConfig):
        super().__init__(config)
        norm = config.norm
        self.aux_logits = config.aux_logits
        self._build_stem(config)
        self._build_inceptions(config)
        if config.aux_logits:
            aux = dict(dropout=config.aux_dropout, norm=norm, fused=config.fused)
            self.aux1 = InceptionAux(512, config.num_classes, **aux)
            self.aux2 = InceptionAux(528, config.num_classes, **aux)
        else:
            self.aux1 = None
            self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=config.dropout)
        self.fc = nn.Linear(1024, config.num_classes)
        self._feature_info = [
            dict(num_chs=64, reduction=2, module="conv1"),
            dict(num_chs=192, reduction=4, module="conv3"),
            dict(num_chs=480, reduction=8, module="inception3b"),
            dict(num_chs=832, reduction=16, module="inception4e"),
            dict(num_chs=1024, reduction=32, module="inception5b"),
        ]
        self._init_weights()

    def _build_stem(self, cfg: GoogLeNetConfig) -> None:
        """conv 7x7/2, pool, [LRN], 1x1, 3x3, [LRN], pool: the paper's stem (LRN only in the original form)."""
        conv = BasicConv2d
        f = cfg.fused
        self.conv1 = conv(cfg.in_channels, 64, 7, stride=2, padding=3, norm=cfg.norm, fused=f)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = _lrn(f) if cfg.lrn else nn.Identity()
        self.conv2 = conv(64, 64, 1, norm=cfg.norm, fused=f)
        self.conv3 = conv(64, 192, 3, padding=1, norm=cfg.norm, fused=f)
        self.lrn2 = _lrn(f) if cfg.lrn else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def _build_inceptions(self, cfg: GoogLeNetConfig) -> None:
        """Nine bottleneck inception modules with max pools between stages 3/4 and 4/5 (Table 1 of the paper)."""
        in_ch = 192
        for name, spec in _INCEPTION_SPECS.items():
            block = InceptionModule(in_ch, *spec, norm=cfg.norm, five_by_five_kernel=cfg.five_by_five_kernel,
                                    fused=cfg.fused)
            setattr(self, name, block)
            in_ch = block.out_channels
            if name == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "inception4e":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def _init_weights(self) -> None:
        """torchvision's scheme (truncated normal, std 0.01) when batch norm rescales activations anyway; without
        norm, std 0.01 would make the 22-layer plain net's activations vanish, so convs get Kaiming (fan-in, ReLU)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not self.config.norm:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- forward ------------------------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor, with_aux: bool):
        """The trunk; taps the aux heads after 4a and 4d when asked. Shapes for a 224x224 input."""
        x = self.maxpool1(self.conv1(x))  # N x 64 x 56 x 56
        x = self.conv3(self.conv2(self.lrn1(x)))  # N x 192 x 56 x 56
        x = self.maxpool2(self.lrn2(x))  # N x 192 x 28 x 28
        x = self.inception3b(self.inception3a(x))  # N x 480 x 28 x 28
        x = self.inception4a(self.maxpool3(x))  # N x 512 x 14 x 14
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # N x 528 x 14 x 14
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))  # N x 832 x 7 x 7
        x = self.inception5b(self.inception5a(x))  # N x 1024 x 7 x 7
        return x, aux2, aux1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # N x 1024
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)  # N x num_classes

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        if self.training and self.aux1 is not None and not _exporting():
            feats, aux2, aux1 = self._features(x, with_aux=True)
            return GoogLeNetOutputs(self.forward_head(feats), aux2, aux1)
        return self.forward_head(self.forward_features(x))


# --- builders -----------------------------------------------------------------------------------------------------
def _build(name: str, defaults: dict, kwargs: dict) -> GoogLeNet:
    return GoogLeNet(build_config(GoogLeNetConfig, name, defaults, kwargs))


@register_model
def googlenet(**kwargs) -> GoogLeNet:
    """torchvision's GoogLeNet (batch norm, 3x3 "5x5" branch): loads its state_dict with ``strict=True``."""
    return _build("googlenet", {}, kwargs)


@register_model
def googlenet_original(**kwargs) -> GoogLeNet:
    """The 2015 paper's GoogLeNet: 5x5 kernels, biased convs without batch norm, LRN in the stem, dropout 0.4."""
    defaults = dict(norm=False, lrn=True, five_by_five_kernel=5, dropout=0.4, aux_dropout=0.7)
    return _build("googlenet_original", defaults, kwargs)
