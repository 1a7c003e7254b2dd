"""Autoencoders: stacked (greedy layer-wise pretraining), convolutional denoising, and a 2-D-code digit model.

Every autoencoder's ``forward`` returns the reconstruction, so the zoo's tests, ``export_onnx`` and the Trainer use
it like any other model; ``encode`` (= ``forward_features``) gives the code and ``decode`` (= ``forward_head``) maps a
code back to an image -- the encoder is the feature extractor, the decoder the generator.

``num_classes`` is the number of *output channels* (the zoo's name for the width of the output, as for segmentation
networks); it defaults to ``in_channels``, the reconstruction of the input. A different value maps between channel
sets (e.g. a colour map from grey).

* ``stacked_ae`` (Bengio et al. 2007; Vincent et al. 2010): fully connected layers on the flattened image, trained
  greedily one layer at a time as shallow (optionally denoising) autoencoders on the previous layer's codes
  (:func:`greedy_pretrain`), then end to end (:func:`finetune_autoencoder`). ``encoder_as_classifier`` moves the
  trained encoder into ``stacked_ae_classifier`` for transfer to a labelled task.
* ``conv_dae`` (Gondara, "Medical image denoising using convolutional denoising autoencoders", 2016): conv + max-pool
  encoder, conv + up-sampling decoder, sigmoid output; trained on noisy -> clean pairs (``trainsdk.data.degradations``).
* ``conv_ae2d``: a small convolutional autoencoder with a 2-D code for 28x28 or 32x32 digits, to plot the codes and
  decode a grid of them (``trainsdk.models.latent_plots``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from ._base import ModelBase, ModelConfig, _check_positive_int, build_config, check_choice
from ._registry import create_model, register_model
from .layers import NORMS, ConvNormAct

__all__ = ["AEConfig", "AutoencoderMixin", "StackedAEConfig", "StackedAutoencoder", "StackedAEClassifierConfig",
           "StackedAEClassifier", "ConvDAEConfig",
           "ConvDenoisingAutoencoder", "ConvAE2dConfig", "ConvAutoencoder2d", "LayerwiseLog", "greedy_pretrain",
           "finetune_autoencoder", "stacked_ae", "stacked_ae_classifier", "conv_dae", "conv_ae2d"]

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity")


# --- helpers ---------------------------------------------------------------------------------------------------------
def activation(kind: str) -> nn.Module:
    """The output and hidden non-linearities of the autoencoders (``layers.act_layer`` has no sigmoid)."""
    modules = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "identity": nn.Identity}
    if kind not in modules:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {kind!r}")
    return modules[kind]()


def _check_sizes(owner: str, name: str, value, min_len: int = 1) -> None:
    if (not isinstance(value, (tuple, list)) or len(value) < min_len
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ValueError(f"{owner}: {name} must be a sequence of at least {min_len} positive integers, got {value!r}")


@dataclass
class AEConfig(ModelConfig):
    """``num_classes`` = output channels; None means ``in_channels`` (a reconstruction of the input)."""

    num_classes: int | None = None
    in_channels: int = 1
    out_activation: str = "sigmoid"  # "sigmoid" for images in [0, 1]; "identity" for unbounded (e.g. standardized)

    def __post_init__(self) -> None:
        _check_positive_int(type(self).__name__, "in_channels", self.in_channels)
        if self.num_classes is None:
            self.num_classes = self.in_channels
        super().__post_init__()

    def validate(self) -> None:
        check_choice(type(self).__name__, "out_activation", self.out_activation, ACTIVATIONS)


class AutoencoderMixin:
    """``encode``/``decode`` on top of the zoo contract: the code is ``forward_features``, the decoder the head."""

    def encode(self, x: torch.Tensor):
        self.check_input(x)
        return self.forward_features(x)

    def decode(self, code) -> torch.Tensor:
        return self.forward_head(code)


# --- stacked autoencoder ---------------------------------------------------------------------------------------------
@dataclass
class StackedAEConfig(AEConfig):
    """Layer sizes ``C*H*W -> hidden_sizes[0] -> ... -> hidden_sizes[-1]`` (1024-256-64 for 32x32 grey images)."""

    image_size: tuple[int, int] = (32, 32)
    hidden_sizes: tuple[int, ...] = (256, 64)
    activation: str = "relu"  # hidden layers and the code

    def validate(self) -> None:
        super().validate()
        _validate_dense(self)


def _validate_dense(cfg) -> None:
    """Checks shared by the stacked autoencoder and its classifier (tuples kept as tuples for stable configs)."""
    owner = type(cfg).__name__
    _check_sizes(owner, "image_size", cfg.image_size, 2)
    if len(cfg.image_size) != 2:
        raise ValueError(f"{owner}: image_size must be (H, W), got {cfg.image_size!r}")
    _check_sizes(owner, "hidden_sizes", cfg.hidden_sizes)
    check_choice(owner, "activation", cfg.activation, ACTIVATIONS)
    cfg.image_size, cfg.hidden_sizes = tuple(cfg.image_size), tuple(cfg.hidden_sizes)


def _dense_stack(sizes: list[int], reverse: bool) -> nn.Module:
    """``layer{k}`` maps ``sizes[k-1] -> sizes[k]`` (encoder) or back (decoder: ``layer{k}`` mirrors the encoder's)."""
    stack = nn.Module()
    for k in range(1, len(sizes)):
        shape = (sizes[k], sizes[k - 1]) if reverse else (sizes[k - 1], sizes[k])
        setattr(stack, f"layer{k}", nn.Linear(*shape))
    return stack


class StackedAutoencoder(AutoencoderMixin, ModelBase):
    """Fully connected autoencoder on flattened images; keys ``encoder.layer{k}``, ``decoder.layer{k}``.

    ``decoder.layer{k}`` mirrors ``encoder.layer{k}`` (it maps level k back to level k-1), so layer k's shallow
    autoencoder in greedy pretraining is exactly the pair with the same name. The decoder runs deepest first.
    """

    fixed_input_size = True

    def __init__(self, config: StackedAEConfig):
        super().__init__(config)
        self.default_input_size = tuple(config.image_size)
        self.min_input_size = min(config.image_size)
        h, w = config.image_size
        self.sizes = [config.in_channels * h * w, *config.hidden_sizes]
        self.depth = len(config.hidden_sizes)
        self.encoder = _dense_stack(self.sizes, reverse=False)
        self.decoder = _dense_stack([config.num_classes * h * w, *config.hidden_sizes], reverse=True)
        self.act = activation(config.activation)
        self.out_act = activation(config.out_activation)
        self._feature_info = [dict(num_chs=n, reduction=1, module=f"encoder.layer{k}")
                              for k, n in enumerate(config.hidden_sizes, 1)]

    def encode_layer(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return self.act(getattr(self.encoder, f"layer{k}")(h))

    def decode_layer(self, z: torch.Tensor, k: int) -> torch.Tensor:
        return (self.out_act if k == 1 else self.act)(getattr(self.decoder, f"layer{k}")(z))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(x, 1)  # (N, C*H*W)
        for k in range(1, self.depth + 1):
            h = self.encode_layer(h, k)
        return h  # (N, hidden_sizes[-1])

    def forward_head(self, z: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for k in range(self.depth, 1, -1):
            z = self.decode_layer(z, k)
        if pre_logits:
            return z  # (N, hidden_sizes[0])
        return self.decode_layer(z, 1).view(z.shape[0], self.num_classes, *self.default_input_size)

    def pretrain_layerwise(self, data, **kwargs) -> list["LayerwiseLog"]:
        """:func:`greedy_pretrain` on this model (same keyword arguments)."""
        return greedy_pretrain(self, data, **kwargs)

    def encoder_as_classifier(self, num_classes: int) -> "StackedAEClassifier":
        """A ``stacked_ae_classifier`` with a copy of this encoder (trained weights) and a new linear head."""
        cfg = self.config
        clf = create_model("stacked_ae_classifier", num_classes=num_classes, in_channels=cfg.in_channels,
                           image_size=cfg.image_size, hidden_sizes=cfg.hidden_sizes, activation=cfg.activation)
        clf.encoder = copy.deepcopy(self.encoder)
        return clf


@dataclass
class StackedAEClassifierConfig(ModelConfig):
    num_classes: int = 10
    in_channels: int = 1
    image_size: tuple[int, int] = (32, 32)
    hidden_sizes: tuple[int, ...] = (256, 64)
    activation: str = "relu"

    def validate(self) -> None:
        _validate_dense(self)


class StackedAEClassifier(ModelBase):
    """The stacked autoencoder's encoder with a linear head: ``encoder.layer{k}`` keys match the autoencoder's, so
    ``load_weights(clf, ae_checkpoint, ...)`` moves a pretrained encoder over (the decoder keys are unexpected)."""

    fixed_input_size = True

    def __init__(self, config: StackedAEClassifierConfig):
        super().__init__(config)
        self.default_input_size = tuple(config.image_size)
        self.min_input_size = min(config.image_size)
        h, w = config.image_size
        self.depth = len(config.hidden_sizes)
        self.encoder = _dense_stack([config.in_channels * h * w, *config.hidden_sizes], reverse=False)
        self.act = activation(config.activation)
        self.head = nn.Linear(config.hidden_sizes[-1], config.num_classes)
        self._feature_info = [dict(num_chs=n, reduction=1, module=f"encoder.layer{k}")
                              for k, n in enumerate(config.hidden_sizes, 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(x, 1)
        for k in range(1, self.depth + 1):
            h = self.act(getattr(self.encoder, f"layer{k}")(h))
        return h  # (N, hidden_sizes[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)


# --- training the stacked autoencoder --------------------------------------------------------------------------------
@dataclass
class LayerwiseLog:
    """One pretraining stage: reconstruction MSE of the layer's own input before and after, per-epoch train loss."""

    layer: str
    initial_loss: float
    final_loss: float
    epoch_losses: list[float] = field(default_factory=list)


def _collect(data) -> torch.Tensor:
    """A tensor/array ``(N, C, H, W)``, or an iterable of batches (tensors or ``(x, ...)`` tuples), as one tensor."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(data, dtype=torch.float32)
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a tensor, an array or an iterable of batches, got {type(data).__name__}")
    batches = [b[0] if isinstance(b, (tuple, list)) else b for b in data]
    if not batches:
        raise ValueError("data is empty: no batches to train on")
    return torch.cat([torch.as_tensor(b, dtype=torch.float32) for b in batches])


def _corrupt(x: torch.Tensor, noise: float, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Denoising-autoencoder corruption: zero a fraction ``noise`` of inputs (``mask``, Vincent et al. 2008) or add
    Gaussian noise of std ``noise``."""
    if noise == 0:
        return x
    if kind == "mask":
        return x * (torch.rand(x.shape, generator=gen) >= noise)
    return x + noise * torch.randn(x.shape, generator=gen)


def _fit(params, fn, inputs: torch.Tensor, targets: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
         noise: float, noise_kind: str, seed: int) -> list[float]:
    """Adam on MSE(fn(corrupt(inputs)), targets) for ``epochs``; shuffling and noise from ``seed`` alone."""
    if noise_kind not in ("mask", "gaussian"):
        raise ValueError(f"noise_kind must be 'mask' or 'gaussian', got {noise_kind!r}")
    if not 0 <= noise < (1 if noise_kind == "mask" else float("inf")):
        raise ValueError(f"noise must be in [0, 1) for masking or >= 0 for gaussian, got {noise!r}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(inputs), generator=gen), 0.0
        for idx in order.split(batch_size):
            loss = nn.functional.mse_loss(fn(_corrupt(inputs[idx], noise, noise_kind, gen)), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(inputs))
    return losses


def greedy_pretrain(model: StackedAutoencoder, data, *, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
                    noise: float = 0.0, noise_kind: str = "mask", seed: int = 0) -> list[LayerwiseLog]:
    """Greedy layer-wise pretraining: layer k (``encoder.layer{k}`` + ``decoder.layer{k}``) learns, as a shallow
    autoencoder, to reconstruct the codes of layer k-1 (the images for k = 1) through its narrower code; then its
    codes become the next layer's data. ``noise`` > 0 makes each stage a denoising autoencoder.

    Why: each shallow problem is easy to optimise and starts the deep network near a good solution (the 2006-2010
    route to training deep networks; today mostly a way to use unlabelled images). Fine-tune end to end afterwards.
    """
    if not isinstance(model, StackedAutoencoder):
        raise TypeError(f"greedy_pretrain needs a StackedAutoencoder (create_model('stacked_ae')), got "
                        f"{type(model).__name__}")
    if model.num_classes != model.in_channels:
        raise ValueError(f"greedy pretraining reconstructs the input: num_classes (output channels, "
                         f"{model.num_classes}) must equal in_channels ({model.in_channels})")
    x = _collect(data)
    model.check_input(x[:1])
    was_training = model.training
    model.train()
    h, logs = torch.flatten(x, 1), []
    for k in range(1, model.depth + 1):
        params = [*getattr(model.encoder, f"layer{k}").parameters(), *getattr(model.decoder, f"layer{k}").parameters()]

        def shallow(v, k=k):
            return model.decode_layer(model.encode_layer(v, k), k)

        with torch.no_grad():
            before = nn.functional.mse_loss(shallow(h), h).item()
        losses = _fit(params, shallow, h, h, epochs=epochs, lr=lr, batch_size=batch_size, noise=noise,
                      noise_kind=noise_kind, seed=seed + k)
        with torch.no_grad():
            after = nn.functional.mse_loss(shallow(h), h).item()
            h = model.encode_layer(h, k)  # the next stage's data
        logs.append(LayerwiseLog(f"layer{k}", before, after, losses))
    model.train(was_training)
    return logs


def finetune_autoencoder(model: ModelBase, data, *, targets=None, epochs: int = 5, lr: float = 1e-3,
                         batch_size: int = 64, noise: float = 0.0, noise_kind: str = "gaussian",
                         seed: int = 0) -> list[float]:
    """End-to-end training of any autoencoder on MSE to ``targets`` (default: the clean inputs); per-epoch losses.

    A compact loop for small experiments and tests; the Trainer is the tool for real runs (checkpoints, logging).
    """
    x = _collect(data)
    y = x if targets is None else _collect(targets)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"targets must pair with data: {y.shape[0]} targets for {x.shape[0]} inputs")
    was_training = model.training
    model.train()
    losses = _fit(list(model.parameters()), model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, noise=noise,
                  noise_kind=noise_kind, seed=seed)
    model.train(was_training)
    return losses


# --- convolutional denoising autoencoder ----------------------------------------------------------------------------
@dataclass
class ConvDAEConfig(AEConfig):
    widths: tuple[int, ...] = (64, 64)  # channels per level; each level halves the resolution
    upsample: str = "nearest"  # "nearest" (Gondara: UpSampling2D) | "transpose" (learned 2x2 stride-2 deconv)
    norm: str | None = None

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        _check_sizes(owner, "widths", self.widths)
        check_choice(owner, "upsample", self.upsample, ("nearest", "transpose"))
        check_choice(owner, "norm", self.norm, NORMS)
        self.widths = tuple(self.widths)


class ConvDenoisingAutoencoder(AutoencoderMixin, ModelBase):
    """``encoder.conv{i}`` (3x3 conv-ReLU, then 2x2 max-pool), ``decoder.conv{i}`` (3x3 conv-ReLU, then x2
    up-sampling; level i mirrors the encoder's), ``head`` (3x3 conv to the output channels) and the output activation.
    Fully convolutional: any size that is a multiple of ``2**levels``."""

    dynamic_spatial = True
    default_input_size = (64, 64)  # Gondara's patch size

    def __init__(self, config: ConvDAEConfig):
        super().__init__(config)
        widths, depth = list(config.widths), len(config.widths)
        self.depth = depth
        self.input_multiple = 2 ** depth
        self.min_input_size = 2 ** (depth + 1)  # a code of at least 2x2
        kw = dict(norm=config.norm)
        self.encoder, self.decoder = nn.Module(), nn.Module()
        for i in range(1, depth + 1):
            setattr(self.encoder, f"conv{i}", ConvNormAct(([config.in_channels] + widths)[i - 1], widths[i - 1], **kw))
        for i in range(depth, 0, -1):  # registered in execution order
            src = widths[-1] if i == depth else widths[i]
            setattr(self.decoder, f"conv{i}", ConvNormAct(src, widths[i - 1], **kw))
            up = (nn.Upsample(scale_factor=2, mode="nearest") if config.upsample == "nearest"
                  else nn.ConvTranspose2d(widths[i - 1], widths[i - 1], kernel_size=2, stride=2))
            setattr(self.decoder, f"up{i}", up)
        self.pool = nn.MaxPool2d(2, 2)
        self.head = nn.Conv2d(widths[0], config.num_classes, 3, padding=1)
        self.out_act = activation(config.out_activation)
        self._feature_info = [dict(num_chs=w, reduction=2 ** i, module=f"encoder.conv{i}")
                              for i, w in enumerate(widths, 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = self.pool(getattr(self.encoder, f"conv{i}")(x))
        return x  # (N, widths[-1], H / 2**depth, W / 2**depth)

    def forward_head(self, z: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for i in range(self.depth, 0, -1):
            z = getattr(self.decoder, f"up{i}")(getattr(self.decoder, f"conv{i}")(z))
        return z if pre_logits else self.out_act(self.head(z))  # (N, out, H, W)


# --- convolutional autoencoder with a 2-D code -----------------------------------------------------------------------
@dataclass
class ConvAE2dConfig(AEConfig):
    image_size: int = 32  # 28 (MNIST) or 32 (the SDK's digits); a multiple of 4
    latent_dim: int = 2  # 2: the codes can be drawn as a scatter plot, and a grid of codes decoded
    widths: tuple[int, int] = (16, 32)

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        _check_positive_int(owner, "latent_dim", self.latent_dim)
        _check_sizes(owner, "widths", self.widths, 2)
        if len(self.widths) != 2:
            raise ValueError(f"{owner}: widths must be two channel counts, got {self.widths!r}")
        _check_positive_int(owner, "image_size", self.image_size)
        if self.image_size % 4 or self.image_size < 8:
            raise ValueError(f"{owner}: image_size must be a multiple of 4 and >= 8 (28, 32), got {self.image_size}")
        self.widths = tuple(self.widths)


class ConvAutoencoder2d(AutoencoderMixin, ModelBase):
    """``encoder.conv1/conv2`` (stride-2 3x3), ``encoder.fc`` -> code; ``decoder.fc``, ``decoder.deconv2/deconv1``
    (4x4 stride-2 transposed convs). Fixed input size: the code is a dense layer over the whole image."""

    fixed_input_size = True

    def __init__(self, config: ConvAE2dConfig):
        super().__init__(config)
        s, (w1, w2) = config.image_size, config.widths
        self.default_input_size = (s, s)
        self.min_input_size = s
        self._grid = (w2, s // 4, s // 4)  # (C, H, W) of the last conv map
        flat = w2 * (s // 4) ** 2
        self.encoder, self.decoder = nn.Module(), nn.Module()
        self.encoder.conv1 = ConvNormAct(config.in_channels, w1, 3, stride=2, norm=None)  # (N, w1, s/2, s/2)
        self.encoder.conv2 = ConvNormAct(w1, w2, 3, stride=2, norm=None)  # (N, w2, s/4, s/4)
        self.encoder.fc = nn.Linear(flat, config.latent_dim)
        self.decoder.fc = nn.Linear(config.latent_dim, flat)
        self.decoder.deconv2 = nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1)  # (N, w1, s/2, s/2)
        self.decoder.deconv1 = nn.ConvTranspose2d(w1, config.num_classes, 4, stride=2, padding=1)  # (N, out, s, s)
        self.relu = nn.ReLU()
        self.out_act = activation(config.out_activation)
        self._feature_info = [dict(num_chs=w1, reduction=2, module="encoder.conv1"),
                              dict(num_chs=w2, reduction=4, module="encoder.conv2"),
                              dict(num_chs=config.latent_dim, reduction=s, module="encoder.fc")]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder.conv2(self.encoder.conv1(x))
        return self.encoder.fc(torch.flatten(x, 1))  # (N, latent_dim)

    def forward_head(self, z: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = self.relu(self.decoder.fc(z)).view(z.shape[0], *self._grid)
        h = self.relu(self.decoder.deconv2(h))
        return h if pre_logits else self.out_act(self.decoder.deconv1(h))


# --- builders --------------------------------------------------------------------------------------------------------
@register_model(task="reconstruct", tags=("autoencoder",))
def stacked_ae(**kwargs) -> StackedAutoencoder:
    """Stacked autoencoder 1024-256-64 on 32x32 grey images, ReLU codes, sigmoid output."""
    return StackedAutoencoder(build_config(StackedAEConfig, "stacked_ae", {}, kwargs))


@register_model(tags=("autoencoder",))
def stacked_ae_classifier(**kwargs) -> StackedAEClassifier:
    """The stacked autoencoder's encoder with a linear classifier (``StackedAutoencoder.encoder_as_classifier``)."""
    return StackedAEClassifier(build_config(StackedAEClassifierConfig, "stacked_ae_classifier", {}, kwargs))


@register_model(task="restore", tags=("autoencoder", "denoising"))
def conv_dae(**kwargs) -> ConvDenoisingAutoencoder:
    """Gondara (2016): two 64-channel conv/pool levels, nearest-neighbour up-sampling, sigmoid output."""
    return ConvDenoisingAutoencoder(build_config(ConvDAEConfig, "conv_dae", {}, kwargs))


@register_model(task="reconstruct", tags=("autoencoder",))
def conv_ae2d(**kwargs) -> ConvAutoencoder2d:
    """Convolutional autoencoder with a 2-D code for 32x32 digits (``image_size=28`` for MNIST)."""
    return ConvAutoencoder2d(build_config(ConvAE2dConfig, "conv_ae2d", {}, kwargs))
