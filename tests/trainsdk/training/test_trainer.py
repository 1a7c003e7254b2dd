import math
import os

import pytest
import torch

from tests.trainsdk.training.helpers import NoisyBlobs, blobs, config, mlp
from trainsdk.training import Callback, NonFiniteLossError, Trainer, TrainerConfig, classification_step, \
    load_training_state


class _Interrupt(Exception):
    pass


class _InterruptAt(Callback):
    """Raises in the middle of an epoch, as a crash or Ctrl-C would."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, trainer, batch_idx, metrics):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise _Interrupt


class _EpochsSeen(Callback):
    def __init__(self) -> None:
        self.started = []

    def on_epoch_start(self, trainer, epoch):
        self.started.append(epoch)


def _resumable_trainer(out_dir, num_workers, model_seed=0, callbacks=()):
    cfg = config(max_epochs=4, out_dir=str(out_dir), num_workers=num_workers, log_every=2, seed=7)
    return Trainer(mlp(model_seed, dropout=0.3), cfg, train_data=NoisyBlobs(), val_data=blobs(24, seed=1),
                   scheduler=lambda opt, total: torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=total),
                   callbacks=callbacks)


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, num_workers):
    straight = _resumable_trainer(tmp_path / "straight", num_workers)
    straight.fit()

    with pytest.raises(_Interrupt):
        _resumable_trainer(tmp_path / "cut", num_workers, callbacks=[_InterruptAt(epoch=3, batch=2)]).fit()
    assert load_training_state(tmp_path / "cut" / "last.pt")["epoch"] == 2
    seen = _EpochsSeen()
    resumed = _resumable_trainer(tmp_path / "cut", num_workers, model_seed=99, callbacks=[seen])  # other init
    resumed.fit(resume="auto")

    assert seen.started == [3, 4]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for idx, state in opt_a["state"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, opt_b["state"][idx][name]), (idx, name)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert _without_time(straight.history) == _without_time(resumed.history)
    assert len(resumed.history) == 4 and resumed.global_step == straight.global_step == 4 * 6
    # the logs of the resumed run drop the cut-short epoch and continue: the same rows as the uninterrupted run
    for name in ("metrics.csv", "steps.csv"):
        a, b = [open(tmp_path / run / name).read().splitlines() for run in ("straight", "cut")]
        time_col = a[0].split(",").index("time_s") if "time_s" in a[0] else None
        strip = (lambda rows: [",".join(c for i, c in enumerate(r.split(",")) if i != time_col) for r in rows])
        assert strip(a) == strip(b)


def test_resume_from_explicit_path_and_finished_run_returns_at_once(tmp_path):
    trainer = Trainer(mlp(), config(out_dir=str(tmp_path)), train_data=blobs())
    trainer.fit()
    again = Trainer(mlp(5), config(out_dir=str(tmp_path)), train_data=blobs())
    seen = _EpochsSeen()
    again.callbacks.append(seen)
    again.fit(resume=tmp_path / "last.pt")
    assert seen.started == [] and again.epoch == 2
    assert torch.equal(again.model[0].weight, trainer.model[0].weight)
    with pytest.raises(Exception, match="not found"):
        again.fit(resume=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="out_dir"):
        Trainer(mlp(), config(), train_data=blobs()).fit(resume="auto")


def test_resuming_with_a_different_setup_warns_and_monitoring_val_needs_val_data(tmp_path):
    Trainer(mlp(), config(max_epochs=1, out_dir=str(tmp_path)), train_data=blobs()).fit()
    changed = Trainer(mlp(), config(out_dir=str(tmp_path), batch_size=16), train_data=blobs())
    with pytest.warns(UserWarning, match="batch_size 8 -> 16.*will not match an uninterrupted one"):
        changed.fit(resume="auto")
    with pytest.raises(ValueError, match="'val_loss' needs val_data"):
        Trainer(mlp(), config(early_stopping={"patience": 2}), train_data=blobs())


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    steps_per_epoch, bad_step = 6, 2 * 6 + 3  # epoch 3, batch index 2
    calls = {"train": 0}

    def step(model, batch):
        out = classification_step(model, batch)
        if model.training:
            calls["train"] += 1
            if calls["train"] == bad_step:
                out["loss"] = out["loss"] * float("nan")
        return out

    trainer = Trainer(mlp(), config(max_epochs=5, out_dir=str(tmp_path)), train_data=blobs(), step_fn=step)
    assert trainer.steps_per_epoch == steps_per_epoch
    with pytest.raises(NonFiniteLossError, match=rf"nan at epoch 3, global step {bad_step} \(batch 2 .*last\.pt"):
        trainer.fit()
    ckpt = load_training_state(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 2 * steps_per_epoch
    clean = Trainer(mlp(), config(max_epochs=2), train_data=blobs())
    clean.fit()
    for key, value in clean.model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][key]), key
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt", "metrics.csv", "metrics.jsonl"]  # no temp files
    assert len(open(tmp_path / "metrics.csv").read().splitlines()) == 1 + 2


def test_early_stopping_stops_after_patience_and_best_checkpoint_is_the_best_epoch(tmp_path):
    scripted = iter([1.0, 0.5, 0.6, 0.7, 0.4, 0.3])

    def evaluate(model, loader):
        return {"loss": next(scripted)}

    cfg = config(max_epochs=6, out_dir=str(tmp_path), early_stopping={"monitor": "val_loss", "patience": 2})
    trainer = Trainer(mlp(), cfg, train_data=blobs(), val_data=blobs(8), eval_fn=evaluate)
    history = trainer.fit()
    assert [r["val_loss"] for r in history] == [1.0, 0.5, 0.6, 0.7]
    assert "val_loss has not improved on 0.5 for 2 epochs" in trainer.stop_reason
    best, last = load_training_state(tmp_path / "best.pt"), load_training_state(tmp_path / "last.pt")
    assert (best["epoch"], best["best_metric"]) == (2, 0.5)
    assert (last["epoch"], last["best_metric"]) == (4, 0.5)
    resumed = Trainer(mlp(), cfg, train_data=blobs(), val_data=blobs(8), eval_fn=evaluate)
    assert len(resumed.fit(resume="auto")) == 4  # a stopped run stays stopped


def test_grad_clip_limits_the_update_to_lr_times_max_norm():
    x = torch.ones(4, 3)

    def step(model, batch):
        return 1000.0 * model(batch[0]).sum()  # gradient norm in the thousands

    def one_step(clip):
        model = torch.nn.Linear(3, 1)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        cfg = config(max_epochs=1, batch_size=4, grad_clip=clip)
        trainer = Trainer(model, cfg, train_data=(x, torch.zeros(4)), step_fn=step,
                          optimizer=lambda p: torch.optim.SGD(p, lr=1.0))
        record = trainer.fit()[0]
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm()), record

    clipped, record = one_step(0.5)
    full, _ = one_step(None)
    assert clipped == pytest.approx(0.5, rel=1e-5)
    assert full == pytest.approx(1000.0 * math.sqrt(4**2 * 3 + 4**2), rel=1e-5)  # d/dw = 1000*sum(x), d/db = 4000
    assert record["train_grad_norm"] == pytest.approx(full, rel=1e-5)


def test_bf16_autocast_on_cpu():
    dtypes = set()

    def step(model, batch):
        x, y = batch
        logits = model(x)
        dtypes.add(logits.dtype)
        return torch.nn.functional.cross_entropy(logits.float(), y)

    history = Trainer(mlp(), config(precision="bf16"), train_data=blobs(), step_fn=step).fit()
    assert dtypes == {torch.bfloat16}
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_fp16_and_cuda_need_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device.*bf16"):
        Trainer(mlp(), config(precision="fp16"), train_data=blobs())
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available"):
        Trainer(mlp(), config(device="cuda"), train_data=blobs())


@pytest.mark.parametrize("field, value, message", [
    ("max_epochs", 0, "max_epochs must be an integer >= 1"),
    ("batch_size", 2.5, "batch_size must be an integer >= 1"),
    ("lr", 0.0, "lr must be a finite number > 0"),
    ("lr", float("nan"), "lr must be a finite number > 0"),
    ("device", "tpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("precision", "fp8", "precision must be one of"),
    ("grad_clip", -1.0, "grad_clip must be None or a finite number > 0"),
    ("keep_last", -1, "keep_last must be an integer >= 0"),
    ("seed", -3, "seed must be an integer >= 0"),
    ("loggers", ("csv", "wandb"), "loggers entry must be one of"),
    ("scheduler_interval", "batch", "scheduler_interval must be one of"),
    ("early_stopping", {"mode": "up"}, "mode must be 'min' or 'max'"),
    ("progress", "yes", "progress must be True or False"),
])
def test_bad_config_is_refused_with_the_field_named(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrainerConfig(**{field: value})


def test_config_round_trips_through_a_dict():
    cfg = TrainerConfig(early_stopping={"patience": 3}, loggers=("csv",), out_dir="runs/x")
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="unknown field.*'epochs'"):
        TrainerConfig.from_dict({"epochs": 3})


def test_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="pass the Dataset, not a DataLoader"):
        Trainer(mlp(), config(), train_data=torch.utils.data.DataLoader(blobs()[0]))
    with pytest.raises(ValueError, match="tensors differ in length"):
        Trainer(mlp(), config(), train_data=(torch.zeros(4, 10), torch.zeros(5)))
    with pytest.raises(TypeError, match="config must be a TrainerConfig"):
        Trainer(mlp(), {"max_epochs": 1}, train_data=blobs())
    with pytest.raises(TypeError, match="step_fn must return a loss tensor or a dict with a 'loss' entry"):
        Trainer(mlp(), config(), train_data=blobs(), step_fn=lambda m, b: [1.0]).fit()
    with pytest.raises(ValueError, match="does not require grad"):
        Trainer(mlp(), config(), train_data=blobs(), step_fn=lambda m, b: m(b[0]).sum().detach()).fit()
    with pytest.raises(ValueError, match="not the model's"):
        Trainer(mlp(), config(), train_data=blobs(), optimizer=torch.optim.SGD(mlp(1).parameters(), lr=0.1))
