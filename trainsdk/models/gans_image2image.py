"""Image-to-image GAN generators: the context-aware generator (Nie et al. 2017), its auto-context cascade, and the
low-dose CT denoiser of WGAN-VGG (Yang et al. 2018).

Fully convolutional: any spatial size the input contract admits, exported with dynamic spatial dims. ``in_channels``
is the source modality's channels (MR, low-dose CT) and ``num_classes`` the target's (CT, normal-dose CT): the zoo's
name for the output width, as for a segmentation net's class map; the output is a regression map (no final
activation), so intensities keep whatever normalisation the data has. The builders are in ``gans.py`` (one zoo
family for every GAN model); discriminators and the WGAN critic are there too.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn as nn

from ._base import ModelBase, ModelConfig, _check_positive_int, check_bool, check_choice
from .layers import ConvNormAct, norm_layer

__all__ = ["ContextGeneratorConfig", "ContextGenerator", "CascadeConfig", "AutoContextCascade",
           "ConvStackConfig", "ConvStackGenerator"]

_NORMS = (None, "batch", "instance")


def _init_relu_convs(module: nn.Module) -> None:
    """He-normal weights (ReLU networks), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --- context-aware generator ----------------------------------------------------------------------------------------
@dataclass
class ContextGeneratorConfig(ModelConfig):
    """``levels`` stride-2 steps give each output pixel multi-scale context; sizes must be multiples of
    ``2**levels``. ``num_classes``: output (target modality) channels."""

    num_classes: int = 1
    in_channels: int = 1
    width: int = 32  # channels at full resolution, doubled at every level down
    levels: int = 2
    norm: str | None = "batch"

    def validate(self) -> None:
        owner = type(self).__name__
        _check_positive_int(owner, "width", self.width)
        _check_positive_int(owner, "levels", self.levels)
        check_choice(owner, "norm", self.norm, _NORMS)


