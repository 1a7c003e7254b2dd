"""Model registry in the shape of timm's: ``register_model``, ``create_model``, ``list_models``."""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "model_entry", "UnknownModelError"]


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # the module that defines it, e.g. "resnet"
    task: str  # "classification" | "segmentation"
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable | None = None, *, task: str = "classification", tags: tuple[str, ...] = ()):
    """Decorator: register a builder function under its own name.

    ``@register_model`` or ``@register_model(task="segmentation")``.
    """

    def wrap(builder: Callable) -> Callable:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        family = builder.__module__.rsplit(".", 1)[-1]
        _REGISTRY[name] = ModelEntry(name, builder, family, task, tuple(tags))
        return builder

    return wrap(fn) if fn is not None else wrap


def model_entry(name: str) -> ModelEntry:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint} (list_models() gives all {len(_REGISTRY)} names)"
        ) from None


def create_model(name: str, *, num_classes: int | None = None, in_channels: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model. ``num_classes``/``in_channels`` default to the model's published configuration.

    Unknown keyword arguments raise a ``TypeError`` that lists the accepted ones.
    """
    entry = model_entry(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    model = entry.builder(**kwargs)
    model.model_name = entry.name  # travels into exported metadata and checkpoints
    return model


def list_models(pattern: str = "*", *, task: str | None = None, family: str | None = None) -> list[str]:
    """Sorted names of registered models, filtered by a glob ``pattern``, ``task`` and ``family``."""
    names = []
    for name, entry in _REGISTRY.items():
        if not fnmatch.fnmatch(name, pattern):
            continue
        if task is not None and entry.task != task:
            continue
        if family is not None and entry.family != family:
            continue
        names.append(name)
    return sorted(names)
