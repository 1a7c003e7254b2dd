"""The training engine: a minGPT-shaped ``Trainer`` (model, step function, optimizer, schedule, callbacks).

    config = TrainerConfig(max_epochs=20, batch_size=64, lr=1e-3, out_dir="runs/exp1", precision="bf16")
    trainer = Trainer(create_model("lenet5"), config, train_data=(x, y), val_data=(xv, yv))
    history = trainer.fit(resume="auto")        # continues from runs/exp1/last.pt when it exists

Reproducibility: ``fit`` seeds torch, numpy and ``random`` (global generators, ``seed + rank``) unless it resumes,
in which case it restores the generators saved with the checkpoint. Each epoch's sample order comes from a
``DistributedSampler`` seeded with ``seed`` and the epoch, and the DataLoader's own generator (which DataLoader
workers derive their torch/numpy/``random`` seeds from) is reseeded from ``(seed, epoch, rank)`` before every epoch.
So resuming from a checkpoint continues exactly: the same weights, optimizer state and logged losses as an
uninterrupted run. Checkpoints are written at epoch boundaries; an interrupted epoch is redone from its start.

Under torchrun the Trainer joins the process group by itself (see ``distributed.py``); ``batch_size`` is per process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from . import distributed as D
from .callbacks import Callback, CSVLogger, EarlyStopping, JSONLLogger, ModelCheckpoint, ProgressBar, \
    TensorBoardLogger
from .config import EarlyStoppingConfig, TrainerConfig
from .checkpoint import capture_rng_state, load_training_state, restore_rng_state, save_training_state
from .steps import DeviceLoader, as_dataset, batch_len, classification_step, mean_of_steps, scalar_metric, \
    split_step_output, to_device

__all__ = ["TrainerConfig", "EarlyStoppingConfig", "Trainer", "NonFiniteLossError"]

_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_LOGGERS = {"csv": CSVLogger, "jsonl": JSONLLogger, "tensorboard": TensorBoardLogger}
# fields whose change makes a resumed run differ from an uninterrupted one (max_epochs, out_dir, ... may change)
_RESUME_SENSITIVE = ("batch_size", "lr", "weight_decay", "precision", "grad_clip", "seed", "drop_last",
                     "scheduler_interval")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped before that step's update touched the weights."""

    def __init__(self, loss: float, epoch: int, global_step: int, batch_idx: int, checkpoint: str | None) -> None:
        self.loss, self.epoch, self.global_step, self.batch_idx, self.checkpoint = (loss, epoch, global_step,
                                                                                     batch_idx, checkpoint)
        kept = (f"the last good checkpoint {checkpoint} is kept unchanged" if checkpoint
                else "this process has written no checkpoint in this run")
        super().__init__(f"loss is {loss} at epoch {epoch}, global step {global_step} (batch {batch_idx} of the "
                         f"epoch); training stopped before this step's update, {kept}. Lower the learning rate, "
                         f"set grad_clip, or look for bad values in that batch.")


def _check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("TrainerConfig: precision='fp16' needs a CUDA device (torch.amp.GradScaler keeps fp16 "
                         "gradients from underflowing, on CUDA only); on the CPU use precision='bf16' or 'fp32'")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"TrainerConfig: precision='bf16' but {torch.cuda.get_device_name(device)} has no bf16 "
                         f"support; use precision='fp16'")


def _loader_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0])


