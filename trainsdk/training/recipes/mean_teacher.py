"""Mean teacher for segmentation (Tarvainen & Valpola 2017; Perone, Ballester, Barros & Cohen-Adad 2019).

Labels are scarce, images are not. The student learns from the labeled images and, on the unlabeled ones, to agree
with a teacher whose weights are an exponential moving average (EMA) of the student's: an average of recent
students predicts more steadily than any one of them, so its output is a useful target. For segmentation the
target has to move with the image (Perone et al.): the student sees ``T(x_u)`` for a random geometric transform
``T``, and the teacher's soft prediction on the untransformed ``x_u`` is warped by the SAME matrix, so
``student(T(x_u)) ~ T(teacher(x_u))``. Pixels that ``T`` brings in from outside the image are left out of the
consistency term (nothing there to agree on). The consistency weight ramps up with a sigmoid
(``exp(-5 (1 - t)^2)``, Laine & Aila 2017) so the teacher's early, poor predictions do not dominate.

Everything runs on the ``Trainer``: ``MeanTeacher`` is a callback (EMA after every optimizer step, teacher weights in
the checkpoint so ``fit(resume=...)`` continues exactly) whose ``step`` method is the step function.

    mt = MeanTeacher(student, MeanTeacherConfig(consistency_weight=1.0, ema_decay=0.95))
    data = SemiSupervisedDataset(x_labeled, y_labeled, x_unlabeled)
    Trainer(student, cfg, data, val_data=(xv, yv), step_fn=mt.step, eval_fn=mt.eval_fn, callbacks=[mt]).fit()
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ...augment import RandomAffine, apply_affine
from ...losses import DiceCELoss
from ...metrics import dice_score
from ..callbacks import Callback
from ._checks import check_positive_ints

__all__ = ["MeanTeacherConfig", "MeanTeacher", "SemiSupervisedDataset", "sigmoid_rampup", "ema_decay_at",
           "ema_update", "warp", "consistency_pair", "consistency_loss", "predict_labels", "pooled_dice",
           "train_mean_teacher", "MeanTeacherExperiment", "MeanTeacherResult", "run_mean_teacher_experiment"]


# --- schedule and EMA -------------------------------------------------------------------------------------------------
def sigmoid_rampup(step: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(step / length, 0, 1)``: 0.0067 at the start, 1 from ``length`` on.

    ``length <= 0`` means no ramp-up (1.0 at once).
    """
    if not (math.isfinite(step) and math.isfinite(length)):
        raise ValueError(f"sigmoid_rampup: step and length must be finite, got step={step!r}, length={length!r}")
    if length <= 0:
        return 1.0
    t = min(max(float(step) / float(length), 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def ema_decay_at(decay: float, step: int) -> float:
    """``min(decay, 1 - 1 / (step + 1))`` (Tarvainen's warm-up): after step 1 the teacher is the mean of the
    initial and the current student, and it only averages over ``1 / (1 - decay)`` steps once that many exist."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema decay must be in [0, 1], got {decay!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    return min(float(decay), 1.0 - 1.0 / (step + 1))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, *, buffers: bool = True) -> None:
    """In place: every floating-point parameter (and buffer, with ``buffers=True``) ``t <- decay * t + (1 - decay)
    * s``; integer buffers (batch-norm step counters) are copied. ``buffers=False`` leaves the teacher's buffers
    alone (its batch-norm statistics are then its own, from its own forward passes in training mode). The two models
    must have the same state_dict keys and shapes."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema decay must be in [0, 1], got {decay!r}")
    t_state, s_state = teacher.state_dict(), student.state_dict()
    if not buffers:
        names = {name for name, _ in teacher.named_parameters()}
        t_state = {k: v for k, v in t_state.items() if k in names}
        s_state = {k: v for k, v in s_state.items() if k in names}
    if t_state.keys() != s_state.keys():
        diff = sorted(set(t_state) ^ set(s_state))
        raise ValueError(f"ema_update: teacher and student differ in state_dict keys: {diff[:5]}")
    for key, t in t_state.items():
        s = s_state[key]
        if t.shape != s.shape:
            raise ValueError(f"ema_update: {key!r} is {tuple(t.shape)} in the teacher, {tuple(s.shape)} in the student")
        if t.is_floating_point():
            t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)
        else:
            t.copy_(s)


