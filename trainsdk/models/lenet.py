"""LeNet-5 (LeCun et al. 1998): C1-S2-C3-S4-C5-F6-output on 32x32 inputs.

``style="classic"`` is the paper's tanh units with average-pool subsampling; ``style="modern"`` uses ReLU and max
pooling, which trains faster. Simplifications, as most reimplementations make them: C3 connects to all six S2 maps
(the paper's partial connection table broke symmetry on 1998 hardware budgets), subsampling has no trainable
coefficient, and the output is a linear layer rather than Euclidean RBF units.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from ._base import ModelBase, ModelConfig, build_config, check_choice
from ._registry import register_model

__all__ = ["LeNet5", "LeNetConfig", "lenet5", "lenet5_modern"]


# --- helpers ------------------------------------------------------------------------------------------------------
def _act(style: str) -> nn.Module:
    return nn.Tanh() if style == "classic" else nn.ReLU(inplace=True)


def _pool(style: str) -> nn.Module:
    return nn.AvgPool2d(2, 2) if style == "classic" else nn.MaxPool2d(2, 2)


# --- model --------------------------------------------------------------------------------------------------------
@dataclass
class LeNetConfig(ModelConfig):
    num_classes: int = 10
    in_channels: int = 1
    style: str = "classic"  # "classic" (tanh, average pool) | "modern" (ReLU, max pool)

    def validate(self) -> None:
        check_choice("LeNetConfig", "style", self.style, ["classic", "modern"])


class LeNet5(ModelBase):
    """The paper's layer names: ``features.c1/s2/c3/s4/c5``, ``classifier.f6/output``. Input is fixed at 32x32."""

    default_input_size = (32, 32)
    min_input_size = 32
    fixed_input_size = True

    def __init__(self, config: LeNetConfig):
        super().__init__(config)
        s = config.style
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(config.in_channels, 6, 5)), ("act1", _act(s)), ("s2", _pool(s)),  # (N, 6, 14, 14)
            ("c3", nn.Conv2d(6, 16, 5)), ("act3", _act(s)), ("s4", _pool(s)),  # (N, 16, 5, 5)
            ("c5", nn.Conv2d(16, 120, 5)), ("act5", _act(s)),  # (N, 120, 1, 1)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("f6", nn.Linear(120, 84)), ("act6", _act(s)), ("output", nn.Linear(84, config.num_classes)),
        ]))
        self._feature_info = [dict(num_chs=120, reduction=32, module="features")]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 120, 1, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


# --- builders -----------------------------------------------------------------------------------------------------
@register_model
def lenet5(**kwargs) -> LeNet5:
    return LeNet5(build_config(LeNetConfig, "lenet5", {}, kwargs))


@register_model
def lenet5_modern(**kwargs) -> LeNet5:
    return LeNet5(build_config(LeNetConfig, "lenet5_modern", dict(style="modern"), kwargs))
