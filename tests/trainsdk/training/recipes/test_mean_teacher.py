import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainsdk.augment import compose, flip, rotation, translation
from trainsdk.training import Callback, TrainerConfig
from trainsdk.training.recipes.mean_teacher import (MeanTeacher, MeanTeacherConfig, MeanTeacherExperiment,
                                                    SemiSupervisedDataset, consistency_loss, consistency_pair,
                                                    ema_decay_at, ema_update, pooled_dice, sigmoid_rampup,
                                                    train_mean_teacher, warp)


# --- ramp-up and EMA ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("step, length, expected", [
    (0, 10, math.exp(-5.0)), (5, 10, math.exp(-5.0 * 0.25)), (8, 10, math.exp(-5.0 * 0.04)), (10, 10, 1.0),
    (25, 10, 1.0), (-3, 10, math.exp(-5.0)), (7, 0, 1.0)])
def test_sigmoid_rampup_values(step, length, expected):
    assert sigmoid_rampup(step, length) == pytest.approx(expected, rel=1e-12)


def test_sigmoid_rampup_is_monotonic_and_rejects_nan():
    values = [sigmoid_rampup(s, 50) for s in range(60)]
    assert all(b >= a for a, b in zip(values, values[1:])) and values[-1] == 1.0
    with pytest.raises(ValueError, match="finite"):
        sigmoid_rampup(float("nan"), 10)


def test_ema_decay_warms_up_then_caps():
    assert [ema_decay_at(0.99, s) for s in (0, 1, 3, 9)] == pytest.approx([0.0, 0.5, 0.75, 0.9])
    assert ema_decay_at(0.99, 10_000) == 0.99
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ema_decay_at(1.5, 3)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3))


def test_ema_update_math_parameters_and_buffers():
    teacher, student = _net(0), _net(1)
    student[1].running_mean.fill_(2.0)
    student[1].num_batches_tracked.fill_(7)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    ema_update(teacher, student, 0.9)
    for key, value in teacher.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * t0[key] + 0.1 * s0[key])
    assert int(teacher[1].num_batches_tracked) == 7  # counters are copied, not averaged
    torch.testing.assert_close(student.state_dict()["0.weight"], s0["0.weight"])  # the student is untouched


def test_ema_update_without_buffers_keeps_the_teachers_statistics():
    teacher, student = _net(0), _net(1)
    student[1].running_var.fill_(5.0)
    w_t, w_s = teacher[0].weight.detach().clone(), student[0].weight.detach().clone()
    ema_update(teacher, student, 0.5, buffers=False)
    torch.testing.assert_close(teacher[0].weight.detach(), 0.5 * w_t + 0.5 * w_s)
    torch.testing.assert_close(teacher[1].running_var, torch.ones(3))


def test_ema_update_refuses_different_models():
    with pytest.raises(ValueError, match="state_dict keys"):
        ema_update(_net(0), nn.Conv2d(1, 3, 3), 0.9)
    with pytest.raises(ValueError, match="decay"):
        ema_update(_net(0), _net(1), -0.1)


