"""Encoder-decoders whose skip connections are *summed*: RED-Net for restoration, and a cross-modality network.

RED-Net (Mao, Shen & Yang, "Image Restoration Using Very Deep Convolutional Encoder-Decoder Networks with Symmetric
Skip Connections", NIPS 2016): ``n`` unpadded 3x3 convolutions, each shrinking the map by 2, then ``n`` unpadded 3x3
transposed convolutions that grow it back, 64 channels throughout, no pooling. Every ``skip_every`` (2) layers a
convolutional feature map is added element-wise to its mirrored deconvolutional map before the ReLU. The sums (not
U-Net's concatenation) keep the parameter count of the plain encoder-decoder, carry image detail the encoder has to
discard past the bottleneck, and give gradients a short path in the 20- and 30-layer networks. With ``residual=True``
the input is added to the output, so the network learns the corruption (noise, artifacts) rather than the image.
Fully convolutional and size-preserving: any input of at least ``n * (kernel - 1) + 1`` pixels.

Cross-modality mapping (MR -> CT, simulated ultrasound -> CT-quality, ...) changes the intensities everywhere, so
an identity shortcut from the input would be wrong, and the mapping needs context (the same MR grey value is bone or
air depending on where it is). ``cross_modality_net`` therefore is a RED-style network *with down-sampling*: stride-2
convolutions widen the receptive field at each level (doubling the channels), stride-2 transposed convolutions come
back up, and each level's encoder map is summed into the decoder -- U-Net's layout with RED-Net's sums, as in the
residual-U-Net generators used for MR-to-CT synthesis. Instance norm by default: translation is trained with small
batches, where batch statistics are noisy (pix2pix's choice).

``forward_features`` returns a :class:`SkipFeatures` (the code plus the maps the decoder adds back and the input),
because the decoder of a skip-connected network cannot run from the code alone; ``forward_head`` takes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from ._base import ModelBase, _check_positive_int, build_config, check_bool, check_choice
from ._registry import register_model
from .autoencoders import AEConfig, AutoencoderMixin, activation
from .layers import NORMS, ConvNormAct

__all__ = ["SkipFeatures", "REDNetConfig", "REDNet", "CrossModalityConfig", "CrossModalityNet", "rednet10",
           "rednet20", "rednet30", "cross_modality_net"]


class SkipFeatures(NamedTuple):
    """What the encoder hands the decoder: the deepest map, the skip maps (shallowest first) and the input."""

    code: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    image: torch.Tensor


# --- RED-Net ---------------------------------------------------------------------------------------------------------
@dataclass
class REDNetConfig(AEConfig):
    num_layers: int = 30  # convolutions + deconvolutions: 10, 20 or 30 in the paper
    width: int = 64
    kernel_size: int = 3
    skip_every: int = 2  # a skip from every 2nd conv layer; 0 = none (the paper's plain encoder-decoder)
    residual: bool = True  # output = input + network(input): learn the corruption
    out_activation: str = "identity"

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        for name in ("num_layers", "width", "kernel_size"):
            _check_positive_int(owner, name, getattr(self, name))
        if self.num_layers < 4 or self.num_layers % 2:
            raise ValueError(f"{owner}: num_layers must be even and >= 4 (half conv, half deconv), "
                             f"got {self.num_layers}")
        if isinstance(self.skip_every, bool) or not isinstance(self.skip_every, int) or self.skip_every < 0:
            raise ValueError(f"{owner}: skip_every must be an integer >= 0, got {self.skip_every!r}")
        check_bool(owner, "residual", self.residual)
        if self.residual and self.num_classes != self.in_channels:
            raise ValueError(f"{owner}: residual=True adds the input to the output, so num_classes (output channels, "
                             f"{self.num_classes}) must equal in_channels ({self.in_channels}); pass residual=False")


class REDNet(AutoencoderMixin, ModelBase):
    """Keys ``conv{k}`` (k = 1..n, encoder) and ``deconv{j}`` (j = 1..n, decoder; ``deconv{j}`` restores the size of
    ``conv{n-j}``'s output, ``deconv{n}`` the input's). Plain ``nn.Conv2d``/``nn.ConvTranspose2d`` with biases, as in
    the paper (no normalisation)."""

    dynamic_spatial = True
    default_input_size = (64, 64)

    def __init__(self, config: REDNetConfig):
        super().__init__(config)
        n, w, k = config.num_layers // 2, config.width, config.kernel_size
        self.n = n
        self.min_input_size = n * (k - 1) + 1  # the deepest map is at least 1x1
        self.skip_from = tuple(i for i in range(1, n) if config.skip_every and i % config.skip_every == 0)
        for i in range(1, n + 1):
            setattr(self, f"conv{i}", nn.Conv2d(config.in_channels if i == 1 else w, w, k))
        for j in range(1, n + 1):
            setattr(self, f"deconv{j}", nn.ConvTranspose2d(w, config.num_classes if j == n else w, k))
        self.relu = nn.ReLU(inplace=False)  # skip maps are reused later: never overwrite them in place
        self.out_act = activation(config.out_activation)
        self._feature_info = [dict(num_chs=w, reduction=1, module=f"conv{i}") for i in range(1, n + 1)]

    def forward_features(self, x: torch.Tensor) -> SkipFeatures:
        h, skips = x, []
        for i in range(1, self.n + 1):
            h = self.relu(getattr(self, f"conv{i}")(h))  # (N, w, S - i(k-1))
            if i in self.skip_from:
                skips.append(h)
        return SkipFeatures(h, tuple(skips), x)

    def forward_head(self, feats: SkipFeatures, pre_logits: bool = False) -> torch.Tensor:
        h, skips = feats.code, list(feats.skips)
        for j in range(1, self.n):
            h = getattr(self, f"deconv{j}")(h)  # the size of conv{n-j}'s output
            if self.n - j in self.skip_from:
                h = h + skips.pop()  # the deepest remaining skip mirrors this layer
            h = self.relu(h)
        if pre_logits:
            return h  # (N, w, S - (k-1), ...)
        out = getattr(self, f"deconv{self.n}")(h)  # (N, out, S)
        if self.config.residual:
            out = out + feats.image
        return self.out_act(out)


# --- cross-modality encoder-decoder ----------------------------------------------------------------------------------
@dataclass
class CrossModalityConfig(AEConfig):
    depth: int = 3  # stride-2 levels
    base_width: int = 32  # doubled at every level down
    norm: str | None = "instance"
    out_activation: str = "identity"  # target intensities (e.g. normalized HU) need not lie in [0, 1]

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        _check_positive_int(owner, "depth", self.depth)
        _check_positive_int(owner, "base_width", self.base_width)
        check_choice(owner, "norm", self.norm, NORMS)


class CrossModalityNet(AutoencoderMixin, ModelBase):
    """Keys ``stem``, ``down{i}.conv1/conv2`` (the first with stride 2), ``up{i}.upconv`` (2x2 stride-2 transposed
    conv) and ``up{i}.conv``, ``head`` (1x1 conv). Level ``i`` works at 1/2**i resolution with ``base * 2**i``
    channels; ``up{i}`` returns to level ``i-1`` and adds that level's encoder map."""

    dynamic_spatial = True
    default_input_size = (64, 64)

    def __init__(self, config: CrossModalityConfig):
        super().__init__(config)
        depth, kw = config.depth, dict(norm=config.norm)
        widths = [config.base_width * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.input_multiple = 2 ** depth
        self.min_input_size = 2 ** (depth + 1)  # instance norm needs a bottleneck of at least 2x2
        self.stem = ConvNormAct(config.in_channels, widths[0], 3, **kw)
        for i in range(1, depth + 1):
            block = nn.Module()
            block.conv1 = ConvNormAct(widths[i - 1], widths[i], 3, stride=2, **kw)
            block.conv2 = ConvNormAct(widths[i], widths[i], 3, **kw)
            setattr(self, f"down{i}", block)
        for i in range(depth, 0, -1):  # registered in execution order
            block = nn.Module()
            block.upconv = nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2)
            block.conv = ConvNormAct(widths[i - 1], widths[i - 1], 3, **kw)
            setattr(self, f"up{i}", block)
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)
        self.out_act = activation(config.out_activation)
        self._feature_info = [dict(num_chs=widths[0], reduction=1, module="stem")] + [
            dict(num_chs=widths[i], reduction=2 ** i, module=f"down{i}") for i in range(1, depth + 1)]

    def forward_features(self, x: torch.Tensor) -> SkipFeatures:
        h = self.stem(x)  # (N, base, H, W)
        skips = []
        for i in range(1, self.depth + 1):
            skips.append(h)
            block = getattr(self, f"down{i}")
            h = block.conv2(block.conv1(h))  # (N, base * 2**i, H / 2**i, W / 2**i)
        return SkipFeatures(h, tuple(skips), x)

    def forward_head(self, feats: SkipFeatures, pre_logits: bool = False) -> torch.Tensor:
        h = feats.code
        for i in range(self.depth, 0, -1):
            block = getattr(self, f"up{i}")
            h = block.conv(block.upconv(h) + feats.skips[i - 1])  # summed, not concatenated
        return h if pre_logits else self.out_act(self.head(h))  # (N, out, H, W)


