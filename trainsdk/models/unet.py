"""U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", 2015).

An encoder of double 3x3 convolutions with 2x2 max-pooling, a bottleneck, and a decoder that doubles the resolution
("up-convolution", halving the channels), concatenates the encoder feature of the same level, and applies another
double convolution; a 1x1 convolution maps the last decoder feature to class scores. The same code builds 2-D and
3-D networks (3-D U-Net, Cicek et al. 2016, is this network with 3-D layers).

Two paddings:

* ``"valid"`` (the paper): unpadded convolutions, so the output is smaller than the input by a fixed border
  (92 pixels per side for depth 4) and only some input sizes are accepted (every pooled map must be even). The
  encoder features are center-cropped to the decoder size before concatenation. This is what makes seamless tiled
  inference ("overlap-tile") possible: each output pixel sees real context only, never zero padding.
* ``"same"``: padded convolutions, output size == input size, inputs a multiple of ``2**depth``.

Parameter names are semantic and do not depend on container nesting: ``down{i}.conv{1,2}``, ``bottleneck.conv{1,2}``,
``up{i}.upconv``, ``up{i}.conv{1,2}``, ``head``. Level ``i`` (1 = full resolution) names the same resolution in the
encoder and the decoder, so a level's keys and shapes do not change with ``depth``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.export import Dim

from ._base import InputShapeError, ModelBase, ModelConfig, _check_positive_int, build_config, check_choice
from ._registry import register_model
from .layers import NORMS, ConvNormAct, conv_nd, conv_transpose_nd, max_pool_nd

__all__ = ["UNetConfig", "UNetGeometry", "UNet", "unet", "unet_original", "unet3d"]

PADDINGS = ("valid", "same")
UPSAMPLES = ("transpose", "bilinear")
VALID_CONV_LOSS = 4  # two unpadded 3x3 convolutions shrink a map by 2 per side


# --- helpers: geometry -----------------------------------------------------------------------------------------------
def _trace(n: int, depth: int, padding: str) -> tuple[int, int] | None:
    """Run one spatial size through the network: ``(bottleneck size, output size)``, or None if some map is empty
    or a pooled map is odd (pooling would drop a row and the skip connections would no longer line up)."""
    loss = VALID_CONV_LOSS if padding == "valid" else 0
    for _ in range(depth):
        n -= loss
        if n < 2 or n % 2:
            return None
        n //= 2
    n -= loss  # bottleneck
    if n < 1:
        return None
    bottleneck = n
    for _ in range(depth):
        n = 2 * n - loss
        if n < 1:
            return None
    return bottleneck, n


@dataclass(frozen=True)
class UNetGeometry:
    """Which spatial sizes a U-Net accepts and what it returns, without building the network.

    Accepted sizes are exactly ``step * k + offset`` for ``k >= k_min``: ``step = 2**depth`` (every pooling must see
    an even map) and ``offset = -4`` for valid padding (the two unpadded convolutions before each pooling) or 0 for
    same padding. The output of a valid U-Net is ``input - 2 * output_border``, with a border independent of the
    input size -- tiled inference needs it to overlap the tiles.
    """

    depth: int = 4
    padding: str = "valid"
    min_bottleneck: int = 1  # instance norm needs >= 2 voxels per map to normalise anything

    @property
    def step(self) -> int:
        return 2 ** self.depth

    @property
    def offset(self) -> int:
        return -VALID_CONV_LOSS if self.padding == "valid" else 0

    @property
    def output_border(self) -> int:
        """How much smaller the output is than the input, per side (92 for the paper's depth 4; 0 for same)."""
        # encoder: 2 * (step - 1) per side in total (2 per conv pair, scaled by the level's stride) plus the
        # bottleneck's 2 * step, decoder: 2 * (step - 1): sum = 6 * step - 4.
        return 6 * self.step - 4 if self.padding == "valid" else 0

    @functools.cached_property
    def k_min(self) -> int:
        k = 1
        while True:
            traced = _trace(self.step * k + self.offset, self.depth, self.padding)
            if traced is not None and traced[0] >= self.min_bottleneck:
                return k
            k += 1

    @property
    def min_size(self) -> int:
        return self.step * self.k_min + self.offset

    def is_valid(self, n: int) -> bool:
        return (n - self.offset) % self.step == 0 and n >= self.min_size

    def nearest_valid_sizes(self, n: int) -> tuple[int | None, int]:
        """The closest accepted sizes below-or-equal (None if there is none) and above-or-equal ``n``."""
        lo_k = (n - self.offset) // self.step
        hi_k = max(-((self.offset - n) // self.step), self.k_min)
        lo = self.step * lo_k + self.offset if lo_k >= self.k_min else None
        return lo, self.step * hi_k + self.offset

    def valid_input_size(self, n: int | Sequence[int]) -> int | tuple[int, ...]:
        """The smallest accepted size ``>= n`` (per dimension for a tuple): pad an image up to this."""
        if not isinstance(n, int):
            return tuple(self.valid_input_size(s) for s in n)
        return self.nearest_valid_sizes(n)[1]

    def output_size(self, n: int | Sequence[int]) -> int | tuple[int, ...]:
        """Output spatial size for an accepted input size (572 -> 388 for the paper); raises for others."""
        if not isinstance(n, int):
            return tuple(self.output_size(s) for s in n)
        if not self.is_valid(n):
            raise InputShapeError(self.describe_invalid(n))
        return n - 2 * self.output_border

    def input_size_for_output(self, m: int | Sequence[int]) -> int | tuple[int, ...]:
        """The smallest accepted input whose output covers at least ``m`` (the tile size for an output tile)."""
        if not isinstance(m, int):
            return tuple(self.input_size_for_output(s) for s in m)
        return self.valid_input_size(m + 2 * self.output_border)

    def describe_invalid(self, n: int) -> str:
        lo, hi = self.nearest_valid_sizes(n)
        near = f"{lo} or {hi}" if lo is not None else f"{hi}"
        first = ", ".join(str(self.step * k + self.offset) for k in range(self.k_min, self.k_min + 3))
        rule = f"{self.step}*k{self.offset:+d}" if self.offset else f"multiples of {self.step}"
        shrink = f"; the output is {2 * self.output_border} smaller" if self.output_border else ""
        return (f"size {n} is not accepted by a U-Net with padding={self.padding!r}, depth={self.depth} "
                f"(nearest valid: {near}; valid sizes are {rule} from {self.min_size}: {first}, ...{shrink})")


# --- blocks ----------------------------------------------------------------------------------------------------------
def _add_conv_pair(block: nn.Module, in_ch: int, out_ch: int, cfg: "UNetConfig") -> None:
    """Give ``block`` the children ``conv1`` and ``conv2`` (3x3 conv-norm-ReLU each), the unit of every level."""
    pad = 1 if cfg.padding == "same" else 0
    kw = dict(padding=pad, norm=cfg.norm, spatial_dims=cfg.spatial_dims)
    block.conv1 = ConvNormAct(in_ch, out_ch, 3, **kw)
    block.conv2 = ConvNormAct(out_ch, out_ch, 3, **kw)


def center_crop(x: torch.Tensor, border: int, spatial_dims: int) -> torch.Tensor:
    """Drop ``border`` elements from both ends of every spatial dimension.

    The border is a Python constant fixed at construction (for accepted sizes the encoder map is always larger than
    the decoder map by the same amount), so export sees a static slice, not size arithmetic to reason about.
    """
    if border == 0:
        return x
    return x[(Ellipsis,) + (slice(border, -border),) * spatial_dims]


class DoubleConv(nn.Module):
    """Two 3x3 conv-norm-ReLU (encoder levels and bottleneck)."""

    def __init__(self, in_ch: int, out_ch: int, cfg: "UNetConfig"):
        super().__init__()
        _add_conv_pair(self, in_ch, out_ch, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpBlock(nn.Module):
    """Decoder level: up-convolution (x2, halves the channels), crop-and-concatenate the skip, two 3x3 convs.

    ``upsample="bilinear"`` replaces the transposed conv by interpolation and a 1x1 conv; 1x1 (not 2x2 or 3x3) keeps
    the geometry identical, so both variants accept the same sizes.
    """

    def __init__(self, in_ch: int, out_ch: int, skip_border: int, cfg: "UNetConfig"):
        super().__init__()
        sd = cfg.spatial_dims
        if cfg.upsample == "transpose":
            self.upsample = nn.Identity()
            self.upconv = conv_transpose_nd(sd)(in_ch, out_ch, kernel_size=2, stride=2)
        else:
            mode = "bilinear" if sd == 2 else "trilinear"
            self.upsample = nn.Upsample(scale_factor=2, mode=mode, align_corners=False)
            self.upconv = conv_nd(sd)(in_ch, out_ch, kernel_size=1)
        self.skip_border = skip_border
        self.spatial_dims = sd
        _add_conv_pair(self, 2 * out_ch, out_ch, cfg)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upconv(self.upsample(x))  # (N, C/2, 2S...)
        skip = center_crop(skip, self.skip_border, self.spatial_dims)  # (N, C/2, 2S...)
        x = torch.cat([skip, x], dim=1)  # (N, C, 2S...)
        return self.conv2(self.conv1(x))  # valid: (N, C/2, 2S-4...)

    def extra_repr(self) -> str:
        return f"skip_border={self.skip_border}"


# --- config and model ------------------------------------------------------------------------------------------------
@dataclass
class UNetConfig(ModelConfig):
    """Defaults are the paper's network: 1 input channel, 2 classes, depth 4, 64 base channels, valid padding."""

    num_classes: int = 2
    in_channels: int = 1
    spatial_dims: int = 2
    depth: int = 4  # number of 2x down-sampling steps
    base_width: int = 64  # channels of level 1; doubled at every level down
    padding: str = "valid"  # "valid" (paper: output smaller, sizes constrained) | "same"
    norm: str | None = None  # None (paper) | "batch" | "instance" | "group"
    upsample: str = "transpose"  # "transpose" (2x2 stride-2 transposed conv) | "bilinear" (interpolate + 1x1 conv)
    dropout: float = 0.0  # at the end of the contracting path (deepest encoder level and bottleneck)

    def validate(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "spatial_dims", self.spatial_dims, (2, 3))
        _check_positive_int(owner, "depth", self.depth)
        _check_positive_int(owner, "base_width", self.base_width)
        check_choice(owner, "padding", self.padding, PADDINGS)
        check_choice(owner, "norm", self.norm, NORMS)
        check_choice(owner, "upsample", self.upsample, UPSAMPLES)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"{owner}: dropout must be a number in [0, 1), got {self.dropout!r}")

    def geometry(self) -> UNetGeometry:
        return UNetGeometry(self.depth, self.padding, min_bottleneck=2 if self.norm == "instance" else 1)


class UNet(ModelBase):
    """U-Net for 2-D or 3-D segmentation; ``forward`` returns per-pixel class scores ``(N, num_classes, *out)``.

    ``out`` equals the input size for ``padding="same"`` and is ``input - 2 * output_border`` for ``"valid"``. The
    accepted sizes, the output size and the nearest valid sizes are on ``self.geometry`` (also exposed as methods).
    """

    dynamic_spatial = True

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        self.geometry = config.geometry()
        self._set_input_contract(config)
        widths = [config.base_width * 2 ** i for i in range(config.depth + 1)]  # level 1 .. bottleneck
        in_ch = config.in_channels
        for level in range(1, config.depth + 1):
            setattr(self, f"down{level}", DoubleConv(in_ch, widths[level - 1], config))
            in_ch = widths[level - 1]
        self.pool = max_pool_nd(config.spatial_dims)(kernel_size=2, stride=2)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.bottleneck = DoubleConv(widths[-2], widths[-1], config)
        for level in range(config.depth, 0, -1):  # registered in execution order, deepest first
            setattr(self, f"up{level}", UpBlock(widths[level], widths[level - 1], self._skip_border(level), config))
        self.head = conv_nd(config.spatial_dims)(widths[0], config.num_classes, kernel_size=1)
        self._feature_info = self._describe_features(widths)
        self._init_weights()

    # --- construction helpers ---
    def _set_input_contract(self, cfg: UNetConfig) -> None:
        """Per-instance input contract: it depends on depth, padding and spatial_dims."""
        geo = self.geometry
        self.spatial_dims = cfg.spatial_dims
        self.min_input_size = geo.min_size
        # valid sizes are step*k - 4, not multiples of anything; the exact rule is on self.geometry
        self.input_multiple = geo.step if cfg.padding == "same" else 1
        if cfg.padding == "same":  # moderate size, cheap for tests and export: 128x128 / 32^3 at depth 4
            size = max(geo.min_size, geo.step * (8 if cfg.spatial_dims == 2 else 2))
        else:  # the smallest valid input (188 for depth 4: output 4x4); 572 would be slow in tests
            size = geo.min_size
        self.default_input_size = (size,) * cfg.spatial_dims

    def _skip_border(self, level: int) -> int:
        """Per-side crop of the level's encoder map to the decoder map: constant for valid sizes.

        The encoder map at level i is ``2**(depth-i+1) * (b + 8) - 8`` and the up-sampled decoder map
        ``2**(depth-i+1) * (b - 4) + 8`` for bottleneck size ``b``; half the difference is ``6 * 2**(depth-i+1) - 8``
        (88 at level 1 of the paper: 568 -> 392).
        """
        if self.config.padding == "same":
            return 0
        return 6 * 2 ** (self.config.depth - level + 1) - 8

    def _describe_features(self, widths: list[int]) -> list[dict[str, Any]]:
        depth = self.config.depth
        info = [dict(num_chs=widths[i - 1], reduction=2 ** (i - 1), module=f"down{i}") for i in range(1, depth + 1)]
        info.append(dict(num_chs=widths[-1], reduction=2 ** depth, module="bottleneck"))
        info += [dict(num_chs=widths[i - 1], reduction=2 ** (i - 1), module=f"up{i}") for i in range(depth, 0, -1)]
        return info

    def _init_weights(self) -> None:
        """He-normal (std sqrt(2/fan_in)) as the paper prescribes for ReLU networks; zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- the contract ---
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder feature map ``(N, base_width, *out)``."""
        depth = self.config.depth
        skips = []
        for level in range(1, depth + 1):
            x = getattr(self, f"down{level}")(x)  # valid: (N, w*2^(i-1), S-4); same: (N, w*2^(i-1), S)
            if level == depth:
                x = self.drop(x)
            skips.append(x)
            x = self.pool(x)  # spatial halved
        x = self.drop(self.bottleneck(x))  # (N, w*2^depth, b)
        for level in range(depth, 0, -1):
            x = getattr(self, f"up{level}")(x, skips[level - 1])  # (N, w*2^(i-1), ...)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)  # (N, num_classes, *out)

    # --- input sizes ---
    @property
    def output_border(self) -> int:
        """Per-side shrinkage of the output (92 for the paper's configuration, 0 for same padding)."""
        return self.geometry.output_border

    def output_size(self, size: int | Sequence[int]) -> int | tuple[int, ...]:
        return self.geometry.output_size(size)

    def valid_input_size(self, size: int | Sequence[int]) -> int | tuple[int, ...]:
        return self.geometry.valid_input_size(size)

    def nearest_valid_sizes(self, size: int) -> tuple[int | None, int]:
        return self.geometry.nearest_valid_sizes(size)

    def input_size_for_output(self, size: int | Sequence[int]) -> int | tuple[int, ...]:
        return self.geometry.input_size_for_output(size)

    def export_dynamic_shapes(self, x: torch.Tensor | None = None,
                              dims: dict[int, str] | None = None) -> dict[int, Any]:
        """Per-axis ``Dim``s for ``torch.export`` / ``torch.onnx.export(dynamo=True)`` (pass ``(this,)`` as
        ``dynamic_shapes``) that admit exactly the accepted sizes: ``step * k + offset`` per spatial axis
        (``16*k - 4``, k >= 12 for the paper's network; ``16*k`` for same padding).

        ``dims`` maps each dynamic axis to a name (default: batch and every spatial axis); ``x`` is the example
        input, accepted for the exporter's hook protocol. Plain ``Dim``s also export through ``torch.onnx.export``
        (it defers size guards to runtime asserts), but ``torch.export.export`` rejects them for valid padding:
        the skip connections only line up for accepted sizes.
        """
        if dims is None:
            dims = {0: "batch", **{2 + i: n for i, n in enumerate(["depth", "height", "width"][-self.spatial_dims:])}}
        geo = self.geometry
        spec: dict[int, Any] = {}
        for axis, name in dims.items():
            if axis < 2:
                spec[axis] = Dim(name, min=1)
                continue
            k = Dim(f"{name}_k", min=geo.k_min)
            spec[axis] = geo.step * k + geo.offset if geo.offset else geo.step * k
        return spec

    def check_spatial_size(self, size: tuple[int, ...]) -> None:
        bad = [s for s in size if not self.geometry.is_valid(s)]
        if bad:
            why = self.geometry.describe_invalid(bad[0])
            raise InputShapeError(
                f"{type(self).__name__} cannot take spatial size {tuple(size)}: {why}; "
                f"pad to {self.valid_input_size(tuple(size))} (model.valid_input_size)"
            )

    def input_contract(self) -> dict[str, Any]:
        contract = super().input_contract()
        geo = self.geometry
        contract.update(padding=self.config.padding, size_step=geo.step, size_offset=geo.offset,
                        output_border=geo.output_border)
        return contract


# --- builders --------------------------------------------------------------------------------------------------------
@register_model(task="segmentation")
def unet(**kwargs) -> UNet:
    """The common modern U-Net: same padding (output size == input size), batch norm, 64 base channels, depth 4.

    2-D by default; ``spatial_dims=3`` gives the same network with 3-D layers.
    """
    defaults = dict(padding="same", norm="batch")
    return UNet(build_config(UNetConfig, "unet", defaults, kwargs))


@register_model(task="segmentation")
def unet_original(**kwargs) -> UNet:
    """The paper's network: valid padding (572x572 -> 388x388), no normalisation, dropout at the end of the
    contracting path (the paper does not state the rate; 0.5 is Caffe's default), 1 input channel, 2 classes."""
    defaults = dict(padding="valid", norm=None, dropout=0.5)
    return UNet(build_config(UNetConfig, "unet_original", defaults, kwargs))


@register_model(task="segmentation")
def unet3d(**kwargs) -> UNet:
    """Volumetric U-Net: same padding, 32 base channels (3-D maps are large), instance norm (small 3-D batches
    make batch statistics noisy, the nnU-Net choice)."""
    defaults = dict(spatial_dims=3, padding="same", norm="instance", base_width=32)
    return UNet(build_config(UNetConfig, "unet3d", defaults, kwargs))
