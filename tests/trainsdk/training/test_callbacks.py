import csv
import importlib.util
import io
import json

import pytest

from tests.trainsdk.training.helpers import blobs, config, mlp
from trainsdk.training import Callback, ProgressBar, Trainer


def test_csv_and_jsonl_hold_the_epoch_and_step_records(tmp_path):
    trainer = Trainer(mlp(), config(max_epochs=2, out_dir=str(tmp_path), log_every=4), train_data=blobs(),
                      val_data=blobs(16, seed=1))
    history = trainer.fit()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                             "time_s"]
    assert [{k: float(v) for k, v in r.items()} for r in rows] == [{k: float(v) for k, v in h.items()}
                                                                    for h in history]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(r["kind"], r["step"]) for r in records] == [("step", 4), ("epoch", 6), ("step", 8), ("step", 12),
                                                         ("epoch", 12)]
    assert [{k: v for k, v in r.items() if k != "kind"} for r in records if r["kind"] == "epoch"] == history
    with open(tmp_path / "steps.csv", newline="") as f:
        steps = list(csv.DictReader(f))
    assert [int(r["step"]) for r in steps] == [4, 8, 12] and [int(r["batch"]) for r in steps] == [3, 1, 5]
    step_losses = [r["loss"] for r in records if r["kind"] == "step"]
    assert [float(r["loss"]) for r in steps] == step_losses


class _Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(f"epoch_start {epoch}")

    def on_batch_end(self, trainer, batch_idx, metrics):
        self.calls.append(f"batch {metrics['step']}")

    def on_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(f"epoch_end {epoch} {sorted(metrics)}")

    def on_fit_end(self, trainer):
        self.calls.append(f"fit_end {type(trainer.error).__name__}")


def test_callback_hooks_run_in_order():
    rec = _Recorder()
    Trainer(mlp(), config(max_epochs=2, batch_size=24), train_data=blobs(), callbacks=[rec]).fit()
    keys = "['epoch', 'lr', 'step', 'time_s', 'train_accuracy', 'train_loss']"
    assert rec.calls == ["fit_start", "epoch_start 1", "batch 1", "batch 2", f"epoch_end 1 {keys}",
                         "epoch_start 2", "batch 3", "batch 4", f"epoch_end 2 {keys}", "fit_end NoneType"]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_draws_on_a_tty_only():
    tty, pipe, hushed = _Tty(), io.StringIO(), _Tty()
    bars = [ProgressBar(tty, refresh_s=0.0), ProgressBar(pipe), ProgressBar(hushed, quiet=True)]
    Trainer(mlp(), config(max_epochs=2), train_data=blobs(), callbacks=bars).fit()
    out = tty.getvalue()
    assert out.count("\n") == 2 and "\repoch 1/2 [" in out and "6/6 train_loss" in out and "it/s" in out
    assert "epoch 2/2 [========================] 6/6" in out
    assert pipe.getvalue() == "" and hushed.getvalue() == ""


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_logger_says_what_is_missing():
    from trainsdk.training import TensorBoardLogger

    with pytest.raises(ImportError, match="needs the 'tensorboard' package"):
        TensorBoardLogger()


def test_callbacks_must_be_callback_instances_and_loggers_need_a_folder():
    with pytest.raises(TypeError, match="callbacks must be Callback instances, got function"):
        Trainer(mlp(), config(), train_data=blobs(), callbacks=[lambda: None])
    from trainsdk.training import CSVLogger

    with pytest.raises(ValueError, match="CSVLogger: no dirpath and the trainer has no out_dir"):
        Trainer(mlp(), config(), train_data=blobs(), callbacks=[CSVLogger()]).fit()