# --- consistency ------------------------------------------------------------------------------------------------------
def warp(x: torch.Tensor, matrices: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """``x`` (N, C, *spatial) warped by forward pixel-space ``matrices`` (N, k, k), zeros outside."""
    return apply_affine(x, matrices, mode=mode, padding_mode="zeros")


def consistency_pair(student: nn.Module, teacher: nn.Module, x_u: torch.Tensor, matrices: torch.Tensor, *,
                     teacher_training: bool = False):
    """``(student probabilities on T(x_u), T(teacher probabilities on x_u), valid)`` for the transforms
    ``matrices`` (N, k, k); ``valid`` (N, 1, *spatial) bool marks pixels ``T`` maps from inside the image.

    Only the student's output carries gradients. The teacher runs without them, in eval mode, or in training mode
    with ``teacher_training=True`` (batch-norm on the batch's statistics, updating its own running statistics).
    """
    student_probs = torch.softmax(student(warp(x_u, matrices)).float(), dim=1)  # (N, K, *spatial)
    with torch.no_grad():
        was_training = teacher.training
        teacher.train(teacher_training)
        try:
            teacher_probs = torch.softmax(teacher(x_u).float(), dim=1)
        finally:
            teacher.train(was_training)
        ones = torch.ones_like(teacher_probs[:, :1])
        warped = warp(torch.cat([teacher_probs, ones], dim=1), matrices)  # one warp for both
        target, valid = warped[:, :-1], warped[:, -1:] > 0.999
    return student_probs, target, valid


def consistency_loss(student_probs: torch.Tensor, teacher_probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the class probabilities over the valid pixels (0 when none is valid)."""
    if student_probs.shape != teacher_probs.shape:
        raise ValueError(f"consistency_loss: student {tuple(student_probs.shape)} and teacher "
                         f"{tuple(teacher_probs.shape)} probabilities differ in shape")
    mask = valid.to(student_probs.dtype).expand_as(student_probs)
    return ((student_probs - teacher_probs) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


# --- data -------------------------------------------------------------------------------------------------------------
class SemiSupervisedDataset(Dataset):
    """``(x_labeled, y_labeled, x_unlabeled)`` triples, one per item of the larger set, the smaller one cycled.

    An epoch visits every unlabeled image once and the few labeled ones many times, so both terms see a full batch
    at every step; the Trainer's seeded sampler shuffles the triples, so the order is reproducible.
    """

    def __init__(self, images: Any, labels: Any, unlabeled: Any) -> None:
        self.images, self.labels, self.unlabeled = (torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor)
                                                    else a for a in (images, labels, unlabeled))
        if len(self.images) == 0 or len(self.unlabeled) == 0:
            raise ValueError(f"SemiSupervisedDataset needs at least one labeled and one unlabeled image, got "
                             f"{len(self.images)} and {len(self.unlabeled)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"SemiSupervisedDataset: {len(self.images)} labeled images but {len(self.labels)} labels")
        if self.images.shape[1:] != self.unlabeled.shape[1:]:
            raise ValueError(f"SemiSupervisedDataset: labeled images {tuple(self.images.shape[1:])} and unlabeled "
                             f"{tuple(self.unlabeled.shape[1:])} differ in (C, *spatial)")

    def __len__(self) -> int:
        return max(len(self.images), len(self.unlabeled))

    def __getitem__(self, i: int):
        j = i % len(self.images)
        return self.images[j], self.labels[j], self.unlabeled[i % len(self.unlabeled)]


# --- evaluation -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Argmax label maps (N, *spatial) in eval mode, batch by batch (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def pooled_dice(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """Per-class Dice (K,) over all pixels of all images pooled: a small lesion counts for as many pixels as it
    has, and images without a lesion do not add a perfect 1.0 each (as a per-image mean would)."""
    return np.asarray(dice_score(np.asarray(pred), np.asarray(target), num_classes=num_classes), dtype=np.float64)


def _dice_metrics(prefix: str, dice: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    out = {f"{prefix}dice": float(dice[1:].mean())}  # foreground classes
    out.update({f"{prefix}dice_{name}": float(d) for name, d in zip(class_names[1:], dice[1:])})
    return out


# --- the callback -----------------------------------------------------------------------------------------------------
@dataclass
class MeanTeacherConfig:
    """``consistency_weight``: the weight of the consistency term once ramped up (0 trains supervised only, on
    the same batches: the baseline). ``rampup_epochs``: sigmoid ramp-up length. ``ema_decay``: the teacher's
    EMA decay; the teacher averages about ``1 / (1 - ema_decay)`` steps, which has to be short against the run
    (0.99 suits tens of thousands of steps; on a few hundred, a teacher that old lags the student and drags it
    back). ``teacher_norm``: "own" (Tarvainen's: the teacher's batch norm uses the batch statistics while it
    predicts targets and keeps its own running statistics; only the weights are averaged) or "ema" (buffers are
    averaged too and the teacher predicts in eval mode; the averaged statistics need not fit the averaged weights).
    The consistency transform ``T`` is a ``RandomAffine`` with these ranges (rotation in degrees,
    translation as a fraction of the image, scale as a half-width around 1, flips on these x-first axes)."""

    consistency_weight: float = 1.0
    rampup_epochs: float = 8.0
    ema_decay: float = 0.95
    teacher_norm: str = "own"
    rotation_deg: float = 15.0
    translation: float = 0.05
    scale: float = 0.1
    flip_axes: tuple[int, ...] = ()
    seed: int = 0
    class_names: tuple[str, ...] = ("background", "organ", "lesion")

    def __post_init__(self) -> None:
        for name in ("consistency_weight", "rampup_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                    or not math.isfinite(value):
                raise ValueError(f"MeanTeacherConfig: {name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) \
                or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"MeanTeacherConfig: ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.teacher_norm not in ("ema", "own"):
            raise ValueError(f"MeanTeacherConfig: teacher_norm must be 'ema' or 'own', got {self.teacher_norm!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"MeanTeacherConfig: seed must be an integer >= 0, got {self.seed!r}")
        self.flip_axes, self.class_names = tuple(self.flip_axes), tuple(self.class_names)
        if len(self.class_names) < 2:
            raise ValueError(f"MeanTeacherConfig: class_names needs background and >= 1 class, got {self.class_names}")
        self.transform()  # RandomAffine validates the ranges with its own messages

    def transform(self) -> RandomAffine:
        return RandomAffine(rotation_deg=self.rotation_deg, translation=self.translation, scale=self.scale,
                            flip_axes=self.flip_axes)


class MeanTeacher(Callback):
    """Holds the teacher; ``step`` is the Trainer's step function, ``eval_fn`` its evaluation (student and
    teacher Dice), and as a callback it updates the teacher after every optimizer step and saves it with the
    checkpoint. ``loss_fn(logits, labels)``: the supervised loss (default Dice + cross-entropy)."""

    order = -10  # before ModelCheckpoint, so a checkpoint holds the teacher of the same step

    def __init__(self, student: nn.Module, config: MeanTeacherConfig | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        if not isinstance(student, nn.Module):
            raise TypeError(f"MeanTeacher: student must be an nn.Module, got {type(student).__name__}")
        self.config = config or MeanTeacherConfig()
        if not isinstance(self.config, MeanTeacherConfig):
            raise TypeError(f"MeanTeacher: config must be a MeanTeacherConfig, got {type(self.config).__name__}")
        self.teacher = copy.deepcopy(student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.transform = self.config.transform()
        self.loss_fn = loss_fn or DiceCELoss()
        self.global_step, self.steps_per_epoch = 0, 1

    def on_fit_start(self, trainer) -> None:
        self.teacher.to(trainer.device)
        self.global_step, self.steps_per_epoch = trainer.global_step, trainer.steps_per_epoch

    def on_batch_end(self, trainer, batch_idx: int, metrics: dict[str, float]) -> None:
        self.global_step = trainer.global_step
        # a teacher that never predicts (supervised-only baseline) has no statistics of its own: average them
        own = self.config.teacher_norm == "own" and self.config.consistency_weight > 0
        ema_update(self.teacher, trainer.model, ema_decay_at(self.config.ema_decay, self.global_step), buffers=not own)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])

    def weight(self, step: int) -> float:
        """The consistency weight at optimizer step ``step`` (1-based)."""
        length = self.config.rampup_epochs * self.steps_per_epoch
        return self.config.consistency_weight * sigmoid_rampup(step, length)

    def matrices(self, step: int, n: int, size: tuple[int, ...]) -> torch.Tensor:
        """The step's transforms, from a generator seeded by (seed, step): a resumed run draws the same ones."""
        seed = int(np.random.SeedSequence([self.config.seed, step]).generate_state(1, dtype=np.uint64)[0])
        return self.transform.sample_matrices(n, size, torch.Generator().manual_seed(seed))

    def step(self, model: nn.Module, batch) -> dict[str, torch.Tensor | float]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise TypeError("MeanTeacher.step expects (x_labeled, y_labeled, x_unlabeled) batches (a "
                            "SemiSupervisedDataset)")
        x_l, y_l, x_u = batch
        supervised = self.loss_fn(model(x_l).float(), y_l)
        out: dict[str, torch.Tensor | float] = {"loss": supervised, "supervised_loss": supervised.detach()}
        if self.config.consistency_weight == 0:
            return out
        step = self.global_step + 1  # the optimizer step this loss feeds
        mats = self.matrices(step, x_u.shape[0], tuple(x_u.shape[2:]))
        own = self.config.teacher_norm == "own"
        cons = consistency_loss(*consistency_pair(model, self.teacher, x_u, mats, teacher_training=own))
        w = self.weight(step)
        out.update(loss=supervised + w * cons, consistency_loss=cons.detach(), consistency_weight=w)
        return out

    def eval_fn(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """The student's supervised loss (``loss``) and pooled Dice (``dice``, ``dice_<class>``), and the teacher's
        Dice (``teacher_dice``...); batches ``(x, y)``."""
        preds, tpreds, targets, loss_sum = [], [], [], 0.0
        for x, y in loader:
            logits = model(x)
            loss_sum += float(self.loss_fn(logits.float(), y)) * len(x)
            preds.append(logits.argmax(1).cpu())
            tpreds.append(self.teacher(x).argmax(1).cpu())
            targets.append(y.cpu())
        k, names = len(self.config.class_names), self.config.class_names
        target = torch.cat(targets)
        return {"loss": loss_sum / max(len(target), 1),
                **_dice_metrics("", pooled_dice(torch.cat(preds), target, k), names),
                **_dice_metrics("teacher_", pooled_dice(torch.cat(tpreds), target, k), names)}


# --- recipe: training and the 10%-labels experiment ----------------------------------------------------------------
def train_mean_teacher(model: nn.Module, images: Any, labels: Any, unlabeled: Any, *, trainer_config,
                       config: MeanTeacherConfig | None = None, val_data: Any = None,
                       loss_fn: Callable | None = None, callbacks: Iterable[Callback] = (),
                       scheduler: Any = "cosine", resume: Any = None):
    """Train ``model`` (the student) by mean teacher; returns ``(trainer, mean_teacher)`` after ``fit``.

    ``images``/``labels``: the labeled set (N_l, C, *spatial) / (N_l, *spatial); ``unlabeled`` (N_u, C, *spatial).
    ``val_data`` ``(x, y)`` adds the student's and teacher's Dice to every epoch record. ``scheduler="cosine"``
    anneals the learning rate to 0 over the run (stable final weights to compare); ``None`` keeps it constant.
    """
    from ..trainer import Trainer

    from .anomaly import cosine_schedule

    mt = MeanTeacher(model, config, loss_fn)
    sched = cosine_schedule if scheduler == "cosine" else scheduler
    trainer = Trainer(model, trainer_config, SemiSupervisedDataset(images, labels, unlabeled), val_data=val_data,
                      step_fn=mt.step, eval_fn=mt.eval_fn, scheduler=sched, callbacks=[mt, *callbacks])
    trainer.fit(resume=resume)
    return trainer, mt


@dataclass
class MeanTeacherExperiment:
    """Phantom segmentation (background/organ/lesion) with ``label_fraction`` of ``n_train`` images labeled: a
    small U-Net trained on the labeled ones alone vs by mean teacher with the rest unlabeled, from the same
    initial weights, on the same batches and for the same number of steps."""

    n_train: int = 100
    n_test: int = 60
    size: int = 64
    label_fraction: float = 0.1
    base_width: int = 8
    depth: int = 3
    epochs: int = 20
    batch_size: int = 8
    lr: float = 3e-3
    seed: int = 0
    device: str = "auto"
    mean_teacher: MeanTeacherConfig = field(default_factory=lambda: MeanTeacherConfig(ema_decay=0.9))

    def __post_init__(self) -> None:
        if not 0.0 < self.label_fraction < 1.0:
            raise ValueError(f"MeanTeacherExperiment: label_fraction must be in (0, 1), got {self.label_fraction!r}")
        check_positive_ints(self, ("n_train", "n_test", "epochs", "batch_size", "base_width", "depth"))
        if round(self.label_fraction * self.n_train) >= self.n_train:
            raise ValueError(f"MeanTeacherExperiment: label_fraction {self.label_fraction} of n_train "
                             f"{self.n_train} leaves no unlabeled image")


@dataclass
class MeanTeacherResult:
    """Pooled test Dice (``dice`` = mean over foreground classes, ``dice_<class>``) of each arm."""

    labeled: int
    unlabeled: int
    supervised: dict[str, float]
    student: dict[str, float]
    teacher: dict[str, float]

    def rows(self) -> list[tuple[str, float, float, float]]:
        """(arm, mean foreground Dice, then one Dice per foreground class)."""
        return [(name, *d.values()) for name, d in (("supervised only", self.supervised),
                                                      ("mean teacher: student", self.student),
                                                      ("mean teacher: teacher", self.teacher))]


def _phantom_split(exp: MeanTeacherExperiment):
    from ...data import make_phantoms

    train = make_phantoms(exp.n_train, (exp.size, exp.size), seed=exp.seed)
    test = make_phantoms(exp.n_test, (exp.size, exp.size), seed=exp.seed + 10_000)
    order = np.random.default_rng(exp.seed).permutation(exp.n_train)
    n_labeled = max(1, int(round(exp.label_fraction * exp.n_train)))
    lab, unl = np.sort(order[:n_labeled]), np.sort(order[n_labeled:])
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.masks)
    return (x[lab], y[lab], x[unl]), (torch.from_numpy(test.images), torch.from_numpy(test.masks))


def run_mean_teacher_experiment(exp: MeanTeacherExperiment | None = None, *, out_dir: str | None = None,
                                progress: bool = False) -> MeanTeacherResult:
    """Both arms of ``exp``; ``out_dir`` keeps each arm's checkpoints and logs in a subfolder."""
    import dataclasses
    import os

    from ...models import create_model
    from ..config import TrainerConfig

    exp = exp or MeanTeacherExperiment()
    (x_l, y_l, x_u), (x_test, y_test) = _phantom_split(exp)
    names = exp.mean_teacher.class_names
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        initial = create_model("unet", num_classes=len(names), in_channels=1, base_width=exp.base_width,
                               depth=exp.depth)
    results = {}
    for arm, weight in (("supervised", 0.0), ("mean_teacher", exp.mean_teacher.consistency_weight)):
        cfg = TrainerConfig(max_epochs=exp.epochs, batch_size=exp.batch_size, lr=exp.lr, seed=exp.seed,
                            device=exp.device, progress=progress, log_every=0,
                            out_dir=None if out_dir is None else os.path.join(out_dir, arm))
        model = copy.deepcopy(initial)
        mt_cfg = dataclasses.replace(exp.mean_teacher, consistency_weight=weight)
        _, mt = train_mean_teacher(model, x_l, y_l, x_u, trainer_config=cfg, config=mt_cfg)
        results[arm] = (_dice_metrics("", pooled_dice(predict_labels(model, x_test), y_test, len(names)), names),
                        _dice_metrics("", pooled_dice(predict_labels(mt.teacher, x_test), y_test, len(names)),
                                      names))
    return MeanTeacherResult(len(x_l), len(x_u), results["supervised"][0], *results["mean_teacher"])
