"""Perceptual loss (Johnson et al. 2016; Yang et al. 2018 use it with WGAN for low-dose CT): the distance between
feature maps of a frozen network, here any zoo model, e.g. a VGG or ResNet trained in the SDK or loaded from a
user's weights file (nothing is downloaded).

The network is copied, frozen (no gradients, eval mode for good: its batch norms never update) and its in-place
activations are switched off, so the captured feature maps are exactly the named layers' outputs.
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PerceptualLoss", "build_frozen_model", "match_channels"]


def build_frozen_model(model: nn.Module | str, *, weights: str | os.PathLike | Mapping | None = None,
                       model_kwargs: Mapping[str, Any] | None = None,
                       load_kwargs: Mapping[str, Any] | None = None) -> tuple[nn.Module, Any]:
    """A frozen copy of ``model`` (or ``create_model(model, **model_kwargs)`` for a name), with ``weights`` (a
    path or a state_dict) loaded through ``trainsdk.models.load_weights(**load_kwargs)``; returns ``(net, report)``
    (report None without weights)."""
    from trainsdk.models import create_model, load_weights

    if isinstance(model, str):
        net = create_model(model, **dict(model_kwargs or {}))
    elif isinstance(model, nn.Module):
        if model_kwargs:
            raise ValueError("model_kwargs only apply when the model is given by name")
        net = copy.deepcopy(model)
    else:
        raise TypeError(f"the feature network must be a zoo model name or an nn.Module, got {type(model).__name__}")
    report = None if weights is None else load_weights(net, weights, **dict(load_kwargs or {}))
    for m in net.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    net.requires_grad_(False)
    return net.eval(), report


def match_channels(x: torch.Tensor, in_channels: int | None, owner: str) -> torch.Tensor:
    """Feed a 1-channel image to a k-channel network by repeating it (a grey image as grey RGB)."""
    if in_channels is None or x.shape[1] == in_channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, in_channels, *x.shape[2:])
    raise ValueError(f"{owner}: the feature network takes {in_channels} channels, got {x.shape[1]} (only 1-channel "
                     f"images are adapted, by repetition)")


class _Captured(Exception):
    """Raised by the last hook: the layers after it need not run."""


class PerceptualLoss(nn.Module):
    """``sum_l w_l * mean((phi_l(pred) - phi_l(target))^2)`` over the named ``layers`` of a frozen network.

    ``feature_extractor``: a zoo model name (built with ``model_kwargs``) or a module (copied). ``layers``: module
    names from ``named_modules()``, e.g. ``["features.35"]`` (VGG-19's relu5_4 in torchvision's numbering, Yang et
    al.'s choice) or ``["layer2"]`` for a ResNet. ``weights``: a path or state_dict loaded with
    ``trainsdk.models.load_weights(**load_kwargs)`` (``self.load_report`` says what happened). ``criterion``:
    "mse" or "l1". ``normalize``: applied to both images before the network (e.g. ImageNet mean/std). 1-channel
    images go to a 3-channel network repeated. The network stops after the last captured layer.
    """

    def __init__(self, feature_extractor: nn.Module | str, layers: Sequence[str], *,
                 weights: str | os.PathLike | Mapping | None = None, layer_weights: Sequence[float] | None = None,
                 criterion: str = "mse", normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, load_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
        if criterion not in ("mse", "l1"):
            raise ValueError(f"criterion must be 'mse' or 'l1', got {criterion!r}")
        if normalize is not None and not callable(normalize):
            raise TypeError(f"normalize must be callable, got {type(normalize).__name__}")
        self.extractor, self.load_report = build_frozen_model(feature_extractor, weights=weights,
                                                              model_kwargs=model_kwargs, load_kwargs=load_kwargs)
        self.layers = list(layers)
        weights_ = [1.0] * len(self.layers) if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights_) != len(self.layers):
            raise ValueError(f"layer_weights has {len(weights_)} entries for {len(self.layers)} layers")
        self.layer_weights, self.criterion, self.normalize = weights_, criterion, normalize
        self._store: dict[str, torch.Tensor] = {}
        self._hook_layers()

    def _hook_layers(self) -> None:
        modules = dict(self.extractor.named_modules())
        for name in self.layers:
            if name not in modules or name == "":
                close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
                raise ValueError(f"PerceptualLoss: no layer {name!r} in {type(self.extractor).__name__}"
                                 f"{'; did you mean ' + ', '.join(map(repr, close)) + '?' if close else ''}")
            modules[name].register_forward_hook(self._make_hook(name))

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            self._store[name] = output
            if len(self._store) == len(self.layers):
                raise _Captured
        return hook

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.extractor.eval()  # frozen: batch-norm statistics and dropout stay in inference mode
        return self

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named layers' outputs for images ``x`` (N, C, *spatial)."""
        x = match_channels(x, getattr(self.extractor, "in_channels", None), "PerceptualLoss")
        if self.normalize is not None:
            x = self.normalize(x)
        self._store = {}
        run = getattr(self.extractor, "forward_features", self.extractor)
        try:
            run(x)
        except _Captured:
            pass
        store, self._store = self._store, {}
        missing = [n for n in self.layers if n not in store]
        if missing:
            raise RuntimeError(f"PerceptualLoss: layers {missing} did not run in {type(self.extractor).__name__}"
                               f".forward_features (are they part of the head?)")
        return store

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        fp = self.features(pred)
        with torch.no_grad():
            ft = self.features(target)
        dist = F.mse_loss if self.criterion == "mse" else F.l1_loss
        return sum(w * dist(fp[n], ft[n]) for n, w in zip(self.layers, self.layer_weights))
