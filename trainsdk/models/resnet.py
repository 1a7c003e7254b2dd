"""ResNet-18/34/50/101/152 (He et al. 2016) in torchvision's layout, plus "plain" twins without shortcuts.

Parameter names match torchvision's (``conv1``, ``bn1``, ``layer1..4``, ``downsample``, ``fc``). The plain variants
(``shortcut=False``) keep the same layers but drop the identity/projection paths, for the lecture's degradation
experiment: a deeper plain network trains worse than a shallower one, a deeper residual one does not.

``fused=True`` runs each batch norm that a ReLU follows as one ``BatchNormAct2d`` (same keys as BatchNorm2d) and
each block's ``relu(out + identity)`` as one ``AddReLU`` (no parameters), so checkpoints load either way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ._base import ModelBase, ModelConfig, build_config, check_bool, check_choice
from ._registry import register_model
from .fused import AddReLU, BatchNormAct2d

__all__ = ["ResNet", "ResNetConfig", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet152", "plain18", "plain34"]


# --- helpers ------------------------------------------------------------------------------------------------------
def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def bn_relu(ch: int, fused: bool) -> nn.BatchNorm2d:
    """A batch norm that a ReLU follows: fused, it applies the ReLU itself (same state_dict keys)."""
    return BatchNormAct2d(ch, act="relu") if fused else nn.BatchNorm2d(ch)


# --- blocks -------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convs; the output is relu(F(x) + x)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 shortcut: bool = True, fused: bool = False):
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = bn_relu(width, fused)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = bn_relu(width, fused and not shortcut)
        self.downsample = downsample
        self.shortcut = shortcut
        self.fused = fused
        self.add_relu = AddReLU() if fused and shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # batch norms apply their ReLU; the tail is one add + ReLU
            out = self.bn2(self.conv2(self.bn1(self.conv1(x))))
            return self.add_relu(out, x if self.downsample is None else self.downsample(x)) if self.shortcut else out
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 shortcut: bool = True, fused: bool = False):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = bn_relu(width, fused)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = bn_relu(width, fused)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = bn_relu(out_ch, fused and not shortcut)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.shortcut = shortcut
        self.fused = fused
        self.add_relu = AddReLU() if fused and shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # batch norms apply their ReLU; the tail is one add + ReLU
            out = self.bn3(self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(x))))))
            return self.add_relu(out, x if self.downsample is None else self.downsample(x)) if self.shortcut else out
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


# --- model --------------------------------------------------------------------------------------------------------
@dataclass
class ResNetConfig(ModelConfig):
    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    base_width: int = 64
    shortcut: bool = True  # False: the "plain" network of the degradation experiment
    zero_init_residual: bool = False
    fused: bool = False  # BN+ReLU and add+ReLU as fused kernels (same keys)

    def validate(self) -> None:
        check_bool("ResNetConfig", "fused", self.fused)
        check_choice("ResNetConfig", "block", self.block, list(BLOCKS))
        self.layers = tuple(self.layers)
        if len(self.layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.layers):
            raise ValueError(f"ResNetConfig: layers must be 4 positive block counts, got {self.layers!r}")
        if self.base_width < 1:
            raise ValueError(f"ResNetConfig: base_width must be a positive integer, got {self.base_width!r}")


class ResNet(ModelBase):
    """Stem (7x7/2 conv, 3x3/2 max pool), four stages of residual blocks, global pool, ``fc``."""

    default_input_size = (224, 224)
    min_input_size = 32

    def __init__(self, config: ResNetConfig):
        super().__init__(config)
        c = config
        block = BLOCKS[c.block]
        self.inplanes = c.base_width
        self.conv1 = nn.Conv2d(c.in_channels, c.base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.fused = c.fused
        self.bn1 = bn_relu(c.base_width, c.fused)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths = [c.base_width * m for m in (1, 2, 4, 8)]
        self.layer1 = self._make_layer(block, widths[0], c.layers[0], 1, c.shortcut)
        self.layer2 = self._make_layer(block, widths[1], c.layers[1], 2, c.shortcut)
        self.layer3 = self._make_layer(block, widths[2], c.layers[2], 2, c.shortcut)
        self.layer4 = self._make_layer(block, widths[3], c.layers[3], 2, c.shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = widths[3] * block.expansion
        self.fc = nn.Linear(self.num_features, c.num_classes)
        self._feature_info = [dict(num_chs=w * block.expansion, reduction=r, module=f"layer{i + 1}")
                              for i, (w, r) in enumerate(zip(widths, (4, 8, 16, 32)))]
        self._init_weights(c.zero_init_residual)

    def _make_layer(self, block: type, width: int, blocks: int, stride: int, shortcut: bool) -> nn.Sequential:
        downsample = None
        if shortcut and (stride != 1 or self.inplanes != width * block.expansion):
            downsample = nn.Sequential(conv1x1(self.inplanes, width * block.expansion, stride),
                                       nn.BatchNorm2d(width * block.expansion))
        fused = self.config.fused
        layers = [block(self.inplanes, width, stride, downsample, shortcut, fused)]
        self.inplanes = width * block.expansion
        layers += [block(self.inplanes, width, shortcut=shortcut, fused=fused) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity (Goyal et al. 2017)
            for m in self.modules():
                last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, (BasicBlock, Bottleneck)) and last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.maxpool(x if self.fused else self.relu(x))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x  # (N, C, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


# --- builders -----------------------------------------------------------------------------------------------------
def _resnet(name: str, block: str, layers: tuple[int, ...], kwargs: dict, shortcut: bool = True) -> ResNet:
    return ResNet(build_config(ResNetConfig, name, dict(block=block, layers=layers, shortcut=shortcut), kwargs))


@register_model
def resnet18(**kwargs) -> ResNet:
    return _resnet("resnet18", "basic", (2, 2, 2, 2), kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    return _resnet("resnet34", "basic", (3, 4, 6, 3), kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    return _resnet("resnet50", "bottleneck", (3, 4, 6, 3), kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    return _resnet("resnet101", "bottleneck", (3, 4, 23, 3), kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    return _resnet("resnet152", "bottleneck", (3, 8, 36, 3), kwargs)


@register_model
def plain18(**kwargs) -> ResNet:
    """ResNet-18's layers without shortcuts (the degradation experiment's "plain-18")."""
    return _resnet("plain18", "basic", (2, 2, 2, 2), kwargs, shortcut=False)


@register_model
def plain34(**kwargs) -> ResNet:
    """ResNet-34's layers without shortcuts (the degradation experiment's "plain-34")."""
    return _resnet("plain34", "basic", (3, 4, 6, 3), kwargs, shortcut=False)