# --- consistency transform --------------------------------------------------------------------------------------------
class PixelNet(nn.Module):
    """Per-pixel (1x1) classifier: equivariant to any warp that moves whole pixels (90-degree turns, flips, integer
    shifts), so the teacher's prediction warped by T must equal the prediction on the warped input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[4.0]]], [[[-3.0]]], [[[0.5]]]]))
            self.conv.bias.copy_(torch.tensor([-1.0, 1.0, 0.0]))

    def forward(self, x):
        return self.conv(x)


def _image(n: int = 2, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(3))  # (N, 1, S, S), asymmetric


def test_warped_teacher_equals_student_on_warped_input_for_pixel_moves():
    x = _image()
    size = tuple(x.shape[2:])
    mats = torch.stack([rotation(90.0, size), compose(flip((0,), size), translation((2.0, -1.0)))])  # (2, 3, 3)
    student, teacher = PixelNet(), PixelNet()
    s, t, valid = consistency_pair(student, teacher, x, mats)
    assert s.shape == t.shape == (2, 3, 12, 12) and valid.shape == (2, 1, 12, 12)
    assert bool(valid[0].all()) and 0 < int(valid[1].sum()) < 144  # a shift brings in pixels from outside
    m = valid.expand_as(s)
    torch.testing.assert_close(s[m], t[m], atol=1e-5, rtol=1e-5)
    assert float(consistency_loss(s, t, valid).detach()) < 1e-10
    # the direction matters: the teacher's map warped by the inverse transform disagrees
    _, t_inv, v_inv = consistency_pair(student, teacher, x, torch.linalg.inv(mats))
    assert float(consistency_loss(s, t_inv, valid & v_inv).detach()) > 1e-3


def test_warp_of_a_quarter_turn_is_rot90():
    x = _image(1, 8)
    torch.testing.assert_close(warp(x, rotation(90.0, (8, 8))[None]), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5,
                               rtol=0)


def test_consistency_loss_is_the_masked_mean_square():
    s = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])  # (1, 2, 1, 2)
    t = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])
    valid = torch.tensor([[[[True, False]]]])
    assert float(consistency_loss(s, t, valid)) == pytest.approx((0.25 + 0.25) / 2)
    assert float(consistency_loss(s, t, torch.zeros_like(valid))) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        consistency_loss(s, t[:, :1], valid)


# --- data and config ------------------------------------------------------------------------------------------------
def test_semi_supervised_dataset_cycles_the_smaller_set():
    xl, yl, xu = torch.zeros(2, 1, 4, 4), torch.tensor([[0] * 4] * 2), torch.arange(5.0).view(5, 1, 1, 1).expand(
        5, 1, 4, 4)
    xl[1] += 1
    ds = SemiSupervisedDataset(xl, yl.view(2, 1, 4).expand(2, 4, 4), xu)
    assert len(ds) == 5
    assert [float(ds[i][0][0, 0, 0]) for i in range(5)] == [0, 1, 0, 1, 0]
    assert [float(ds[i][2][0, 0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="differ in"):
        SemiSupervisedDataset(xl, yl, torch.zeros(3, 1, 5, 5))
    with pytest.raises(ValueError, match="labels"):
        SemiSupervisedDataset(xl, yl[:1], xu)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="ema_decay"):
        MeanTeacherConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="consistency_weight"):
        MeanTeacherConfig(consistency_weight=-1)
    with pytest.raises(ValueError, match="teacher_norm"):
        MeanTeacherConfig(teacher_norm="batch")
    with pytest.raises(ValueError, match="label_fraction"):
        MeanTeacherExperiment(label_fraction=1.0)


def test_pooled_dice_counts_pixels_over_all_images():
    pred = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    target = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]]])
    # class 1: |P|=2, |T|=2, overlap 1 -> 0.5 (a per-image mean would give 0.67 and 0 for the two images)
    assert pooled_dice(pred, target, 2)[1] == pytest.approx(0.5)


# --- training through the Trainer -------------------------------------------------------------------------------------
def _tiny_data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 16, 16, generator=g)
    y = (x[:, 0] > 0.5).long()  # (N, 16, 16): a per-pixel task a small net learns
    return x[:4], y[:4], x[4:]


def _unet(seed: int = 0):
    from trainsdk.models import create_model

    torch.manual_seed(seed)
    return create_model("unet", num_classes=2, in_channels=1, base_width=4, depth=1)


class _Interrupt(Exception):
    pass


class _InterruptAt(Callback):
    """Raises after the first optimizer step of ``epoch``: a run killed mid-epoch (its last.pt is the epoch before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, trainer, batch_idx, metrics):
        if trainer.current_epoch == self.epoch:
            raise _Interrupt


def _fit(tmp_path, epochs: int, resume=None, callbacks=(), model_seed: int = 0):
    xl, yl, xu = _tiny_data()
    cfg = TrainerConfig(max_epochs=epochs, batch_size=4, lr=1e-2, device="cpu", progress=False, log_every=0,
                        out_dir=str(tmp_path), loggers=())
    mt_cfg = MeanTeacherConfig(consistency_weight=1.0, rampup_epochs=1, ema_decay=0.9,
                               class_names=("background", "bright"))
    model = _unet(model_seed)
    trainer, mt = train_mean_teacher(model, xl, yl, xu, trainer_config=cfg, config=mt_cfg, val_data=(xl, yl),
                                     resume=resume, callbacks=callbacks)
    return trainer, mt


def test_mean_teacher_trains_updates_the_teacher_and_resumes_exactly(tmp_path):
    trainer, mt = _fit(tmp_path / "full", 2)
    record = trainer.history[-1]
    assert {"train_consistency_loss", "train_supervised_loss", "val_dice", "val_teacher_dice"} <= set(record)
    assert record["train_consistency_weight"] == pytest.approx(1.0)  # ramped up after one epoch
    assert mt.global_step == trainer.global_step == 4
    student, teacher = trainer.model.state_dict(), mt.teacher.state_dict()
    assert not torch.equal(student["head.weight"], teacher["head.weight"])  # a lagging average, not a copy

    with pytest.raises(_Interrupt):
        _fit(tmp_path / "cut", 2, callbacks=[_InterruptAt(2)])
    resumed, mt2 = _fit(tmp_path / "cut", 2, resume="auto", model_seed=5)  # other weights: all come from last.pt
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, student[key], rtol=0, atol=0)
    for key, value in mt2.teacher.state_dict().items():
        torch.testing.assert_close(value, teacher[key], rtol=0, atol=0)


def test_step_refuses_plain_pairs():
    mt = MeanTeacher(_unet())
    with pytest.raises(TypeError, match="x_unlabeled"):
        mt.step(_unet(), (torch.zeros(1, 1, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long)))