# --- builders --------------------------------------------------------------------------------------------------------
def _rednet(name: str, num_layers: int, kwargs: dict) -> REDNet:
    return REDNet(build_config(REDNetConfig, name, dict(num_layers=num_layers), kwargs))


@register_model(task="restore", tags=("autoencoder", "denoising"))
def rednet10(**kwargs) -> REDNet:
    """RED-Net, 5 conv + 5 deconv layers, 64 channels, skips every 2 layers, residual output."""
    return _rednet("rednet10", 10, kwargs)


@register_model(task="restore", tags=("autoencoder", "denoising"))
def rednet20(**kwargs) -> REDNet:
    """RED-Net, 10 conv + 10 deconv layers."""
    return _rednet("rednet20", 20, kwargs)


@register_model(task="restore", tags=("autoencoder", "denoising"))
def rednet30(**kwargs) -> REDNet:
    """RED-Net, 15 conv + 15 deconv layers (the paper's main network)."""
    return _rednet("rednet30", 30, kwargs)


@register_model(task="translate", tags=("autoencoder",))
def cross_modality_net(**kwargs) -> CrossModalityNet:
    """Encoder-decoder for modality translation: 3 stride-2 levels, 32 base channels, summed skips, instance norm,
    identity output. ``in_channels``/``num_classes`` are the source and target modalities' channel counts."""
    return CrossModalityNet(build_config(CrossModalityConfig, "cross_modality_net", {}, kwargs))