# --- the trainer --------------------------------------------------------------------------------------------------
class Trainer:
    """Trains ``model`` on ``train_data`` with ``config``; ``fit(resume=...)`` runs it.

    ``train_data``/``val_data``: a map-style Dataset or a tuple of tensors ``(x, y)``. ``step_fn(model, batch)``
    returns the loss tensor or ``{"loss": tensor, **scalar metrics}`` (default: ``classification_step``);
    ``eval_fn(model, loader) -> {name: float}`` (default: the step's outputs averaged over the validation set), with
    batches already on the device; validation metrics are logged as ``val_<name>``. ``optimizer``: an optimizer over
    ``model``'s parameters or a function ``params -> optimizer`` (default AdamW with ``config.lr`` and
    ``config.weight_decay``). ``scheduler``: a scheduler of that optimizer or a function ``(optimizer, total_steps)
    -> scheduler`` (``total_steps = max_epochs * steps_per_epoch``, what OneCycleLR wants); it steps every
    optimizer step or every epoch (``config.scheduler_interval``; ReduceLROnPlateau gets the monitored metric).
    With ``out_dir`` set the Trainer adds a ``ModelCheckpoint`` and the configured loggers unless ``callbacks``
    already has one of that kind; ``config.early_stopping`` adds ``EarlyStopping``. ``checkpoint_extra``: plain
    data added to every checkpoint written (e.g. the recipes' ``export_metadata``, which ``deploysdk export`` embeds).
    """

    def __init__(self, model: nn.Module, config: TrainerConfig | None = None, train_data: Any = None,
                 val_data: Any = None, step_fn: Callable | None = None, eval_fn: Callable | None = None,
                 optimizer: torch.optim.Optimizer | Callable | None = None, scheduler: Any = None,
                 callbacks: Iterable[Callback] = (), collate_fn: Callable | None = None,
                 checkpoint_extra: Mapping[str, Any] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        config = TrainerConfig() if config is None else config
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if train_data is None:
            raise ValueError("train_data is required: a Dataset or a tuple of tensors (x, y)")
        for name, fn in (("step_fn", step_fn), ("eval_fn", eval_fn), ("collate_fn", collate_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.config, self.dist = config, D.dist_env()
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.device = D.resolve_device(config.device, self.dist)
        _check_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.step_fn = step_fn or classification_step
        self.eval_fn = eval_fn or mean_of_steps(self.step_fn)
        self._build_loaders(as_dataset(train_data, "train_data"),
                            None if val_data is None else as_dataset(val_data, "val_data"), collate_fn)
        self.optimizer = self._build_optimizer(optimizer)
        self.scheduler = self._build_scheduler(scheduler)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.epoch = self.global_step = self.current_epoch = 0
        self.best_metric: float | None = None
        self.history: list[dict[str, Any]] = []
        self.should_stop, self.stop_reason, self.error = False, None, None
        self.last_checkpoint: str | None = None
        self._rng_states: list[dict] | None = None
        self._train_model: nn.Module = self.model
        if self.monitor.startswith("val_") and self.val_loader is None:
            raise ValueError(f"the monitored metric {self.monitor!r} needs val_data (or monitor a train_* metric)")
        self.callbacks = self._build_callbacks(list(callbacks))

    # --- construction ---------------------------------------------------------------------------------------------
    @property
    def out_dir(self) -> str | None:
        return self.config.out_dir

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def monitor(self) -> str:
        if self.config.monitor is not None:
            return self.config.monitor
        if self.config.early_stopping is not None:
            return self.config.early_stopping.monitor
        return "val_loss" if self.val_loader is not None else "train_loss"

    @property
    def monitor_mode(self) -> str:
        es = self.config.early_stopping
        return es.mode if self.config.monitor is None and es is not None else self.config.monitor_mode

    def _build_loaders(self, train, val, collate_fn) -> None:
        cfg = self.config
        self.train_sampler = D.train_sampler(train, self.dist, seed=cfg.seed, drop_last=cfg.drop_last)
        self._loader_gen = torch.Generator()
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(train, batch_size=cfg.batch_size, sampler=self.train_sampler,
                                       num_workers=cfg.num_workers, collate_fn=collate_fn, pin_memory=pin,
                                       drop_last=cfg.drop_last, generator=self._loader_gen)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"train_data gives no batch per epoch: {len(train)} samples over {self.dist.world_size}"
                             f" process(es) with batch_size={cfg.batch_size} and drop_last=True")
        self.val_loader = None
        if val is not None:
            if len(val) < self.dist.world_size:
                raise ValueError(f"val_data has {len(val)} samples, fewer than the {self.dist.world_size} processes")
            self.val_loader = DataLoader(val, batch_size=cfg.eval_batch_size or cfg.batch_size,
                                         sampler=D.ShardSampler(len(val), self.dist), num_workers=cfg.num_workers,
                                         collate_fn=collate_fn, pin_memory=pin)

    def _build_optimizer(self, optimizer) -> torch.optim.Optimizer:
        if optimizer is None:
            return torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                     weight_decay=self.config.weight_decay)
        if not isinstance(optimizer, torch.optim.Optimizer) and callable(optimizer):
            optimizer = optimizer(self.model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or a function params -> Optimizer, got "
                            f"{type(optimizer).__name__}")
        own = {id(p) for p in self.model.parameters()}
        if not all(id(p) in own for g in optimizer.param_groups for p in g["params"]):
            raise ValueError("optimizer holds parameters that are not the model's: build it from model.parameters()")
        return optimizer

    def _build_scheduler(self, scheduler) -> Any:
        if scheduler is None:
            return None
        is_sched = isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                          torch.optim.lr_scheduler.ReduceLROnPlateau))
        if not is_sched and callable(scheduler):
            scheduler = scheduler(self.optimizer, self.config.max_epochs * self.steps_per_epoch)
        if not hasattr(scheduler, "step") or not hasattr(scheduler, "state_dict"):
            raise TypeError(f"scheduler must be an LR scheduler or a function (optimizer, total_steps) -> scheduler, "
                            f"got {type(scheduler).__name__}")
        if getattr(scheduler, "optimizer", self.optimizer) is not self.optimizer:
            raise ValueError("scheduler drives another optimizer than the trainer's: pass both, or a function "
                             "(optimizer, total_steps) -> scheduler")
        return scheduler

    def _build_callbacks(self, given: list) -> list[Callback]:
        for cb in given:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        def have(kind: type) -> bool:
            return any(isinstance(cb, kind) for cb in given)

        cfg, extra = self.config, []
        if cfg.progress and not have(ProgressBar):
            extra.append(ProgressBar())
        if cfg.early_stopping is not None and not have(EarlyStopping):
            extra.append(EarlyStopping(**dataclasses.asdict(cfg.early_stopping)))
        if cfg.out_dir is not None:
            extra += [_LOGGERS[name]() for name in cfg.loggers if not have(_LOGGERS[name])]
            if not have(ModelCheckpoint):
                extra.append(ModelCheckpoint(monitor=self.monitor, mode=self.monitor_mode,
                                             every=cfg.checkpoint_every, keep_last=cfg.keep_last))
        return sorted(given + extra, key=lambda cb: cb.order)  # stable: given order within the same order

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            if self.is_main or not cb.rank_zero_only:
                getattr(cb, hook)(self, *args)

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        seen: dict[str, int] = {}
        keyed = []
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            keyed.append((name if seen[name] == 1 else f"{name}#{seen[name]}", cb))
        return keyed

    # --- public control -------------------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Finish after the current epoch (its checkpoint is still written)."""
        self.should_stop, self.stop_reason = True, reason

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """The full training state at the last completed epoch (what ``fit(resume=path)`` continues from)."""
        rng = self._rng_states or [capture_rng_state()]
        save_training_state(path, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                            scaler=self.scaler, epoch=self.epoch, global_step=self.global_step,
                            best_metric=self.best_metric, rng_state=rng[0], trainer_config=self.config.to_dict(),
                            rng_per_rank=rng if len(rng) > 1 else None, world_size=self.dist.world_size,
                            history=self.history, stop_reason=self.stop_reason,
                            callbacks={key: cb.state_dict() for key, cb in self._callback_keys()},
                            **self.checkpoint_extra)

    # --- fit ------------------------------------------------------------------------------------------------------
    def fit(self, resume: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """Train up to ``config.max_epochs``; returns the epoch records (``self.history``).

        ``resume``: None (start fresh), "auto" (``out_dir/last.pt`` when it exists, else fresh) or a checkpoint path.
        A run that already finished (all epochs, or stopped early) returns at once.
        """
        owned = D.init_process_group(self.dist, self.device)
        self.error = None
        try:
            self._train_model = D.wrap_ddp(self.model, self.device) if self.dist.enabled else self.model
            if not self._resume(resume):
                self._seed_globals()
            self._call("on_fit_start")
            self._loop()
            D.barrier(self.dist)
        except BaseException as e:
            self.error = e
            raise
        finally:
            self._fit_end()
            self._train_model = self.model
            D.cleanup(owned)
        return self.history

    def _fit_end(self) -> None:
        if self.error is None:
            self._call("on_fit_end")
            return
        for cb in self.callbacks:  # tidy up without hiding the error that ended the run
            if self.is_main or not cb.rank_zero_only:
                try:
                    cb.on_fit_end(self)
                except Exception as e:  # noqa: BLE001
                    warnings.warn(f"{type(cb).__name__}.on_fit_end failed after {type(self.error).__name__}: {e}")

    def _seed_globals(self) -> None:
        seed = self.config.seed + self.dist.rank  # different dropout masks per rank; DDP broadcasts the weights
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _resume(self, resume) -> bool:
        if resume is None:
            return False
        if isinstance(resume, str) and resume == "auto":
            if self.out_dir is None:
                raise ValueError("fit(resume='auto') needs config.out_dir (where last.pt is looked for)")
            path = os.path.join(self.out_dir, "last.pt")
            if not os.path.isfile(path):
                return False
        else:
            path = os.fspath(resume)
        state = load_training_state(path, map_location="cpu")
        self._warn_config_changes(path, state)
        self.model.load_state_dict(state["state_dict"])
        for name, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
            saved = state.get(name)
            if (saved is None) != (obj is None):
                warnings.warn(f"resuming {path}: the checkpoint {'has no' if saved is None else 'has a'} {name} "
                              f"state but this trainer {'has' if obj is not None else 'has none'}; "
                              f"{'starting it fresh' if obj is not None else 'ignoring it'}")
            elif obj is not None:
                obj.load_state_dict(saved)
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.best_metric, self.history = state.get("best_metric"), list(state.get("history") or [])
        self.stop_reason = state.get("stop_reason")
        self.should_stop = self.stop_reason is not None
        saved_cbs = state.get("callbacks") or {}
        for key, cb in self._callback_keys():
            if key in saved_cbs:
                cb.load_state_dict(saved_cbs[key])
        per_rank = state.get("rng_per_rank")
        same_world = per_rank is not None and len(per_rank) == self.dist.world_size
        restore_rng_state(per_rank[self.dist.rank] if same_world else state["rng"])
        self.last_checkpoint = path
        return True

    def _warn_config_changes(self, path: str, state: Mapping) -> None:
        saved = state.get("trainer_config") or {}
        now = self.config.to_dict()
        changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in _RESUME_SENSITIVE if k in saved and saved[k] != now[k]]
        world = state.get("world_size", 1)
        if world != self.dist.world_size:
            changed.append(f"world size {world} -> {self.dist.world_size} (global batch changes)")
        if changed:
            warnings.warn(f"resuming {path} with a different setup: {'; '.join(changed)}; the run will not match an "
                          f"uninterrupted one", stacklevel=3)

    def _loop(self) -> None:
        for epoch in range(self.epoch + 1, self.config.max_epochs + 1):
            if self.should_stop:
                break
            self.current_epoch = epoch
            self.train_sampler.set_epoch(epoch)
            self._loader_gen.manual_seed(_loader_seed(self.config.seed, epoch, self.dist.rank))
            self._call("on_epoch_start", epoch)
            start = time.perf_counter()
            record = {"epoch": epoch, **self._train_epoch(epoch)}
            if self.val_loader is not None:
                record.update({f"val_{k}": v for k, v in self._validate().items()})
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
            self._epoch_scheduler_step(record)
            record["time_s"] = time.perf_counter() - start
            self.epoch = epoch
            self.history.append(record)
            self._rng_states = D.all_gather_objects(capture_rng_state(), self.dist)
            self._call("on_epoch_end", epoch, record)
            if D.any_across_ranks(self.should_stop, self.dist, self.device) and not self.should_stop:
                self.request_stop("another rank asked to stop")

    def _epoch_scheduler_step(self, record: dict) -> None:
        if self.scheduler is None or self.config.scheduler_interval != "epoch":
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self.monitor not in record:
                raise ValueError(f"ReduceLROnPlateau needs {self.monitor!r}, not in the epoch record: {sorted(record)}")
            self.scheduler.step(record[self.monitor])
        else:
            self.scheduler.step()

    def _autocast(self):
        dtype = _PRECISIONS[self.config.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self._train_model.train()
        sums: dict[str, float] = {}
        seen = 0
        for batch_idx, batch in enumerate(self.train_loader):
            batch = to_device(batch, self.device)
            with self._autocast():
                loss, extra = split_step_output(self.step_fn(self._train_model, batch), training=True)
            value = float(loss.detach())
            if D.any_across_ranks(not math.isfinite(value), self.dist, self.device):
                raise NonFiniteLossError(value, epoch, self.global_step + 1, batch_idx, self.last_checkpoint)
            grad_norm = self._optimizer_step(loss)
            self.global_step += 1
            n = batch_len(batch)
            metrics = {"loss": value, **extra, **({} if grad_norm is None else {"grad_norm": grad_norm})}
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * n
            seen += n
            self._call("on_batch_end", batch_idx, {"step": self.global_step, **metrics})
            if self.config.log_every and self.global_step % self.config.log_every == 0:
                mean = D.reduce_weighted_mean(metrics, n, self.dist, self.device)
                self._call("on_log", {"epoch": epoch, "step": self.global_step, "batch": batch_idx, **mean,
                                      "lr": float(self.optimizer.param_groups[0]["lr"])})
        means = D.reduce_weighted_mean({k: v / seen for k, v in sums.items()}, seen, self.dist, self.device)
        return {"step": self.global_step, **{f"train_{k}": v for k, v in means.items()}}

    def _optimizer_step(self, loss: torch.Tensor) -> float | None:
        """Backward, optional clipping (after unscaling fp16 gradients), step; the pre-clip norm when clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        norm = None
        if self.config.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None and self.config.scheduler_interval == "step":
            self.scheduler.step()
        return norm

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """``eval_fn`` on this rank's shard of the validation set, averaged over ranks by shard size."""
        self.model.eval()
        try:
            with self._autocast():
                out = self.eval_fn(self.model, DeviceLoader(self.val_loader, self.device))
        finally:
            self.model.train()
        if not isinstance(out, Mapping):
            raise TypeError(f"eval_fn must return a dict of metrics, got {type(out).__name__}")
        metrics = {k: scalar_metric(f"eval_fn: {k}", v) for k, v in out.items()}
        return D.reduce_weighted_mean(metrics, len(self.val_loader.sampler), self.dist, self.device)
