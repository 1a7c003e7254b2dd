"""Model checkpoints: a plain dict of tensors and numbers, loadable with ``torch.load(weights_only=True)``.

``{"model_name": str, "config": {create_model kwargs}, "state_dict": {name: tensor}, **extra}`` — enough to rebuild
the model with ``create_model(model_name, **config)`` on any machine, with no pickled code. Written atomically.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from deploysdk._atomic import atomic_path

__all__ = ["save_model_checkpoint", "load_model_checkpoint", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or lacks what is needed to rebuild the model."""


def save_model_checkpoint(model: nn.Module, path: str | os.PathLike, **extra: Any) -> None:
    """Write ``model`` (a zoo model: it has ``model_name`` and ``config``) to ``path``; ``extra`` must be plain data."""
    name = getattr(model, "model_name", None)
    config = getattr(model, "config", None)
    if name is None or config is None:
        raise CheckpointError(f"{type(model).__name__} is not a zoo model (no model_name/config): build it with "
                              f"trainsdk.models.create_model to save a self-describing checkpoint")
    state = {"model_name": name, "config": config.to_dict(), "state_dict": model.state_dict(), **extra}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_model_checkpoint(path: str | os.PathLike, *, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by ``save_model_checkpoint``; returns ``(model, checkpoint_dict)``."""
    from ..models import create_model

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"could not read checkpoint {path}: {e}") from e
    missing = [k for k in ("model_name", "config", "state_dict") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not an SDK model checkpoint: missing {missing} (expected model_name, "
                              f"config, state_dict)")
    model = create_model(ckpt["model_name"], **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model, ckpt
