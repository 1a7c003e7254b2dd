"""Model checkpoints: a plain dict of tensors and numbers, loadable with ``torch.load(weights_only=True)``.

``{"model_name": str, "config": {create_model kwargs}, "state_dict": {name: tensor}, **extra}`` — enough to rebuild
the model with ``create_model(model_name, **config)`` on any machine, with no pickled code. Written atomically.

A training state (``save_training_state``) is the same dict plus what resuming needs: optimizer, scheduler and
grad-scaler states, epoch, global step, best metric, RNG states and the trainer configuration — still only tensors,
numbers, strings, lists and dicts, so ``deploysdk export`` and ``torch.load(weights_only=True)`` read it as well.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from deploysdk._atomic import atomic_path

__all__ = ["save_model_checkpoint", "load_model_checkpoint", "CheckpointError", "save_training_state",
           "load_training_state", "capture_rng_state", "restore_rng_state", "TRAINING_STATE_FORMAT"]


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


# --- full training state (resume) ---------------------------------------------------------------------------------
TRAINING_STATE_FORMAT = "trainsdk.training_state/1"


def capture_rng_state() -> dict:
    """Every global generator a training step may draw from, as tensors/lists/numbers (``weights_only``-safe)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [t.cpu() for t in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Put back what ``capture_rng_state`` took; CUDA states only when the same number of GPUs is visible."""
    import random

    import numpy as np

    missing = [k for k in ("torch", "numpy", "python") if k not in state]
    if missing:
        raise CheckpointError(f"RNG state lacks {missing} (expected torch, numpy, python)")
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    npst = state["numpy"]
    np.random.set_state((npst["bit_generator"], npst["keys"].cpu().numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda])


def save_training_state(path: str | os.PathLike, model: nn.Module, *, optimizer=None, scheduler=None, scaler=None,
                        epoch: int = 0, global_step: int = 0, best_metric: float | None = None,
                        rng_state: dict | None = None, trainer_config: dict | None = None,
                        **extra: Any) -> None:
    """Everything ``Trainer.fit(resume=path)`` needs, in one self-describing file, written atomically.

    Holds ``model_name``/``config``/``state_dict`` like ``save_model_checkpoint`` (so ``deploysdk export`` takes the
    file; ``model_name``/``config`` only for zoo models), plus the optimizer, scheduler and grad-scaler states, the
    number of completed epochs, the global step, the best monitored metric, the RNG states (``rng_state`` or the
    current ones) and the trainer configuration. ``extra`` must be plain data. A DDP wrapper is unwrapped.
    """
    model = getattr(model, "module", model)
    for key, value in (("epoch", epoch), ("global_step", global_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"save_training_state: {key} must be a non-negative int, got {value!r}")
    state: dict[str, Any] = {"format": TRAINING_STATE_FORMAT}
    name, config = getattr(model, "model_name", None), getattr(model, "config", None)
    if name is not None and config is not None:
        state.update(model_name=name, config=config.to_dict())
    state.update(
        state_dict=model.state_dict(),
        optimizer=None if optimizer is None else optimizer.state_dict(),
        scheduler=None if scheduler is None else scheduler.state_dict(),
        scaler=None if scaler is None else scaler.state_dict(),
        epoch=epoch, global_step=global_step, best_metric=None if best_metric is None else float(best_metric),
        rng=capture_rng_state() if rng_state is None else rng_state,
        trainer_config=trainer_config, **extra)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``save_training_state`` file with ``torch.load(weights_only=True)``: no pickled code runs."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"training state not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"could not read training state {path} with torch.load(weights_only=True): "
                              f"{str(e).strip().splitlines()[0][:300]}") from e
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = (" (a model-only checkpoint: load it with load_model_checkpoint, it cannot resume training)"
                if isinstance(state, dict) and "state_dict" in state else "")
        raise CheckpointError(f"{path} is not a training state: format {got!r}, expected "
                              f"{TRAINING_STATE_FORMAT!r}{hint}")
    missing = [k for k in ("state_dict", "epoch", "global_step", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is an incomplete training state: missing {missing}")
    return state
