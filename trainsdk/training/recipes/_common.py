"""What the classification and segmentation recipes share: the configuration fields, augmentation, optimizer and
schedule, the Trainer that records export metadata in its checkpoints, and the run itself.

A recipe run: data (``_data.resolve_data``) -> model (``create_model``, seeded, sized from the data) -> optional
pretrained weights and transfer regime -> ``Trainer.fit`` (checkpoints ``last.pt``/``best.pt`` under ``out_dir``,
resumable) -> test metrics. Every checkpoint also carries ``export_metadata`` ({"preprocessing", "class_labels"}),
which ``deploysdk export`` embeds in the ONNX file so the clinical pipeline prepares images as training did.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from deploysdk.pipeline.preprocess import Preprocessing

from ...augment import AugmentPipeline, RandomAffine
from ...losses import create_loss
from ...models import LoadReport, create_model, model_entry
from ..checkpoint import save_model_checkpoint
from ..config import TrainerConfig
from ..trainer import Trainer
from ._classical import fit_classical
from ._data import DataSplits, resolve_data
from .transfer import FeatureExtractorRegime, Prepared, head_name, load_pretrained, make_regime

__all__ = ["RecipeConfig", "RecipeResult", "AugmentConfig", "CLASSIC_AFFINE", "OPTIMIZERS", "SCHEDULES",
           "run_recipe", "build_augment", "export_metadata"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
# "classic" augmentation: small rotations, shifts and zooms, no flips, so it passes every clinical profile
CLASSIC_AFFINE: dict[str, Any] = {"rotation_deg": 10.0, "translation": 0.05, "scale": 0.1}


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric augmentation: ``RandomAffine(**affine)`` checked against the clinical ``profile`` (None: no limits).

    It draws from torch's global generator, which the Trainer seeds from ``config.seed`` and saves in every
    checkpoint: the same seed repeats a run and a resumed run continues the same augmentation stream.
    """

    affine: Mapping[str, Any] = field(default_factory=lambda: dict(CLASSIC_AFFINE))
    profile: str | None = None


def build_augment(augment: str | AugmentConfig | Mapping | None, profile: str | None = None) -> AugmentPipeline | None:
    """The training-time pipeline: None for "none"; "classic" = ``CLASSIC_AFFINE``; a dict = RandomAffine fields.

    Refused at construction (``AugmentationPolicyError``) when the transform breaks the profile's limits.
    """
    if augment is None or augment == "none":
        return None
    if augment == "classic":
        augment = AugmentConfig(profile=profile)
    elif isinstance(augment, Mapping):
        augment = AugmentConfig(affine=dict(augment), profile=profile)
    if not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment must be 'none', 'classic', a dict of RandomAffine fields or an AugmentConfig, "
                         f"got {augment!r}")
    return AugmentPipeline([RandomAffine(**dict(augment.affine))], profile=augment.profile or profile)


