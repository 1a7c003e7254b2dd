"""Trainer configuration: dataclasses that decide a run, validated on construction, saved in every checkpoint."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .callbacks import EarlyStopping

__all__ = ["TrainerConfig", "EarlyStoppingConfig", "PRECISIONS", "LOGGER_NAMES"]

PRECISIONS = ("fp32", "bf16", "fp16")
LOGGER_NAMES = ("csv", "jsonl", "tensorboard")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"TrainerConfig: {name} must be an integer >= {low}, got {value!r}")


def _check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    if value not in tuple(choices):
        raise ValueError(f"TrainerConfig: {name} must be one of {list(choices)}, got {value!r}")


@dataclass
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    monitor: str = "val_loss"
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        EarlyStopping(self.monitor, self.mode, self.patience, self.min_delta)  # same checks, same messages


@dataclass
class TrainerConfig:
    """Everything that decides a run; saved in every checkpoint and compared on resume.

    ``device``: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N". ``precision``: "fp32", "bf16" (autocast;
    CPU or a bf16-capable GPU) or "fp16" (autocast + GradScaler, CUDA only). ``batch_size`` is per process.
    ``out_dir=None`` writes nothing (no checkpoints, no logs). ``log_every``: steps between step records (0: epoch
    records only). ``checkpoint_every``: epochs between ``last.pt`` writes; ``keep_last``: how many
    ``epoch_NNNN.pt`` files to keep (0: none). ``monitor``/``monitor_mode``: the metric ``best.pt`` tracks
    (default: early stopping's, else ``val_loss`` with validation data, else ``train_loss``).
    ``scheduler_interval``: "step" or "epoch". ``progress``: show the text progress bar (only on a TTY).
    ``loggers``: any of "csv", "jsonl", "tensorboard" (written under ``out_dir``).
    """

    max_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    device: str = "auto"
    precision: str = "fp32"
    grad_clip: float | None = None
    num_workers: int = 0
    seed: int = 0
    log_every: int = 50
    out_dir: str | None = None
    checkpoint_every: int = 1
    keep_last: int = 0
    early_stopping: EarlyStoppingConfig | None = None
    monitor: str | None = None
    monitor_mode: str = "min"
    scheduler_interval: str = "step"
    drop_last: bool = False
    eval_batch_size: int | None = None
    progress: bool = True
    loggers: tuple[str, ...] = ("csv", "jsonl")

    def __post_init__(self) -> None:
        for name, low in (("max_epochs", 1), ("batch_size", 1), ("num_workers", 0), ("seed", 0),
                          ("log_every", 0), ("checkpoint_every", 1), ("keep_last", 0)):
            _check_int(name, getattr(self, name), low)
        if self.eval_batch_size is not None:
            _check_int("eval_batch_size", self.eval_batch_size, 1)
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"TrainerConfig: {name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}"
                                 f", got {value!r}")
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool) or not isinstance(
                self.grad_clip, (int, float)) or not self.grad_clip > 0 or not math.isfinite(self.grad_clip)):
            raise ValueError(f"TrainerConfig: grad_clip must be None or a finite number > 0, got {self.grad_clip!r}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or (self.device.startswith("cuda:")
                                                        and self.device[5:].isdigit())):
            raise ValueError(f"TrainerConfig: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("monitor_mode", self.monitor_mode, ("min", "max"))
        _check_choice("scheduler_interval", self.scheduler_interval, ("step", "epoch"))
        for name in ("drop_last", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainerConfig: {name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.early_stopping, Mapping):
            self.early_stopping = EarlyStoppingConfig(**self.early_stopping)
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStoppingConfig):
            raise TypeError(f"TrainerConfig: early_stopping must be an EarlyStoppingConfig, a dict or None, got "
                            f"{type(self.early_stopping).__name__}")
        self.loggers = (self.loggers,) if isinstance(self.loggers, str) else tuple(self.loggers)
        for name in self.loggers:
            _check_choice("loggers entry", name, LOGGER_NAMES)
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["loggers"] = list(self.loggers)  # lists, not tuples: plain data for weights_only checkpoints and JSON
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TypeError(f"TrainerConfig: unknown field(s) {unknown}; accepted: {sorted(known)}")
        return cls(**d)