class _Up(nn.Module):
    """2x transposed conv + norm + ReLU, then the encoder map of the same level added (additive skip)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str | None):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2, bias=norm is None)
        self.norm = norm_layer(norm, out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x))) + skip  # (N, out_ch, 2H, 2W)


class ContextGenerator(ModelBase):
    """A small fully convolutional encoder-decoder (Nie et al.'s generator is an FCN trained with an adversarial
    term and the image-gradient-difference loss). ``forward`` maps (N, in_channels, H, W) to (N, num_classes, H, W).
    """

    dynamic_spatial = True
    default_input_size = (64, 64)

    def __init__(self, config: ContextGeneratorConfig):
        super().__init__(config)
        c = config
        self.input_multiple = 2 ** c.levels
        self.min_input_size = 2 ** (c.levels + 1)  # the coarsest map keeps at least 2x2 pixels
        widths = [c.width * 2 ** i for i in range(c.levels + 1)]
        self.stem = ConvNormAct(c.in_channels, widths[0], 3, norm=c.norm)
        for i in range(1, c.levels + 1):
            setattr(self, f"down{i}", ConvNormAct(widths[i - 1], widths[i], 3, stride=2, norm=c.norm))
        for i in range(c.levels, 0, -1):  # registered in execution order
            setattr(self, f"up{i}", _Up(widths[i], widths[i - 1], c.norm))
        self.head = nn.Conv2d(widths[0], c.num_classes, 1)
        self._feature_info = [dict(num_chs=widths[0], reduction=1, module="up1")]
        _init_relu_convs(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]  # (N, w, H, W)
        for i in range(1, self.config.levels + 1):
            skips.append(getattr(self, f"down{i}")(skips[-1]))  # (N, w * 2^i, H / 2^i, W / 2^i)
        x = skips.pop()
        for i in range(self.config.levels, 0, -1):
            x = getattr(self, f"up{i}")(x, skips.pop())
        return x  # (N, w, H, W)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)  # (N, num_classes, H, W)


# --- auto-context cascade -------------------------------------------------------------------------------------------
@dataclass
class CascadeConfig(ContextGeneratorConfig):
    """``stages`` context generators; stage i > 0 reads the input concatenated with stage i-1's estimate.
    ``detach_context``: stop gradients between stages (Nie et al. train stage by stage)."""

    stages: int = 2
    detach_context: bool = False

    def validate(self) -> None:
        super().validate()
        _check_positive_int(type(self).__name__, "stages", self.stages)
        check_bool(type(self).__name__, "detach_context", self.detach_context)

    def stage_config(self, index: int) -> ContextGeneratorConfig:
        extra = self.num_classes if index > 0 else 0
        return ContextGeneratorConfig(num_classes=self.num_classes, in_channels=self.in_channels + extra,
                                      width=self.width, levels=self.levels, norm=self.norm)


class AutoContextCascade(ModelBase):
    """Auto-context refinement (Tu & Bai 2010, as Nie et al. use it): a cascade of generators, each fed the source
    image and the previous estimate. ``forward`` returns the last estimate; ``forward_stages`` all of them (for a
    loss on each stage). Stages are ``stages.0 .. stages.{k-1}``."""

    dynamic_spatial = True
    default_input_size = (64, 64)

    def __init__(self, config: CascadeConfig):
        super().__init__(config)
        self.stages = nn.ModuleList(ContextGenerator(config.stage_config(i)) for i in range(config.stages))
        first = self.stages[0]
        self.input_multiple, self.min_input_size = first.input_multiple, first.min_input_size
        self._feature_info = [dict(info, module=f"stages.{config.stages - 1}.{info['module']}")
                              for info in first.feature_info]

    def _context(self, x: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        if self.config.detach_context:
            estimate = estimate.detach()
        return torch.cat([x, estimate], dim=1)  # (N, in_channels + num_classes, H, W)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's estimate, first to last, each (N, num_classes, H, W)."""
        self.check_input(x)
        estimates = [self.stages[0](x)]
        for stage in self.stages[1:]:
            estimates.append(stage(self._context(x, estimates[-1])))
        return estimates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        inp = x
        for stage in self.stages[:-1]:
            inp = self._context(x, stage(inp))
        return self.stages[-1].forward_features(inp)  # (N, width, H, W)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.stages[-1].forward_head(x, pre_logits)


# --- WGAN-VGG generator (low-dose CT denoising) ---------------------------------------------------------------------
@dataclass
class ConvStackConfig(ModelConfig):
    """Yang et al.'s generator: ``depth`` 3x3 conv layers, ``width`` filters and ReLU in all but the last, which
    maps to ``num_classes`` channels; no pooling, no normalisation."""

    num_classes: int = 1
    in_channels: int = 1
    width: int = 32
    depth: int = 8
    norm: str | None = None

    def validate(self) -> None:
        owner = type(self).__name__
        _check_positive_int(owner, "width", self.width)
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 2:
            raise ValueError(f"{owner}: depth must be an integer >= 2 (hidden layers + output layer), "
                             f"got {self.depth!r}")
        check_choice(owner, "norm", self.norm, _NORMS)


class ConvStackGenerator(ModelBase):
    """Plain stack of same-padded 3x3 convs: a denoiser that keeps the image size (``body.0 .. body.{depth-2}``,
    then ``head``)."""

    dynamic_spatial = True
    default_input_size = (64, 64)  # Yang et al. train on 64x64 patches
    min_input_size = 16  # smaller patches are mostly zero padding for the 17-pixel receptive field of 8 layers

    def __init__(self, config: ConvStackConfig):
        super().__init__(config)
        c = config
        chans = [c.in_channels] + [c.width] * (c.depth - 1)
        self.body = nn.Sequential(*(ConvNormAct(chans[i], chans[i + 1], 3, norm=c.norm) for i in range(c.depth - 1)))
        self.head = nn.Conv2d(c.width, c.num_classes, 3, padding=1)
        self._feature_info = [dict(num_chs=c.width, reduction=1, module="body")]
        _init_relu_convs(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, width, H, W)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)  # (N, num_classes, H, W)