@dataclass
class RecipeConfig:
    """Fields shared by ``ClassifyRecipe`` and ``SegmentRecipe`` (see their docstrings)."""

    model: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str | Dataset = ""
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    test_data: Dataset | None = None
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    train_samples: int | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    loss: str = "ce"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: str | AugmentConfig | dict | None = "none"
    profile: str | None = None
    weights: str | None = None
    transfer: Any = None
    seed: int = 0
    out_dir: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    resume: str | None = None
    progress: bool = True
    preprocessing: dict[str, Any] | None = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"{owner}: model must be a registered model name (trainsdk.models.list_models())")
        if isinstance(self.data, str) and not self.data:
            raise ValueError(f"{owner}: data must be a built-in dataset name (trainsdk.data.list_builtin()) or a "
                             f"Dataset")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{owner}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{owner}: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("model_kwargs", "data_kwargs", "loss_kwargs", "trainer_kwargs"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{owner}: {name} must be a dict, got {type(getattr(self, name)).__name__}")
        self.transfer = make_regime(self.transfer)
        build_augment(self.augment, self.profile)  # same checks (profile limits included) before any work
        self.trainer_config()

    def trainer_config(self) -> TrainerConfig:
        base = dict(max_epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                    device=self.device, precision=self.precision, seed=self.seed, out_dir=self.out_dir,
                    progress=self.progress)
        clash = sorted(set(base) & set(self.trainer_kwargs))
        if clash:
            raise ValueError(f"{type(self).__name__}: trainer_kwargs {clash} are recipe fields; set them directly")
        return TrainerConfig(**base, **self.trainer_kwargs)


@dataclass
class RecipeResult:
    """What a recipe produced. ``checkpoint``/``best_checkpoint``: ``out_dir/last.pt``/``best.pt`` (None without
    ``out_dir``); ``test_metrics``: on the held-out test split; ``classifier``: regime 1's scikit-learn pipeline."""

    model: nn.Module
    history: list[dict[str, Any]]
    test_metrics: dict[str, float]
    checkpoint: str | None
    best_checkpoint: str | None
    seconds: float
    num_train: int
    num_test: int
    load_report: LoadReport | None = None
    classifier: Any = None

    def summary(self) -> str:
        shown = {k: v for k, v in self.test_metrics.items() if "/" not in k}
        figures = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
        where = f"; checkpoint {self.checkpoint}" if self.checkpoint else ""
        return f"{self.num_train} train / {self.num_test} test images, {self.seconds:.1f} s: {figures}{where}"


def export_metadata(splits: DataSplits, override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"preprocessing": Preprocessing fields, "class_labels": [...]} as ``export_onnx(metadata=...)`` takes it."""
    fields = {"spacing": splits.spacing, "output": "softmax", **splits.preprocessing, **dict(override or {})}
    fields.setdefault("labels", {i: name for i, name in enumerate(splits.class_names)})
    spec = Preprocessing.from_dict(Preprocessing(**fields).to_dict())  # validated, then plain data
    return {"preprocessing": spec.to_dict(), "class_labels": list(splits.class_names)}


def build_model(cfg: RecipeConfig, splits: DataSplits, task: str) -> nn.Module:
    """The zoo model sized from the data (classes, channels), initialised from ``cfg.seed`` without touching the
    global generators; refuses models of the other task and images the model cannot take."""
    entry = model_entry(cfg.model)
    if entry.task != task:
        raise ValueError(f"model {cfg.model!r} is a {entry.task} model; the {task} recipe needs one of "
                         f"trainsdk.models.list_models(task={task!r})")
    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, **cfg.model_kwargs}
    for key, have in (("num_classes", splits.num_classes), ("in_channels", splits.in_channels)):
        if kwargs[key] != have:
            raise ValueError(f"model_kwargs {key}={kwargs[key]} but the data has {have}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **kwargs)
    if len(splits.spatial_shape) != model.spatial_dims:
        raise ValueError(f"model {cfg.model!r} is {model.spatial_dims}D but the images are "
                         f"{len(splits.spatial_shape)}D {splits.spatial_shape}")
    try:
        model.check_spatial_size(tuple(splits.spatial_shape))
    except ValueError as e:
        raise ValueError(f"the {splits.source} images ({'x'.join(map(str, splits.spatial_shape))}) do not fit "
                         f"{cfg.model}: {e}; choose another size (data_kwargs size=...)") from e
    return model


def _optimizer(cfg: RecipeConfig, groups: list[dict[str, Any]]) -> Callable:
    def build(_params) -> torch.optim.Optimizer:  # the groups, not the Trainer's flat list
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return build


def _scheduler(name: str) -> Callable | None:
    if name == "constant":
        return None

    def build(opt: torch.optim.Optimizer, total_steps: int):
        if name == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                       total_steps=max(total_steps, 1), pct_start=0.15)
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return build


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _run_classical(cfg: RecipeConfig, regime: FeatureExtractorRegime, model: nn.Module, splits: DataSplits,
                   extra: dict[str, Any], t0: float, report: LoadReport | None) -> RecipeResult:
    fit = fit_classical(model, splits.train, splits.test, num_classes=splits.num_classes, head=head_name(model),
                        classifier=regime.classifier, c=regime.c, batch_size=cfg.batch_size,
                        device=_device(cfg.device))
    path = None
    if cfg.out_dir is not None and fit.folded:  # the logistic regression now lives in the model's head
        os.makedirs(cfg.out_dir, exist_ok=True)
        path = os.path.join(cfg.out_dir, "last.pt")
        save_model_checkpoint(model.cpu(), path, **extra)
    return RecipeResult(model, [], fit.test_metrics, path, path, time.perf_counter() - t0, len(splits.train),
                        len(splits.test), report, fit.classifier)


def run_recipe(cfg: RecipeConfig, task: str, make_step: Callable, make_eval: Callable | None,
               evaluate: Callable) -> RecipeResult:
    """The run shared by the recipes; ``make_step(loss, augment, frozen)`` builds the training step,
    ``make_eval(step)`` the validation function (None: the step averaged), ``evaluate(model, splits, device,
    batch_size)`` the test metrics."""
    t0 = time.perf_counter()
    splits = resolve_data(cfg.data, cfg.data_kwargs, task, test_data=cfg.test_data, test_fraction=cfg.test_fraction,
                          val_fraction=cfg.val_fraction, train_samples=cfg.train_samples, seed=cfg.seed,
                          num_classes=cfg.model_kwargs.get("num_classes"))
    model = build_model(cfg, splits, task)
    report = load_pretrained(model, cfg.weights, verbose=False) if cfg.weights is not None else None  # in result
    extra = {"export_metadata": export_metadata(splits, cfg.preprocessing), "task": task}
    if isinstance(cfg.transfer, FeatureExtractorRegime):
        if task != "classification":
            raise ValueError("the feature-extractor regime fits a classifier: it applies to classification only")
        return _run_classical(cfg, cfg.transfer, model, splits, extra, t0, report)
    prepared = cfg.transfer.prepare(model, cfg.lr, splits.num_classes) if cfg.transfer is not None else \
        Prepared(model, [{"params": list(model.parameters()), "lr": cfg.lr}])
    step = make_step(create_loss(cfg.loss, **cfg.loss_kwargs), build_augment(cfg.augment, cfg.profile),
                     prepared.frozen)
    trainer = Trainer(prepared.model, cfg.trainer_config(), splits.train, splits.val, step_fn=step,
                      eval_fn=make_eval(step) if make_eval is not None else None,
                      optimizer=_optimizer(cfg, prepared.param_groups), scheduler=_scheduler(cfg.schedule),
                      checkpoint_extra=extra)
    history = trainer.fit(resume=cfg.resume)
    metrics = evaluate(prepared.model, splits, trainer.device, trainer.config.eval_batch_size or cfg.batch_size)
    last = best = None
    if cfg.out_dir is not None:
        last, best = (os.path.join(cfg.out_dir, n) for n in ("last.pt", "best.pt"))
        best = best if os.path.isfile(best) else None
    return RecipeResult(prepared.model, history, metrics, last, best, time.perf_counter() - t0, len(splits.train),
                        len(splits.test), report)


def keep_frozen_eval(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Called at every training step: the frozen part stays in eval mode although ``Trainer`` calls ``train()``."""
    if model.training:
        for m in frozen:
            m.eval()
