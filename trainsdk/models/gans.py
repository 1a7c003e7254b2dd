"""GAN models: DCGAN (Radford et al. 2016) and AC-GAN (Odena et al. 2017) generators and discriminators, the
WGAN-GP critic (Gulrajani et al. 2017, as Yang et al. 2018 use it for low-dose CT), and the builders of every GAN
model in the zoo (the image-to-image generators live in ``gans_image2image.py``). Family ``gans``.

How they fit the zoo's contract (one tensor in, one tensor out; ``in_channels`` is dim 1 of the input and
``num_classes`` dim 1 of the output, as the zoo tests check for every model):

- Latent generators read a latent code of shape (N, 1, L): one channel of length ``L = latent_dim + num_labels``.
  AC-GAN's conditioning is the one-hot label appended to the noise (Odena et al. feed "a 110-dimensional vector,
  noise and one-hot class"), so the conditional generator has one input and exports like any other model;
  ``make_input(z, labels)`` builds the code. ``num_classes`` is the number of channels of the generated image.
- Discriminators read images; ``num_classes`` is the number of logits per image (1: real/fake). AC-GAN's
  discriminator returns its class logits from ``forward`` (a lesion classifier, deployable as such) and both heads
  from ``discriminate(x)``.

``spectral_norm=True`` (Miyato et al. 2018) reparametrises every conv/linear weight of a discriminator
(``torch.nn.utils.parametrizations``); ``fused=True`` runs bias + leaky ReLU as ``trainsdk.ops.bias_act`` with
unchanged state_dict keys. The fused op has no second derivative, so a critic trained with the gradient penalty
must stay ``fused=False`` (``GANTrainer`` refuses the combination).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from trainsdk.ops import reference as _ref_ops

from ._base import InputShapeError, ModelBase, ModelConfig, _check_positive_int, _exporting, build_config, \
    check_bool, check_choice
from ._registry import register_model
from .fused import BatchNormAct2d, BiasAct
from .gans_image2image import AutoContextCascade, CascadeConfig, ContextGenerator, ContextGeneratorConfig, \
    ConvStackConfig, ConvStackGenerator

__all__ = ["LatentGeneratorConfig", "LatentGenerator", "DiscriminatorConfig", "ConvDiscriminator",
           "ACGANDiscriminator", "ACGANOutput", "CriticConfig", "WGANCritic", "BiasLeakyReLU", "apply_spectral_norm",
           "dcgan_generator", "acgan_generator", "dcgan_discriminator", "acgan_discriminator", "wgan_critic",
           "context_gan_generator", "context_gan_cascade", "wgan_ct_generator"]

IMAGE_SIZES = (16, 32, 64, 128)
LEAK = 0.2  # DCGAN's leaky ReLU slope in the discriminator


# --- helpers ------------------------------------------------------------------------------------------------------
class BiasLeakyReLU(nn.Module):
    """The unfused twin of ``fused.BiasAct``: the same ``bias`` parameter through the reference op, so fused and
    unfused discriminators share state_dict keys."""

    def __init__(self, channels: int, negative_slope: float = LEAK):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope = float(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ref_ops.bias_act(x, self.bias, "leaky_relu", self.negative_slope, 1.0)  # (N, C, H, W) -> same


def _disc_norm(kind: str | None, channels: int, fused: bool) -> nn.Module:
    if kind == "batch":
        return BatchNormAct2d(channels, act="leaky_relu", negative_slope=LEAK) if fused else nn.BatchNorm2d(channels)
    return nn.GroupNorm(1, channels)  # "layer": normalises each sample over (C, H, W)


def _down_block(in_ch: int, out_ch: int, *, kernel: int = 4, stride: int = 2, norm: str | None, fused: bool,
                ) -> nn.Sequential:
    """conv (no bias) -> norm -> leaky ReLU; without a norm the bias rides in the activation (BiasAct when fused)."""
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel, stride, padding=1, bias=False))  # 4x4/2 halves
    if norm is None:
        block.add_module("act", BiasAct(out_ch, negative_slope=LEAK) if fused else BiasLeakyReLU(out_ch))
        return block
    block.add_module("norm", _disc_norm(norm, out_ch, fused))
    if not (fused and norm == "batch"):  # BatchNormAct2d applies the leaky ReLU itself
        block.add_module("act", nn.LeakyReLU(LEAK, inplace=True))
    return block


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: weights from N(0, 0.02), norm scales from N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation on every conv and linear layer of ``module`` (in place; returns it)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _spectral_norm(m)
    return module


def _check_image_size(owner: str, size: int) -> None:
    check_choice(owner, "image_size", size, IMAGE_SIZES)


# --- DCGAN / AC-GAN generator ---------------------------------------------------------------------------------------
@dataclass
class LatentGeneratorConfig(ModelConfig):
    """``num_classes``: channels of the generated image; ``in_channels`` is 1 (the code is (N, 1, L)).
    ``num_labels`` > 0 makes it class-conditional (AC-GAN); ``width`` is DCGAN's ngf (channels of the last hidden
    layer, doubled towards the latent); ``final_act`` "tanh" gives images in [-1, 1]."""

    num_classes: int = 1
    in_channels: int = 1
    latent_dim: int = 100
    num_labels: int = 0
    image_size: int = 64
    width: int = 64
    final_act: str = "tanh"

    def validate(self) -> None:
        owner = type(self).__name__
        if self.in_channels != 1:
            raise ValueError(f"{owner}: in_channels must be 1: the latent code is one channel of shape (N, 1, "
                             f"latent_dim + num_labels); got in_channels={self.in_channels} (set latent_dim instead)")
        _check_positive_int(owner, "latent_dim", self.latent_dim)
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ValueError(f"{owner}: num_labels must be an integer >= 0, got {self.num_labels!r}")
        _check_image_size(owner, self.image_size)
        _check_positive_int(owner, "width", self.width)
        check_choice(owner, "final_act", self.final_act, ("tanh", "identity"))


class _UpBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)


class LatentGenerator(ModelBase):
    """DCGAN generator: the code is projected to a 4x4 map (``project``), doubled by ``up1..`` (transposed conv,
    batch norm, ReLU) and by ``head`` to (N, num_classes, image_size, image_size)."""

    spatial_dims = 1  # of the input: the code's length
    fixed_input_size = True

    def __init__(self, config: LatentGeneratorConfig):
        super().__init__(config)
        c = config
        self.default_input_size = (self.code_length,)
        self.min_input_size = self.code_length
        n_up = int(math.log2(c.image_size)) - 2  # doublings from 4x4
        widths = [c.width * 2 ** i for i in reversed(range(n_up))]  # e.g. 64 px: 8w, 4w, 2w, w
        self.project = _UpBlock(self.code_length, widths[0], 1, 0)  # (N, 8w, 4, 4)
        for i in range(1, n_up):
            setattr(self, f"up{i}", _UpBlock(widths[i - 1], widths[i], 2, 1))
        self.head = nn.ConvTranspose2d(widths[-1], c.num_classes, 4, 2, 1)
        self._n_up = n_up
        self._feature_info = [dict(num_chs=widths[-1], reduction=1, module=f"up{n_up - 1}" if n_up > 1 else "project")]
        _dcgan_init(self)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    @property
    def code_length(self) -> int:
        return self.config.latent_dim + self.config.num_labels

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """Standard normal noise (n, 1, latent_dim); for a conditional generator pass it to ``make_input``."""
        _check_positive_int("sample_latent", "n", n)
        return torch.randn(n, 1, self.latent_dim, generator=generator, device=device)

    def make_input(self, z: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """The code (N, 1, L): noise ``z`` (N, 1, latent_dim) or (N, latent_dim), then the one-hot ``labels``."""
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        z = z.reshape(z.shape[0], 1, -1) if z.dim() == 2 else z
        if z.dim() != 3 or z.shape[1:] != (1, self.latent_dim):
            raise InputShapeError(f"z must have shape (N, 1, {self.latent_dim}) or (N, {self.latent_dim}), "
                                  f"got {tuple(z.shape)}")
        if self.num_labels == 0:
            if labels is not None:
                raise ValueError(f"{type(self).__name__} is unconditional (num_labels=0): pass no labels")
            return z
        if labels is None:
            raise ValueError(f"this generator is conditioned on {self.num_labels} classes: pass labels (N,)")
        labels = torch.as_tensor(labels, device=z.device)
        if labels.shape != (z.shape[0],) or labels.dtype.is_floating_point:
            raise ValueError(f"labels must be {z.shape[0]} integers (one per code), got shape {tuple(labels.shape)} "
                             f"dtype {labels.dtype}")
        if bool(((labels < 0) | (labels >= self.num_labels)).any()):
            raise ValueError(f"labels must lie in [0, {self.num_labels}), got {labels.tolist()}")
        onehot = F.one_hot(labels.long(), self.num_labels).to(z.dtype).unsqueeze(1)  # (N, 1, num_labels)
        return torch.cat([z, onehot], dim=2)

    def example_input(self, batch_size: int = 1, size: Sequence[int] | None = None, seed: int = 0) -> torch.Tensor:
        """Noise and, for a conditional generator, one-hot labels (0, 1, 2, ... cycling): a code it was made for."""
        if size is not None and tuple(size) != (self.code_length,):
            raise InputShapeError(f"{type(self).__name__} takes codes of length {self.code_length}, got size {size}")
        gen = torch.Generator().manual_seed(seed)
        labels = torch.arange(batch_size) % self.num_labels if self.num_labels else None
        return self.make_input(self.sample_latent(batch_size, generator=gen), labels)

    def check_input(self, x: torch.Tensor) -> None:
        if _exporting():
            return
        name, want = type(self).__name__, f"(N, 1, {self.code_length})"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor latent code {want}, got {type(x).__name__}")
        if x.dim() != 3:
            raise InputShapeError(f"{name} expects a 3-D latent code {want} (latent_dim {self.latent_dim} + "
                                  f"num_labels {self.num_labels}), got shape {tuple(x.shape)}")
        if x.shape[1] != 1:
            raise InputShapeError(f"{name} was built for in_channels=1 (a one-channel code {want}), got an input "
                                  f"with {x.shape[1]} channels (shape {tuple(x.shape)})")
        self.check_spatial_size(tuple(x.shape[2:]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x.reshape(x.shape[0], -1, 1, 1))  # (N, 1, L) -> (N, L, 1, 1) -> (N, 8w, 4, 4)
        for i in range(1, self._n_up):
            x = getattr(self, f"up{i}")(x)
        return x  # (N, w, S/2, S/2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        x = self.head(x)  # (N, num_classes, S, S)
        return torch.tanh(x) if self.config.final_act == "tanh" else x


# --- DCGAN / AC-GAN discriminator -----------------------------------------------------------------------------------
@dataclass
class DiscriminatorConfig(ModelConfig):
    """``num_classes``: logits per image (1: real/fake; AC-GAN: the lesion classes, plus its real/fake logit).
    DCGAN puts batch norm on every layer but the first; SN-GAN uses ``norm=None, spectral_norm=True``."""

    num_classes: int = 1
    in_channels: int = 1
    image_size: int = 64
    width: int = 64  # channels of the first layer (DCGAN's ndf), doubled at every step down
    norm: str | None = "batch"
    spectral_norm: bool = False
    fused: bool = False

    def validate(self) -> None:
        owner = type(self).__name__
        _check_image_size(owner, self.image_size)
        _check_positive_int(owner, "width", self.width)
        check_choice(owner, "norm", self.norm, (None, "batch", "layer"))
        check_bool(owner, "spectral_norm", self.spectral_norm)
        check_bool(owner, "fused", self.fused)


class ConvDiscriminator(ModelBase):
    """DCGAN discriminator: strided 4x4 convs with leaky ReLU (``stem``, ``down1..``) to a 4x4 map, then a 4x4 conv
    ``head`` to (N, num_classes) logits. Fixed input size ``image_size``."""

    fixed_input_size = True

    def __init__(self, config: DiscriminatorConfig):
        super().__init__(config)
        c = config
        self.default_input_size = (c.image_size, c.image_size)
        self.min_input_size = c.image_size
        n_down = int(math.log2(c.image_size)) - 2  # halvings to 4x4
        widths = [c.width * 2 ** i for i in range(n_down)]
        self.stem = _down_block(c.in_channels, widths[0], norm=None, fused=c.fused)  # DCGAN: no norm here
        for i in range(1, n_down):
            setattr(self, f"down{i}", _down_block(widths[i - 1], widths[i], norm=c.norm, fused=c.fused))
        self._n_down, self._feature_width = n_down, widths[-1]
        self._build_heads(widths[-1])
        self._feature_info = [dict(num_chs=widths[-1], reduction=c.image_size // 4,
                                   module=f"down{n_down - 1}" if n_down > 1 else "stem")]
        _dcgan_init(self)
        if c.spectral_norm:
            apply_spectral_norm(self)

    def _build_heads(self, channels: int) -> None:
        self.head = nn.Conv2d(channels, self.num_classes, 4)  # (N, K, 1, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, self._n_down):
            x = getattr(self, f"down{i}")(x)
        return x  # (N, 8w, 4, 4) at 64 px

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return torch.flatten(x if pre_logits else self.head(x), 1)  # (N, K) logits


class ACGANOutput(NamedTuple):
    source: torch.Tensor  # (N, 1) real/fake logit
    classes: torch.Tensor  # (N, num_classes) class logits


class ACGANDiscriminator(ConvDiscriminator):
    """AC-GAN discriminator: one 4x4 conv ``head`` with 1 + num_classes outputs, the real/fake logit first (two
    linear heads on the same features are one head with both outputs). ``forward``: class logits (N, K);
    ``discriminate``: both."""

    def _build_heads(self, channels: int) -> None:
        self.head = nn.Conv2d(channels, 1 + self.num_classes, 4)  # (N, 1 + K, 1, 1)

    def discriminate(self, x: torch.Tensor) -> ACGANOutput:
        self.check_input(x)
        logits = torch.flatten(self.head(self.forward_features(x)), 1)  # (N, 1 + K)
        return ACGANOutput(logits[:, :1], logits[:, 1:])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return torch.flatten(x, 1)
        return torch.flatten(self.head(x), 1)[:, 1:]  # (N, K)


# --- WGAN-GP critic -------------------------------------------------------------------------------------------------
@dataclass
class CriticConfig(ModelConfig):
    """Yang et al.'s critic: ``depth`` stages of a 3x3 conv and a 3x3 stride-2 conv (64-64-128-128-256-256 at
    width 64), leaky ReLU, then global average pooling and a linear score. ``norm``: None or "layer" only: batch
    norm couples the samples, which the per-sample gradient penalty assumes independent (Gulrajani et al.)."""

    num_classes: int = 1  # scores per image
    in_channels: int = 1
    width: int = 64
    depth: int = 3
    norm: str | None = None
    spectral_norm: bool = False
    fused: bool = False

    def validate(self) -> None:
        owner = type(self).__name__
        _check_positive_int(owner, "width", self.width)
        _check_positive_int(owner, "depth", self.depth)
        if self.norm == "batch":
            raise ValueError(f"{owner}: norm='batch' breaks the gradient penalty (it mixes the samples of a batch); "
                             f"use norm=None or 'layer'")
        check_choice(owner, "norm", self.norm, (None, "layer"))
        check_bool(owner, "spectral_norm", self.spectral_norm)
        check_bool(owner, "fused", self.fused)


class WGANCritic(ModelBase):
    """Fully convolutional critic: any input size >= 2**(depth+1); ``forward`` gives (N, num_classes) scores."""

    dynamic_spatial = True
    default_input_size = (64, 64)

    def __init__(self, config: CriticConfig):
        super().__init__(config)
        c = config
        self.min_input_size = 2 ** (c.depth + 1)
        widths = [c.width * 2 ** i for i in range(c.depth)]
        in_ch = c.in_channels
        for i, w in enumerate(widths, start=1):
            stage = nn.Sequential()
            stage.add_module("conv1", _down_block(in_ch, w, kernel=3, stride=1, norm=c.norm, fused=c.fused))
            stage.add_module("conv2", _down_block(w, w, kernel=3, stride=2, norm=c.norm, fused=c.fused))
            setattr(self, f"stage{i}", stage)
            in_ch = w
        self.head = nn.Linear(widths[-1], c.num_classes)
        self._feature_info = [dict(num_chs=widths[-1], reduction=2 ** c.depth, module=f"stage{c.depth}")]
        _dcgan_init(self)
        if c.spectral_norm:
            apply_spectral_norm(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.config.depth + 1):
            x = getattr(self, f"stage{i}")(x)
        return x  # (N, w * 2^(depth-1), H / 2^depth, W / 2^depth)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # global average pooling: (N, C)
        return x if pre_logits else self.head(x)  # (N, num_classes)


# --- builders -----------------------------------------------------------------------------------------------------
@register_model(task="generation")
def dcgan_generator(**kwargs) -> LatentGenerator:
    return LatentGenerator(build_config(LatentGeneratorConfig, "dcgan_generator", {}, kwargs))


@register_model(task="generation")
def acgan_generator(**kwargs) -> LatentGenerator:
    """Conditioned on ``num_labels`` classes (default 3: the lesion types of ``trainsdk.data.lesions``)."""
    config = build_config(LatentGeneratorConfig, "acgan_generator", dict(num_labels=3), kwargs)
    if config.num_labels < 1:
        raise ValueError("acgan_generator: num_labels must be >= 1 (AC-GAN is class-conditional); use "
                         "dcgan_generator for an unconditional generator")
    return LatentGenerator(config)


@register_model(task="discrimination")
def dcgan_discriminator(**kwargs) -> ConvDiscriminator:
    return ConvDiscriminator(build_config(DiscriminatorConfig, "dcgan_discriminator", {}, kwargs))


@register_model(task="discrimination")
def acgan_discriminator(**kwargs) -> ACGANDiscriminator:
    return ACGANDiscriminator(build_config(DiscriminatorConfig, "acgan_discriminator", dict(num_classes=3), kwargs))


@register_model(task="discrimination")
def wgan_critic(**kwargs) -> WGANCritic:
    return WGANCritic(build_config(CriticConfig, "wgan_critic", {}, kwargs))


@register_model(task="generation")
def context_gan_generator(**kwargs) -> ContextGenerator:
    return ContextGenerator(build_config(ContextGeneratorConfig, "context_gan_generator", {}, kwargs))


@register_model(task="generation")
def context_gan_cascade(**kwargs) -> AutoContextCascade:
    return AutoContextCascade(build_config(CascadeConfig, "context_gan_cascade", {}, kwargs))


@register_model(task="generation")
def wgan_ct_generator(**kwargs) -> ConvStackGenerator:
    return ConvStackGenerator(build_config(ConvStackConfig, "wgan_ct_generator", {}, kwargs))
