"""Classification recipe: any registered classifier on a built-in dataset or a Dataset of ``(image, label)``.

    result = train_classifier(ClassifyRecipe(model="lenet5_modern", data="digits", epochs=30, lr=2e-3,
                                             augment="classic", out_dir="runs/lenet"))
    result.test_metrics   # {"accuracy": ..., "sensitivity": ..., "specificity": ..., "auroc": ...}

Test metrics come from ``trainsdk.metrics``: accuracy, then sensitivity and specificity (one-vs-rest, the positive
class for two classes, macro-averaged otherwise) and AUROC on the softmax scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ...metrics import MetricTracker
from ._common import RecipeConfig, RecipeResult, keep_frozen_eval, run_recipe
from ._data import DataSplits

__all__ = ["ClassifyRecipe", "train_classifier", "classification_metrics", "CLASSIFICATION_METRICS"]

CLASSIFICATION_METRICS = ("accuracy", "sensitivity", "specificity", "auroc")
AUX_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers, as in the paper


@dataclass
class ClassifyRecipe(RecipeConfig):
    """A classification run. ``model``/``model_kwargs``: ``create_model`` name and arguments (``num_classes`` and
    ``in_channels`` come from the data). ``data``: a built-in name with ``data_kwargs`` (``trainsdk.data
    .load_builtin``) or a Dataset (``test_data``, or ``test_fraction`` held out); ``train_samples`` keeps that many
    training images (class-balanced); ``val_fraction`` of them validates (``best.pt`` then tracks ``val_loss``).
    ``optimizer``: "adamw", "adam", "sgd"; ``schedule``: "onecycle", "cosine", "constant" (per step). ``loss``:
    ``trainsdk.losses.create_loss`` name ("ce", "focal", ...). ``augment``: "none", "classic" (small rotations,
    shifts, zooms) or RandomAffine fields, checked against ``profile``. ``weights``: a pretrained state_dict file;
    ``transfer``: a regime from ``transfer.py`` or its name. ``resume``: None, "auto" or a checkpoint path.
    ``trainer_kwargs``: other ``TrainerConfig`` fields (``grad_clip``, ``early_stopping``, ``loggers`` ...).
    """

    loss: str = "ce"


def _make_step(loss_fn: nn.Module, augment, frozen: list[nn.Module]) -> Callable:
    def step(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        if model.training:
            keep_frozen_eval(model, frozen)
            if augment is not None:
                x = augment(x)  # draws from torch's global generator, which the Trainer seeds and checkpoints
        out = model(x)
        logits = out if isinstance(out, torch.Tensor) else out[0]  # (N, K); GoogLeNet adds auxiliary logits
        loss = loss_fn(logits.float(), y)
        aux = [a for a in out[1:] if a is not None] if not isinstance(out, torch.Tensor) else []
        if aux and model.training:
            loss = loss + AUX_WEIGHT * sum(loss_fn(a.float(), y) for a in aux)
        return {"loss": loss, "accuracy": (logits.argmax(1) == y).float().mean()}
    return step


@torch.no_grad()
def classification_metrics(model: nn.Module, splits: DataSplits, device: torch.device,
                           batch_size: int = 64) -> dict[str, float]:
    """Accuracy, sensitivity, specificity and AUROC of ``model`` on ``splits.test`` (eval mode)."""
    tracker = MetricTracker(list(CLASSIFICATION_METRICS), num_classes=splits.num_classes)
    was_training = model.training
    model.eval()
    try:
        for x, y in DataLoader(splits.test, batch_size=batch_size, shuffle=False):
            tracker.update(model(x.to(device)).float().cpu(), y)  # logits (N, K): softmax inside the tracker
    finally:
        model.train(was_training)
    return tracker.compute()


def train_classifier(cfg: ClassifyRecipe) -> RecipeResult:
    """Train (or, with the feature-extractor regime, fit) a classifier as ``cfg`` says; test it; see the module."""
    if not isinstance(cfg, ClassifyRecipe):
        raise TypeError(f"train_classifier takes a ClassifyRecipe, got {type(cfg).__name__}")
    return run_recipe(cfg, "classification", _make_step, None, classification_metrics)
