"""What the GAN recipes share: the result with its side-by-side table, seeded model construction, batched
prediction, the supervised (pixel-loss) baseline trained with the SDK's ``Trainer`` (resumable), and the checks
every recipe config runs on construction.
"""
from __future__ import annotations

import copy
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models import create_model

__all__ = ["GANRecipeResult", "seeded_model", "predict", "fit_pixel_baseline", "refresh_batch_norm", "subdir", "check_int",
           "check_number", "check_choice", "Stopwatch"]


@dataclass
class GANRecipeResult:
    """What a GAN recipe measured. ``metrics``: arm -> {metric: value} on the held-out test set, in the order the
    arms were run (the baseline first); ``models``: arm -> trained network (generator, denoiser or classifier);
    ``details``: recipe-specific figures (GAN diagnostics, per-seed values, sizes); ``files``: what was written
    (sample grids, checkpoints)."""

    task: str
    metrics: dict[str, dict[str, float]]
    models: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self, names: Sequence[str] | None = None, *, digits: int = 4) -> str:
        """The arms side by side: one row per metric, one column per arm."""
        arms = list(self.metrics)
        names = list(names) if names is not None else list(dict.fromkeys(k for m in self.metrics.values() for k in m))
        width = max([len(n) for n in names] + [6])
        cols = [max(len(a), digits + 6) for a in arms]
        lines = ["metric".ljust(width) + "".join("  " + a.rjust(c) for a, c in zip(arms, cols))]
        for name in names:
            cells = [self.metrics[a].get(name, float("nan")) for a in arms]
            lines.append(name.ljust(width) + "".join("  " + f"{v:.{digits}f}".rjust(c) for v, c in zip(cells, cols)))
        return "\n".join(lines)

    def summary(self) -> str:
        return f"{self.task}: {len(self.metrics)} arms in {self.seconds:.1f} s\n{self.table()}"


class Stopwatch:
    """Seconds since construction (``GANRecipeResult.seconds``)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# --- config checks -----------------------------------------------------------------------------------------------
def check_int(owner: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


def check_number(owner: str, name: str, value: Any, low: float, high: float = math.inf, *,
                 open_low: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        raise ValueError(f"{owner}: {name} must be a finite number {bound}"
                         f"{'' if high == math.inf else f' and <= {high}'}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")


# --- models ------------------------------------------------------------------------------------------------------
def seeded_model(name: str, seed: int, **kwargs: Any) -> nn.Module:
    """``create_model(name, **kwargs)`` initialised from ``seed`` without touching the global generators."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **kwargs)


def device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``model(x)`` in eval mode, ``batch_size`` at a time, on the model's device; returned on the CPU."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    try:
        out = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def refresh_batch_norm(model: nn.Module, source: torch.Tensor, batch_size: int) -> nn.Module:
    """Recompute the batch-norm running statistics of ``model`` (in place) from ``source`` batches, as SWA's
    ``update_bn`` does: averaged weights come with the live model's statistics, which do not match them (here that
    mismatch cost the L2 baseline 10 HU of MAE). Models without batch norm are returned untouched."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    from torch.optim.swa_utils import update_bn

    device = device_of(model)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(source), batch_size=batch_size)
    was_training = model.training
    update_bn(([x.to(device)] for (x,) in loader), model)
    model.train(was_training)
    return model


def subdir(out_dir: str | None, name: str) -> str | None:
    return None if out_dir is None else os.path.join(out_dir, name)


# --- supervised baseline -----------------------------------------------------------------------------------------
_PIXEL = {"l2": F.mse_loss, "l1": F.l1_loss}


def _ema_callback(decay: float):
    """A ``Trainer`` callback keeping an exponential moving average of the model's weights, updated after every
    optimizer step exactly as ``GANTrainer`` updates its EMA generator (so a baseline and a GAN arm with the same
    ``ema_decay`` are averaged alike); saved in the checkpoints, so a resumed run continues the average."""
    from ...training import Callback

    class WeightEMA(Callback):
        def __init__(self) -> None:
            self.ema: nn.Module | None = None
            self._pending: dict | None = None

        def on_fit_start(self, trainer) -> None:
            self.ema = copy.deepcopy(trainer.model).eval().requires_grad_(False)
            if self._pending is not None:
                self.ema.load_state_dict(self._pending)

        @torch.no_grad()
        def on_batch_end(self, trainer, batch_idx, metrics) -> None:
            for pe, p in zip(self.ema.parameters(), trainer.model.parameters()):
                pe.lerp_(p, 1.0 - decay)
            for be, b in zip(self.ema.buffers(), trainer.model.buffers()):
                be.copy_(b)

        def state_dict(self) -> dict[str, Any]:
            return {} if self.ema is None else {"ema": self.ema.state_dict()}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self._pending = state.get("ema")

    return WeightEMA()


def _pixel_step(loss_fn: Callable) -> Callable:
    def step(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        source, target = batch
        return {"loss": loss_fn(model(source), target)}
    return step


def fit_pixel_baseline(model: nn.Module, source: torch.Tensor, target: torch.Tensor, *, loss: str, epochs: int,
                       batch_size: int, lr: float, betas: tuple[float, float], seed: int, device: str,
                       out_dir: str | None, resume: str | None,
                       ema_decay: float | None = None) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train ``model`` (source -> target) on a pixel loss alone with the SDK's ``Trainer``: Adam with the GAN's
    ``lr``/``betas`` at a constant rate, the same batches per epoch (``drop_last``), checkpoints under ``out_dir``
    (resumable with ``resume``). The baseline each GAN recipe is compared against. Returns (the model to evaluate:
    the weights' moving average with refreshed batch-norm statistics when ``ema_decay`` is set, else ``model``;
    the epoch records)."""
    from ...training import Trainer, TrainerConfig

    if loss not in _PIXEL:
        raise ValueError(f"loss must be one of {sorted(_PIXEL)}, got {loss!r}")
    config = TrainerConfig(max_epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
                           out_dir=out_dir, progress=False, drop_last=True, log_every=0,
                           loggers=("jsonl",) if out_dir else ())
    ema = None if ema_decay is None else _ema_callback(float(ema_decay))
    trainer = Trainer(model, config, (source, target), step_fn=_pixel_step(_PIXEL[loss]),
                      optimizer=lambda params: torch.optim.Adam(params, lr=lr, betas=betas),
                      callbacks=() if ema is None else (ema,))
    history = trainer.fit(resume=resume)
    if ema is None:
        return model, history
    return refresh_batch_norm(ema.ema, source, batch_size), history

