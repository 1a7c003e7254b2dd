import os
import random

import numpy as np
import pytest
import torch

import trainsdk.training.checkpoint as ckpt_mod
from tests.trainsdk.training.helpers import blobs, config, mlp
from trainsdk.data import load_digits
from trainsdk.models import create_model
from trainsdk.training import CheckpointError, Trainer, capture_rng_state, load_model_checkpoint, \
    load_training_state, restore_rng_state, save_model_checkpoint, save_training_state


def test_training_checkpoint_is_weights_only_and_self_describing_for_export(tmp_path):
    from deploysdk.runtime.torch import load_checkpoint

    digits = load_digits()
    x, y = digits.x_train[:64], digits.y_train[:64]  # (64, 1, 32, 32)
    trainer = Trainer(create_model("lenet5"), config(max_epochs=1, batch_size=32, out_dir=str(tmp_path)),
                      train_data=(x, y))
    trainer.fit()
    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # no pickled code: tensors, numbers, strings only
    assert raw["model_name"] == "lenet5" and raw["config"] == trainer.model.config.to_dict()
    assert (raw["epoch"], raw["global_step"]) == (1, 2)
    assert raw["trainer_config"]["batch_size"] == 32 and raw["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert set(raw["rng"]) == {"torch", "numpy", "python"}
    rebuilt = load_checkpoint(tmp_path / "last.pt")  # what `deploysdk export` does
    model, _ = load_model_checkpoint(tmp_path / "best.pt")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(x[:4])
        assert torch.equal(rebuilt(x[:4]), expected) and torch.equal(model.eval()(x[:4]), expected)


def test_a_crash_while_saving_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    model = mlp()
    save_training_state(path, model, epoch=1, global_step=6)
    good = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(path, model, epoch=2, global_step=12)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["last.pt"]  # temporary file removed
    assert load_training_state(path)["epoch"] == 1


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_load_training_state_refuses_pickles_and_model_only_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.TRAINING_STATE_FORMAT, "state_dict": {}, "x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_training_state(evil)
    model_only = tmp_path / "model.pt"
    save_model_checkpoint(create_model("lenet5"), model_only)
    with pytest.raises(CheckpointError, match="model-only checkpoint"):
        load_training_state(model_only)
    with pytest.raises(CheckpointError, match="not found"):
        load_training_state(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        save_training_state(tmp_path / "x.pt", mlp(), epoch=-1)


def test_keep_last_prunes_old_epoch_files_and_checkpoint_every(tmp_path):
    Trainer(mlp(), config(max_epochs=5, out_dir=str(tmp_path), keep_last=2, checkpoint_every=2),
            train_data=blobs()).fit()
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".pt"))
    assert names == ["best.pt", "epoch_0004.pt", "epoch_0005.pt", "last.pt"]  # every 2nd epoch, and the final one
    assert load_training_state(tmp_path / "epoch_0004.pt")["epoch"] == 4
    assert load_training_state(tmp_path / "last.pt")["epoch"] == 5
