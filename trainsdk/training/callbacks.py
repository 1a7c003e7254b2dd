"""Trainer callbacks: progress bar, metric logs, early stopping and checkpoints.

Hooks run in order of ``order`` (then as given); ``ModelCheckpoint`` runs last so the state it saves includes what
the other callbacks updated at that epoch's end. A callback with ``rank_zero_only = True`` (every writer) runs only
on rank 0 under torchrun. Callbacks that change what training does (``EarlyStopping``) keep their counters in
``state_dict()``, which the checkpoint carries, so a resumed run stops where an uninterrupted one would.

Metric logs are rewritten whole, atomically, at each epoch end: a reader never sees half a row, columns can grow
when a metric first appears, and a resumed run drops the rows of the epoch that was cut short.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from deploysdk._atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

__all__ = ["Callback", "ProgressBar", "CSVLogger", "JSONLLogger", "TensorBoardLogger", "EarlyStopping",
           "ModelCheckpoint"]


class Callback:
    """Base class: override the hooks you need. ``epoch`` is 1-based; ``metrics`` are plain floats."""

    order = 0
    rank_zero_only = False

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, batch_idx: int, metrics: dict[str, float]) -> None:
        """After every optimizer step, with this rank's metrics of that step (``loss``, ``step``, ...)."""

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Every ``config.log_every`` steps: a step record averaged across ranks (``kind: "step"``)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """After training and validation of ``epoch``: the epoch record (``train_*``, ``val_*``, ``lr``, ...)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Always called, also when fit raises (then ``trainer.error`` is set): close files, end lines."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _check_mode(owner: str, mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"{owner}: mode must be 'min' or 'max', got {mode!r}")


def _monitored(owner: str, metrics: dict[str, Any], monitor: str) -> float:
    if monitor not in metrics:
        available = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise ValueError(f"{owner}: monitored metric {monitor!r} is not in the epoch record; available: {available}")
    return float(metrics[monitor])


# --- progress -----------------------------------------------------------------------------------------------------
class ProgressBar(Callback):
    """One self-overwriting text line per epoch (no tqdm). Silent when the stream is not a TTY (CI logs, files)
    unless ``quiet=False``; silent always with ``quiet=True``."""

    rank_zero_only = True

    def __init__(self, stream: IO[str] | None = None, quiet: bool | None = None, width: int = 24,
                 refresh_s: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if quiet is None:
            isatty = getattr(self.stream, "isatty", None)
            quiet = not (callable(isatty) and isatty())
        self.quiet, self.width, self.refresh_s = bool(quiet), int(width), float(refresh_s)
        self._t0 = self._last = 0.0
        self._loss_sum = 0.0
        self._seen = 0

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._t0, self._last, self._loss_sum, self._seen = time.perf_counter(), 0.0, 0.0, 0

    def _line(self, trainer: Trainer, done: int, extra: str) -> str:
        total = max(trainer.steps_per_epoch, 1)
        filled = min(self.width, self.width * done // total)
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        rate = done / max(time.perf_counter() - self._t0, 1e-9)
        return (f"epoch {trainer.current_epoch}/{trainer.config.max_epochs} [{bar[:self.width]}] "
                f"{done}/{total} {extra} {rate:.1f} it/s")

    def on_batch_end(self, trainer: Trainer, batch_idx: int, metrics: dict[str, float]) -> None:
        self._loss_sum += metrics["loss"]
        self._seen += 1
        now = time.perf_counter()
        if self.quiet or now - self._last < self.refresh_s:
            return
        self._last = now
        self.stream.write("\r" + self._line(trainer, batch_idx + 1, f"loss {self._loss_sum / self._seen:.4f}"))
        self.stream.flush()

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        if self.quiet:
            return
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                         if isinstance(v, float) and (k.startswith(("train_", "val_")) or k == "lr"))
        self.stream.write("\r" + self._line(trainer, trainer.steps_per_epoch, shown) + "\n")
        self.stream.flush()


# --- metric logs --------------------------------------------------------------------------------------------------
class _FileLogger(Callback):
    """Keeps the records in memory and rewrites its files atomically at each epoch end and at fit end."""

    rank_zero_only = True
    default_name = "metrics"

    def __init__(self, dirpath: str | os.PathLike | None = None, filename: str | None = None) -> None:
        self.dirpath = None if dirpath is None else os.fspath(dirpath)
        self.filename = filename or self.default_name
        self.epochs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath or ".", self.filename)

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.dirpath is None:
            if trainer.out_dir is None:
                raise ValueError(f"{type(self).__name__}: no dirpath and the trainer has no out_dir")
            self.dirpath = trainer.out_dir
        # a resumed run keeps what was logged up to its checkpoint and drops the epoch that was cut short
        self.epochs, self.steps = self._read_existing() if trainer.epoch > 0 else ([], [])
        self.epochs = [r for r in self.epochs if r.get("epoch", 0) <= trainer.epoch]
        self.steps = [r for r in self.steps if r.get("step", 0) <= trainer.global_step]

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.steps.append(dict(record))

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self.epochs.append(dict(metrics))
        self._flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.dirpath is not None and (self.epochs or self.steps):
            self._flush()

    def _read_existing(self) -> tuple[list[dict], list[dict]]:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


class CSVLogger(_FileLogger):
    """Epoch records to ``metrics.csv`` and, when ``log_every`` is set, step records to ``steps.csv``."""

    default_name = "metrics.csv"

    def __init__(self, dirpath: str | os.PathLike | None = None, filename: str | None = None,
                 steps_filename: str = "steps.csv") -> None:
        super().__init__(dirpath, filename)
        self.steps_filename = steps_filename

    @property
    def steps_path(self) -> str:
        return os.path.join(self.dirpath or ".", self.steps_filename)

    @staticmethod
    def _read(path: str) -> list[dict[str, Any]]:
        if not os.path.isfile(path):
            return []
        with open(path, newline="") as f:
            return [{k: _parse_cell(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def _read_existing(self) -> tuple[list[dict], list[dict]]:
        return self._read(self.path), self._read(self.steps_path)

    @staticmethod
    def _write(path: str, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=_columns(rows), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            f.write(buf.getvalue())

    def _flush(self) -> None:
        self._write(self.path, self.epochs)
        if self.steps:
            self._write(self.steps_path, self.steps)


class JSONLLogger(_FileLogger):
    """Step and epoch records, one JSON object per line, to ``metrics.jsonl`` (``"kind": "step" | "epoch"``)."""

    default_name = "metrics.jsonl"

    def _read_existing(self) -> tuple[list[dict], list[dict]]:
        if not os.path.isfile(self.path):
            return [], []
        with open(self.path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [r for r in records if r.get("kind") == "epoch"], [r for r in records if r.get("kind") == "step"]

    def _flush(self) -> None:
        # step records of an epoch come before that epoch's record, as they happened
        merged = sorted([(r.get("step", 0), 0, r) for r in self.steps] + [(r.get("step", 0), 1, r)
                                                                         for r in self.epochs],
                        key=lambda t: (t[0], t[1]))
        text = "".join(json.dumps({"kind": "step" if k == 0 else "epoch", **r}) + "\n" for _, k, r in merged)
        with atomic_path(self.path, suffix=".jsonl") as tmp, open(tmp, "w") as f:
            f.write(text)


class TensorBoardLogger(Callback):
    """Scalars to TensorBoard event files under ``<out_dir>/tensorboard`` (needs the ``tensorboard`` package).

    Event files are appended by TensorBoard's own writer, the one exception to the SDK's atomic-write rule.
    """

    rank_zero_only = True

    def __init__(self, log_dir: str | os.PathLike | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoardLogger needs the 'tensorboard' package (pip install tensorboard); "
                              "CSVLogger and JSONLLogger need nothing extra") from e
        self._writer_cls = SummaryWriter
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.log_dir is None:
            if trainer.out_dir is None:
                raise ValueError("TensorBoardLogger: no log_dir and the trainer has no out_dir")
            self.log_dir = os.path.join(trainer.out_dir, "tensorboard")
        self.writer = self._writer_cls(self.log_dir, purge_step=trainer.global_step + 1 if trainer.epoch else None)

    def _scalars(self, prefix: str, record: dict[str, Any], step: int) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step", "batch"):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars("step", record, record["step"])

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self._scalars("epoch", metrics, metrics["step"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- control ------------------------------------------------------------------------------------------------------
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Runs on every rank: the metrics it sees are already averaged across ranks, so all ranks stop together.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0):
        _check_mode("EarlyStopping", mode)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be a positive int, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, float(min_delta)
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        value = _monitored("EarlyStopping", metrics, self.monitor)
        if _better(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.request_stop(f"early stopping: {self.monitor} has not improved on {self.best:.6g} for "
                                 f"{self.wait} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state["stopped_epoch"]


class ModelCheckpoint(Callback):
    """Training states in ``dirpath`` (default the trainer's ``out_dir``): ``last.pt`` every ``every`` epochs
    and at the end, ``best.pt`` whenever ``monitor`` improves, and ``epoch_NNNN.pt`` files of which the newest
    ``keep_last`` are kept (0: none). Each file is written to a temporary name and renamed, so a crash while saving
    leaves the previous good file in place."""

    order = 100
    rank_zero_only = True
    _EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")

    def __init__(self, dirpath: str | os.PathLike | None = None, monitor: str | None = None, mode: str = "min",
                 every: int = 1, keep_last: int = 0, save_best: bool = True) -> None:
        _check_mode("ModelCheckpoint", mode)
        for name, value, low in (("every", every, 1), ("keep_last", keep_last, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ModelCheckpoint: {name} must be an int >= {low}, got {value!r}")
        self.dirpath = None if dirpath is None else os.fspath(dirpath)
        self.monitor, self.mode, self.every, self.keep_last, self.save_best = monitor, mode, every, keep_last, save_best
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.dirpath is None:
            if trainer.out_dir is None:
                raise ValueError("ModelCheckpoint: no dirpath and the trainer has no out_dir")
            self.dirpath = trainer.out_dir
        if self.monitor is None:
            self.monitor = trainer.monitor
        os.makedirs(self.dirpath, exist_ok=True)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        improved = False
        if self.save_best:
            value = _monitored("ModelCheckpoint", metrics, self.monitor)
            if _better(value, self.best, self.mode):
                self.best, self.best_epoch, improved = value, epoch, True
                trainer.best_metric = value
        final = epoch >= trainer.config.max_epochs or trainer.should_stop
        last, best = os.path.join(self.dirpath, "last.pt"), os.path.join(self.dirpath, "best.pt")
        wrote_last = epoch % self.every == 0 or final
        if wrote_last:
            trainer.save_checkpoint(last)
            trainer.last_checkpoint = last
            if self.keep_last:
                _atomic_copy(last, os.path.join(self.dirpath, f"epoch_{epoch:04d}.pt"))
                self._prune()
        if improved and wrote_last:  # the same bytes as last.pt: copy instead of serialising again
            _atomic_copy(last, best)
        elif improved:
            trainer.save_checkpoint(best)

    def _prune(self) -> None:
        found = sorted((int(m.group(1)), name) for name in os.listdir(self.dirpath)
                       if (m := self._EPOCH_FILE.match(name)))
        for _, name in found[:-self.keep_last]:
            os.remove(os.path.join(self.dirpath, name))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "monitor": self.monitor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


def _atomic_copy(src: str, dst: str) -> None:
    with atomic_path(dst, suffix=".pt") as tmp:
        shutil.copyfile(src, tmp)
