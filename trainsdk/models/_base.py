"""The model contract every zoo model follows, and config helpers.

Every model is a ``ModelBase``: ``forward(x) == forward_head(forward_features(x))``, an ``example_input()`` that is a
valid input for tests and export, a dataclass ``config`` (JSON-serialisable, embedded in exported files), and an input
contract (channels, rank, smallest spatial size, size multiple) checked on every eager call with a clear error.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["ModelConfig", "ModelBase", "InputShapeError", "build_config", "check_choice", "check_bool"]


class InputShapeError(ValueError):
    """An input tensor does not fit the model: wrong rank, channel count or spatial size."""


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def check_bool(owner: str, name: str, value: Any) -> None:
    """Flags such as ``fused`` must be real bools: ``fused="no"`` would otherwise switch fusion on."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")


@dataclass
class ModelConfig:
    """Fields every model has. Subclasses add their own and validate them in ``validate``."""

    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_positive_int(owner, "num_classes", self.num_classes)
        _check_positive_int(owner, "in_channels", self.in_channels)
        self.validate()

    def validate(self) -> None:
        """Hook for subclass checks; raise ``ValueError`` naming the field, the value and what was expected."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_config(cfg_cls: type[ModelConfig], model_name: str, defaults: dict, overrides: dict) -> ModelConfig:
    """``cfg_cls(**defaults, **overrides)`` with an error naming unknown arguments and the accepted ones."""
    accepted = [f.name for f in dataclasses.fields(cfg_cls)]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(
            f"{model_name}: unknown argument(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}"
        )
    return cfg_cls(**{**defaults, **overrides})


def _exporting() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        for probe in ("is_exporting", "is_compiling"):
            fn = getattr(compiler, probe, None)
            if fn is not None and fn():
                return True
    return torch.jit.is_tracing() or torch.jit.is_scripting()


class ModelBase(nn.Module):
    """Base class of every zoo model.

    Class attributes describe the input contract; subclasses override them (or set them per instance).
    """

    spatial_dims: int = 2
    default_input_size: tuple[int, ...] = (224, 224)  # spatial size of example_input()
    min_input_size: int = 32  # smallest accepted spatial size, per dimension
    input_multiple: int = 1  # spatial sizes must be a multiple of this
    fixed_input_size: bool = False  # only default_input_size is accepted
    dynamic_spatial: bool = False  # fully convolutional: exported with dynamic spatial dims

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.in_channels = config.in_channels

    # --- the contract -------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor):
        raise NotImplementedError

    def forward_head(self, x, pre_logits: bool = False):
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def example_input(self, batch_size: int = 1, size: Sequence[int] | None = None, seed: int = 0) -> torch.Tensor:
        """A deterministic random input of the model's default (or the given) spatial size."""
        size = tuple(size) if size is not None else tuple(self.default_input_size)
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch_size, self.in_channels, *size, generator=gen)

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """Stages of ``forward_features`` as timm lists them: channels, reduction (stride), module name."""
        return list(getattr(self, "_feature_info", []))

    def input_contract(self) -> dict[str, Any]:
        """A JSON-friendly description of accepted inputs (used by the README table and export metadata)."""
        return {
            "channels": self.in_channels,
            "spatial_dims": self.spatial_dims,
            "default_size": list(self.default_input_size),
            "min_size": self.min_input_size,
            "multiple": self.input_multiple,
            "fixed_size": self.fixed_input_size,
            "dynamic_spatial": self.dynamic_spatial,
        }

    # --- input checks -------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``InputShapeError`` naming what came and what was expected. Skipped while tracing/exporting."""
        if _exporting():
            return
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        layout = "(N, C, D, H, W)" if self.spatial_dims == 3 else "(N, C, H, W)"
        if x.dim() != 2 + self.spatial_dims:
            raise InputShapeError(f"{name} expects a {2 + self.spatial_dims}-D input {layout}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"{name} was built for in_channels={self.in_channels}, got an input with {x.shape[1]} channels "
                f"(shape {tuple(x.shape)}, layout {layout})"
            )
        self.check_spatial_size(tuple(x.shape[2:]))

    def check_spatial_size(self, size: tuple[int, ...]) -> None:
        name = type(self).__name__
        if self.fixed_input_size:
            if size != tuple(self.default_input_size):
                raise InputShapeError(
                    f"{name} accepts only spatial size {tuple(self.default_input_size)}, got {size}"
                )
            return
        for s in size:
            if s < self.min_input_size:
                raise InputShapeError(
                    f"{name} needs a spatial size of at least {self.min_input_size} per dimension, got {size}"
                )
            if s % self.input_multiple:
                raise InputShapeError(
                    f"{name} needs spatial sizes that are multiples of {self.input_multiple}, got {size}"
                )
