"""VGG-11/13/16/19 with and without batch norm (Simonyan & Zisserman 2015), in torchvision's layout.

Parameter names match torchvision's (``features.N``, ``classifier.0/3/6``) so its state_dicts load with strict=True.
``fused=True`` (batch-norm variants) runs each batch norm + ReLU as one ``BatchNormAct2d`` in the norm's slot and an
Identity in the ReLU's, so indices and keys are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ._base import ModelBase, ModelConfig, build_config, check_bool, check_choice
from ._registry import register_model
from .fused import BatchNormAct2d

__all__ = ["VGG", "VGGConfig", "VGG_CFGS", "make_features", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
           "vgg16_bn", "vgg19", "vgg19_bn"]

# Conv widths per layer; "M" is a 2x2 max pool. Keys are the depth (weight layers incl. the 3 dense ones).
VGG_CFGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


# --- helpers ------------------------------------------------------------------------------------------------------
def make_features(depth: int, batch_norm: bool, in_channels: int, fused: bool = False) -> nn.Sequential:
    """The conv stack with torchvision's indices: conv, [bn,] relu per layer, and a max pool per "M"."""
    layers: list[nn.Module] = []
    ch = in_channels
    for v in VGG_CFGS[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(ch, v, kernel_size=3, padding=1))
        if batch_norm and fused:  # bn + relu in the bn's slot; the relu's slot keeps the indices
            layers += [BatchNormAct2d(v, act="relu"), nn.Identity()]
            ch = v
            continue
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        ch = v
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# --- model --------------------------------------------------------------------------------------------------------
@dataclass
class VGGConfig(ModelConfig):
    depth: int = 16
    batch_norm: bool = False
    hidden_dim: int = 4096  # width of the two dense layers; smaller suits small medical datasets
    dropout: float = 0.5
    fused: bool = False  # batch-norm variants: BN+ReLU as one fused kernel (same keys)

    def validate(self) -> None:
        check_choice("VGGConfig", "depth", self.depth, sorted(VGG_CFGS))
        check_bool("VGGConfig", "fused", self.fused)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VGGConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden_dim < 1:
            raise ValueError(f"VGGConfig: hidden_dim must be a positive integer, got {self.hidden_dim!r}")


class VGG(ModelBase):
    """Five conv stages (each halving the resolution) and three dense layers on a 7x7 pooled map.

    The adaptive pool makes any input of at least 32x32 valid; at 224x224 it is the identity, as in the paper.
    """

    default_input_size = (224, 224)
    min_input_size = 32

    def __init__(self, config: VGGConfig):
        super().__init__(config)
        c = config
        self.features = make_features(c.depth, c.batch_norm, c.in_channels, c.fused)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, c.hidden_dim), nn.ReLU(True), nn.Dropout(c.dropout),
            nn.Linear(c.hidden_dim, c.hidden_dim), nn.ReLU(True), nn.Dropout(c.dropout),
            nn.Linear(c.hidden_dim, c.num_classes),
        )
        self._feature_info = [dict(num_chs=512, reduction=32, module="features")]
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 512, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, 25088)
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)


# --- builders -----------------------------------------------------------------------------------------------------
def _vgg(name: str, depth: int, batch_norm: bool, kwargs: dict) -> VGG:
    return VGG(build_config(VGGConfig, name, dict(depth=depth, batch_norm=batch_norm), kwargs))


@register_model
def vgg11(**kwargs) -> VGG:
    return _vgg("vgg11", 11, False, kwargs)


@register_model
def vgg11_bn(**kwargs) -> VGG:
    return _vgg("vgg11_bn", 11, True, kwargs)


@register_model
def vgg13(**kwargs) -> VGG:
    return _vgg("vgg13", 13, False, kwargs)


@register_model
def vgg13_bn(**kwargs) -> VGG:
    return _vgg("vgg13_bn", 13, True, kwargs)


@register_model
def vgg16(**kwargs) -> VGG:
    return _vgg("vgg16", 16, False, kwargs)


@register_model
def vgg16_bn(**kwargs) -> VGG:
    return _vgg("vgg16_bn", 16, True, kwargs)


@register_model
def vgg19(**kwargs) -> VGG:
    return _vgg("vgg19", 19, False, kwargs)


@register_model
def vgg19_bn(**kwargs) -> VGG:
    return _vgg("vgg19_bn", 19, True, kwargs)
