"""Fully convolutional networks FCN-32s/16s/8s (Long, Shelhamer & Darrell 2015) on a VGG-16 backbone.

The backbone is VGG-16's conv stack with torchvision's indices (``features.N``), so the ``features.*`` tensors of a
VGG-16 state_dict (this zoo's ``vgg16`` or torchvision's) load unchanged: ``FCN.load_backbone(vgg_state)`` does it
and also reshapes the dense ``classifier.0/3`` into ``fc6``/``fc7``, as the paper initialises them;
``fcn.load_state_dict(vgg_state, strict=False)`` loads the ``features.*`` part alone (``classifier.*`` is unexpected).

Deviation from the Caffe reference, kept deliberately: instead of padding conv1_1 by 100 pixels and cropping at
hand-computed offsets, ``fc6`` is padded ("same") and every upsampling edge-pads its coarse map by ``_EDGE`` cells,
runs the bilinear-initialised transposed conv and crops at the offset that puts each coarse cell's output on the
centre of the pixels it pools. The output is then exactly (N, num_classes, H, W) for every H, W >= 32, no
multiple-of-32 rule, and at initialisation each upsampling equals ``F.interpolate(..., mode="bilinear")``.
``convolutionalize`` is the lecture's other half: a trained VGG classifier turned into a net that maps a larger image
to a coarse class map.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._base import InputShapeError, ModelBase, ModelConfig, _exporting, build_config
from ._registry import register_model
from .vgg import make_features

__all__ = ["FCN", "FCNConfig", "ConvolutionalizedVGG", "convolutionalize", "bilinear_kernel", "fcn32s", "fcn16s",
           "fcn8s"]

STRIDES = (32, 16, 8)  # the coarsest prediction each variant fuses down to: FCN-32s, FCN-16s, FCN-8s
_EDGE = 2  # coarse cells of edge padding per side before each upsampling; enough for a partial last cell
_VGG_POOL = 512 * 7 * 7  # VGG's classifier input: 512 channels on the 7x7 grid of a 224x224 image


# --- helpers ------------------------------------------------------------------------------------------------------
def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """A (C, C, 2f, 2f) transposed-conv weight that upsamples each channel on its own by bilinear interpolation.

    Diagonal (class c only feeds class c) like the reference's ``surgery.interp``, so learning may later mix classes.
    """
    size = 2 * factor
    centre = factor - 0.5
    taps = 1.0 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor  # (2f,) triangle
    kernel = (taps[:, None] * taps[None, :]).float()  # (2f, 2f)
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


def _upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, kernel_size=2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, factor))
    return up


def upsample_to(score: torch.Tensor, up: nn.ConvTranspose2d, size) -> torch.Tensor:
    """Upsample a coarse map with ``up`` (kernel 2f, stride f) and crop it to exactly ``size``.

    Coarse cell i sits on fine position f*i + (f-1)/2 (the centre of the f pixels it pools). Edge padding keeps the
    transposed conv from fading towards zero at the borders (its kernel reaches only two cells), and the crop offset
    aligns the grids; with a bilinear kernel the result equals F.interpolate(align_corners=False), borders included.
    """
    f = up.stride[0]
    score = F.pad(score, (_EDGE,) * 4, mode="replicate")  # (N, C, h + 4, w + 4)
    out = up(score)  # (N, C, f * (h + 5), f * (w + 5))
    top = f * _EDGE + f // 2
    return out[:, :, top:top + size[0], top:top + size[1]]  # (N, C, *size)


def _pool_indices(features: nn.Sequential) -> list[int]:
    """Positions of the five max pools in a VGG ``features`` stack (16/23/30 plain, 23/33/43 with batch norm)."""
    return [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]


def _dense_to_conv(linear: nn.Linear, in_ch: int, k: int, padding: int = 0) -> nn.Conv2d:
    """A k x k conv that computes ``linear`` at every position: same weights, viewed as (out, in_ch, k, k)."""
    conv = nn.Conv2d(in_ch, linear.out_features, kernel_size=k, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_ch, k, k))
        conv.bias.copy_(linear.bias)
    return conv


# --- blocks -------------------------------------------------------------------------------------------------------
class ConvolutionalizedVGG(nn.Module):
    """A VGG classifier whose dense layers became convs: fc6 7x7 (valid), fc7 1x1, score 1x1.

    At 224x224 it gives the classifier's scores as a 1x1 map; a larger image gives a (N, C, h', w') class map with
    h' = H/32 - 6, each cell the classifier's answer for one 224-pixel window (a stride-32 sliding window for free).
    """

    min_input_size = 224  # fc6 needs a 7x7 pool5 map

    def __init__(self, features: nn.Sequential, fc6: nn.Conv2d, fc7: nn.Conv2d, score: nn.Conv2d,
                 dropout: tuple[float, float] = (0.5, 0.5)):
        super().__init__()
        self.features = features
        self.fc6, self.relu6, self.drop6 = fc6, nn.ReLU(inplace=True), nn.Dropout(dropout[0])
        self.fc7, self.relu7, self.drop7 = fc7, nn.ReLU(inplace=True), nn.Dropout(dropout[1])
        self.score = score
        self.num_classes = score.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _exporting() and min(x.shape[-2:]) < self.min_input_size:
            raise InputShapeError(f"ConvolutionalizedVGG needs a spatial size of at least {self.min_input_size} per "
                                  f"dimension (fc6 is a valid 7x7 conv on the stride-32 map), got {tuple(x.shape[2:])}")
        x = self.features(x)  # (N, 512, H/32, W/32)
        x = self.drop6(self.relu6(self.fc6(x)))  # (N, hidden, H/32 - 6, W/32 - 6)
        x = self.drop7(self.relu7(self.fc7(x)))
        return self.score(x)  # (N, num_classes, H/32 - 6, W/32 - 6)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """One score per class: the class map averaged over positions (N, num_classes)."""
        return self.forward(x).mean(dim=(2, 3))


def convolutionalize(vgg_model: nn.Module) -> ConvolutionalizedVGG:
    """Turn a trained VGG (torchvision layout: ``features``, ``avgpool``, ``classifier.0/3/6``) into a conv net.

    The weights are copied, not shared. The 7x7 adaptive pool is dropped: it is the identity at 224x224, where the
    result matches the classifier; on larger inputs it would squash the map that the conv version keeps.
    """
    cls = vgg_model.classifier
    dense = [m for m in cls if isinstance(m, nn.Linear)]
    if len(dense) != 3 or dense[0].in_features != _VGG_POOL:
        raise ValueError(f"convolutionalize expects a VGG classifier of 3 Linear layers, the first taking "
                         f"{_VGG_POOL} inputs (512x7x7); got {[tuple(m.weight.shape) for m in dense]}")
    drops = tuple(m.p for m in cls if isinstance(m, nn.Dropout)) or (0.0, 0.0)
    fc6 = _dense_to_conv(dense[0], 512, 7)
    fc7 = _dense_to_conv(dense[1], dense[1].in_features, 1)
    score = _dense_to_conv(dense[2], dense[2].in_features, 1)
    net = ConvolutionalizedVGG(copy.deepcopy(vgg_model.features), fc6, fc7, score, (drops + drops)[:2])
    return net.train(vgg_model.training)


# --- model --------------------------------------------------------------------------------------------------------
@dataclass
class FCNConfig(ModelConfig):
    num_classes: int = 21  # PASCAL VOC: 20 classes + background
    stride: int = 32  # coarsest skip fused: 32 -> FCN-32s, 16 -> FCN-16s (+pool4), 8 -> FCN-8s (+pool3, pool4)
    batch_norm: bool = False  # VGG-16-BN backbone (vgg16_bn's features.N indices)
    hidden_dim: int = 4096  # fc6/fc7 width; smaller suits small medical datasets (4096 gives fc6 103M weights)
    dropout: float = 0.5  # after fc6 and fc7
    zero_init_scores: bool = True  # the paper's init: score layers start at zero, so 16s/8s start as their parent

    def validate(self) -> None:
        if isinstance(self.stride, bool) or self.stride not in STRIDES:
            raise ValueError(f"FCNConfig: stride must be one of {list(STRIDES)}, got {self.stride!r}")
        if isinstance(self.hidden_dim, bool) or not isinstance(self.hidden_dim, int) or self.hidden_dim < 1:
            raise ValueError(f"FCNConfig: hidden_dim must be a positive integer, got {self.hidden_dim!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FCNConfig: dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("batch_norm", "zero_init_scores"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"FCNConfig: {name} must be True or False, got {getattr(self, name)!r}")


class FCN(ModelBase):
    """VGG-16 conv stack, convolutionalized fc6/fc7, class scores at stride 32, fused with pool4/pool3 scores.

    Output (N, num_classes, H, W) for any H, W >= 32 (one pool5 cell). ``forward_features`` returns a dict with
    ``pool3``, ``pool4``, ``fc7`` and ``input_size``; the head needs the last to crop the full-resolution map.
    """

    default_input_size = (224, 224)
    min_input_size = 32
    dynamic_spatial = True

    def __init__(self, config: FCNConfig):
        super().__init__(config)
        c = config
        self.stride = c.stride
        self.features = make_features(16, c.batch_norm, c.in_channels)
        self._pools = _pool_indices(self.features)  # [p1, p2, p3, p4, p5]
        # fc6 is padded ("same"), unlike convolutionalize's valid one: the map keeps every pool5 cell (H/32)
        self.fc6 = nn.Conv2d(512, c.hidden_dim, kernel_size=7, padding=3)
        self.relu6, self.drop6 = nn.ReLU(inplace=True), nn.Dropout(c.dropout)
        self.fc7 = nn.Conv2d(c.hidden_dim, c.hidden_dim, kernel_size=1)
        self.relu7, self.drop7 = nn.ReLU(inplace=True), nn.Dropout(c.dropout)
        self.score_fr = nn.Conv2d(c.hidden_dim, c.num_classes, 1)
        self._build_decoder(c)
        self._feature_info = [dict(num_chs=256, reduction=8, module=f"features.{self._pools[2]}"),
                              dict(num_chs=512, reduction=16, module=f"features.{self._pools[3]}"),
                              dict(num_chs=c.hidden_dim, reduction=32, module="fc7")]
        self._init_weights(c.zero_init_scores)

    def _build_decoder(self, c: FCNConfig) -> None:
        """The reference's layer names: upscore (32s); upscore2, score_pool4, upscore16 (16s); +upscore_pool4,
        score_pool3, upscore8 (8s)."""
        n = c.num_classes
        if c.stride == 32:
            self.upscore = _upsampler(n, 32)
            return
        self.upscore2 = _upsampler(n, 2)
        self.score_pool4 = nn.Conv2d(512, n, 1)
        if c.stride == 16:
            self.upscore16 = _upsampler(n, 16)
            return
        self.upscore_pool4 = _upsampler(n, 2)
        self.score_pool3 = nn.Conv2d(256, n, 1)
        self.upscore8 = _upsampler(n, 8)

    def _init_weights(self, zero_init_scores: bool) -> None:
        """Kaiming for the convs, zero for the score layers if asked; the upsamplers keep their bilinear weights."""
        scores = [getattr(self, n) for n in ("score_fr", "score_pool4", "score_pool3") if hasattr(self, n)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in scores if zero_init_scores else []:
            nn.init.zeros_(m.weight)

    def forward_features(self, x: torch.Tensor) -> dict:
        size = tuple(x.shape[-2:])  # (H, W), for the final crop
        feats = {}
        p3, p4 = self._pools[2], self._pools[3]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == p3:
                feats["pool3"] = x  # (N, 256, H/8, W/8)
            elif i == p4:
                feats["pool4"] = x  # (N, 512, H/16, W/16)
        x = self.drop6(self.relu6(self.fc6(x)))  # (N, hidden, H/32, W/32)
        feats["fc7"] = self.drop7(self.relu7(self.fc7(x)))  # (N, hidden, H/32, W/32)
        feats["input_size"] = size
        return feats

    def forward_head(self, x: dict, pre_logits: bool = False) -> torch.Tensor:
        """Scores at stride 32, fused with the finer skips the variant has, upsampled to the input size.

        ``pre_logits``: the fc7 features (N, hidden, H/32, W/32) instead of the score map.
        """
        if pre_logits:
            return x["fc7"]
        score = self.score_fr(x["fc7"])  # (N, C, H/32, W/32)
        if self.stride == 32:
            return upsample_to(score, self.upscore, x["input_size"])  # (N, C, H, W)
        pool4 = x["pool4"]
        score = upsample_to(score, self.upscore2, pool4.shape[-2:]) + self.score_pool4(pool4)  # (N, C, H/16, W/16)
        if self.stride == 16:
            return upsample_to(score, self.upscore16, x["input_size"])
        pool3 = x["pool3"]
        score = upsample_to(score, self.upscore_pool4, pool3.shape[-2:]) + self.score_pool3(pool3)  # (N, C, H/8, W/8)
        return upsample_to(score, self.upscore8, x["input_size"])  # (N, C, H, W)

    @torch.no_grad()
    def load_backbone(self, vgg_state: dict, include_fc: bool = True) -> list[str]:
        """Copy a VGG-16 state_dict's ``features.*`` (all of them, shapes checked) and, if ``include_fc`` and the
        widths fit, its ``classifier.0/3`` reshaped into ``fc6``/``fc7``: the paper's initialisation.

        Returns the names of this model's tensors that were filled.
        """
        own = self.state_dict()
        wanted = {k: v for k, v in vgg_state.items() if k.startswith("features.")}
        expected = {k for k in own if k.startswith("features.")}
        if set(wanted) != expected:
            missing, extra = sorted(expected - set(wanted)), sorted(set(wanted) - expected)
            raise ValueError(f"load_backbone: the state_dict is not a VGG-16{'-BN' if self.config.batch_norm else ''} "
                             f"conv stack: missing {missing[:4]}, unexpected {extra[:4]}")
        if include_fc and "classifier.0.weight" in vgg_state and "classifier.3.weight" in vgg_state:
            for src, dst in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
                w = vgg_state[f"{src}.weight"]
                if w.numel() == own[f"{dst}.weight"].numel():
                    wanted[f"{dst}.weight"] = w.reshape(own[f"{dst}.weight"].shape)
                    wanted[f"{dst}.bias"] = vgg_state[f"{src}.bias"]
        for k, v in wanted.items():
            if own[k].shape != v.shape:
                raise ValueError(f"load_backbone: {k} has shape {tuple(v.shape)}, this model needs "
                                 f"{tuple(own[k].shape)} (in_channels={self.in_channels})")
            own[k].copy_(v)
        return sorted(wanted)


# --- builders -----------------------------------------------------------------------------------------------------
def _fcn(name: str, stride: int, kwargs: dict) -> FCN:
    return FCN(build_config(FCNConfig, name, dict(stride=stride), kwargs))


@register_model(task="segmentation")
def fcn32s(**kwargs) -> FCN:
    """Scores at stride 32, upsampled in one step: coarse, blobby boundaries."""
    return _fcn("fcn32s", 32, kwargs)


@register_model(task="segmentation")
def fcn16s(**kwargs) -> FCN:
    """FCN-32s plus a pool4 skip: finer detail from a stride-16 layer."""
    return _fcn("fcn16s", 16, kwargs)


@register_model(task="segmentation")
def fcn8s(**kwargs) -> FCN:
    """FCN-16s plus a pool3 skip: the paper's best variant."""
    return _fcn("fcn8s", 8, kwargs)
