"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) in two forms.

* ``alexnet``: torchvision's single-tower layout (64-192-384-256-256), whose state_dicts load with strict=True.
  ``lrn=True`` adds the paper's local response normalization after the first two ReLUs without changing any
  parameter key (LRN has no parameters and is folded into the same ``features`` slot as the ReLU).
* ``alexnet_original``: the paper's 96-256-384-384-256 with LRN after the first two convolutions (size 5,
  alpha 1e-4, beta 0.75, k 2, in the paper's convention) and, with ``two_tower=True``, the two-GPU grouping
  (conv2, conv4, conv5 see only their own tower's maps).

``fused=True`` (both forms) runs the LRN layers as the fused kernel (``trainsdk.models.fused.FusedLRN``); the
parameter keys do not change, so checkpoints load either way.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from ._base import ModelBase, ModelConfig, build_config, check_bool
from ._registry import register_model
from .layers import paper_lrn

__all__ = ["AlexNet", "AlexNetOriginal", "AlexNetConfig", "ReLULRN", "alexnet", "alexnet_original"]


# --- blocks -------------------------------------------------------------------------------------------------------
class ReLULRN(nn.Sequential):
    """ReLU then LRN in one slot of ``features``, so adding LRN leaves torchvision's indices in place."""

    def __init__(self, fused: bool = False):
        super().__init__(nn.ReLU(inplace=True), paper_lrn(fused=fused))


def _lrn(enabled: bool, fused: bool = False) -> nn.Module:
    return paper_lrn(fused=fused) if enabled else nn.Identity()


def _classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    # torchvision's order and indices: classifier.1, .4, .6 are the Linear layers
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


# --- models -------------------------------------------------------------------------------------------------------
@dataclass
class AlexNetConfig(ModelConfig):
    dropout: float = 0.5
    hidden_dim: int = 4096
    lrn: bool = False  # alexnet: add LRN after conv1/conv2 ReLUs (keys unchanged); alexnet_original: always on
    two_tower: bool = False  # alexnet_original only: the paper's grouped conv2/4/5
    fused: bool = False  # LRN as the fused kernel (same keys)

    def validate(self) -> None:
        check_bool("AlexNetConfig", "fused", self.fused)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AlexNetConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden_dim < 1:
            raise ValueError(f"AlexNetConfig: hidden_dim must be a positive integer, got {self.hidden_dim!r}")


class _AlexNetBase(ModelBase):
    default_input_size = (224, 224)
    min_input_size = 63  # smallest size that survives the 11x11/4 conv and three 3x3/2 pools

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 256, 6, 6) at 224x224

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, 9216)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


class AlexNet(_AlexNetBase):
    def __init__(self, config: AlexNetConfig):
        super().__init__(config)
        if config.two_tower:
            raise ValueError("alexnet: two_tower is only available in alexnet_original (torchvision's layout has one "
                             "tower)")
        act12 = (lambda: ReLULRN(config.fused)) if config.lrn else (lambda: nn.ReLU(inplace=True))
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, 64, kernel_size=11, stride=4, padding=2), act12(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), act12(), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = _classifier(256 * 6 * 6, config.hidden_dim, config.num_classes, config.dropout)
        self._feature_info = [dict(num_chs=256, reduction=32, module="features")]


class AlexNetOriginal(_AlexNetBase):
    """The paper's widths; names follow the paper: ``features.conv1..conv5``, ``classifier.fc6..fc8``."""

    def __init__(self, config: AlexNetConfig):
        super().__init__(config)
        g = 2 if config.two_tower else 1
        lrn = lambda: _lrn(config.lrn, config.fused)  # noqa: E731
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(config.in_channels, 96, kernel_size=11, stride=4, padding=2)),
            ("relu1", nn.ReLU(inplace=True)), ("norm1", lrn()), ("pool1", nn.MaxPool2d(3, 2)),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=g)),
            ("relu2", nn.ReLU(inplace=True)), ("norm2", lrn()), ("pool2", nn.MaxPool2d(3, 2)),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=g)), ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=g)), ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(3, 2)),
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        d, h = config.dropout, config.hidden_dim
        self.classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(d)), ("fc6", nn.Linear(256 * 6 * 6, h)), ("relu6", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(d)), ("fc7", nn.Linear(h, h)), ("relu7", nn.ReLU(inplace=True)),
            ("fc8", nn.Linear(h, config.num_classes)),
        ]))
        self._feature_info = [dict(num_chs=256, reduction=32, module="features")]
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper: N(0, 0.01) weights; biases 1 in conv2, conv4, conv5 and the hidden dense layers, else 0.
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                ones = name.endswith(("conv2", "conv4", "conv5", "fc6", "fc7"))
                nn.init.constant_(m.bias, 1.0 if ones else 0.0)


# --- builders -----------------------------------------------------------------------------------------------------
@register_model
def alexnet(**kwargs) -> AlexNet:
    return AlexNet(build_config(AlexNetConfig, "alexnet", {}, kwargs))


@register_model
def alexnet_original(**kwargs) -> AlexNetOriginal:
    return AlexNetOriginal(build_config(AlexNetConfig, "alexnet_original", dict(lrn=True), kwargs))
