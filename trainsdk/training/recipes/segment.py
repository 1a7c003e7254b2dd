"""Segmentation recipe: any registered segmentation network (2D or 3D) on a built-in dataset or a Dataset of
``(image (C, *spatial), label map (*spatial))``.

    result = train_segmenter(SegmentRecipe(model="unet", model_kwargs={"base_width": 16, "depth": 3},
                                           data="phantoms", data_kwargs={"n": 200, "size": 64}, epochs=20))
    result.test_metrics   # {"dice": ..., "dice/1": ..., "iou": ..., "hd95": ..., ...}

Test metrics per case and class from ``trainsdk.metrics``: Dice, IoU and the 95% Hausdorff distance (in the data's
voxel spacing, mm for phantoms), averaged over cases; the plain names are the mean over foreground classes, and
``dice/k`` etc. are class k. The checkpoint records the spacing, class names and "softmax" output as
``export_metadata``, so the exported ONNX file carries ``sdk.preprocessing`` for the clinical pipeline.
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

__all__ = ["SegmentRecipe", "train_segmenter", "segmentation_metrics", "SEGMENTATION_METRICS", "crop_to"]

SEGMENTATION_METRICS = ("dice", "iou", "hd95")


@dataclass
class SegmentRecipe(RecipeConfig):
    """A segmentation run; the fields are ``ClassifyRecipe``'s (see there), with Dice + cross-entropy as the
    default loss. A valid-padding network (``unet_original``) predicts a smaller map: targets are centre-cropped
    to it. ``augment`` moves images and label maps together (nearest sampling for the labels)."""

    loss: str = "dice_ce"
    batch_size: int = 8


def crop_to(target: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Centre-crop a label map ``(N, *S)`` to ``spatial`` (the output of a valid-convolution network)."""
    have = tuple(target.shape[1:])
    if have == tuple(spatial):
        return target
    if len(have) != len(spatial) or any(h < s for h, s in zip(have, spatial)):
        raise ValueError(f"the network's output {tuple(spatial)} does not fit in the target {have}")
    index = (slice(None),) + tuple(slice((h - s) // 2, (h - s) // 2 + s) for h, s in zip(have, spatial))
    return target[index]


def _foreground_dice(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hard Dice over the batch, mean over foreground classes present in prediction or target (a monitor)."""
    pred = logits.argmax(1)
    scores = []
    for c in range(1, logits.shape[1]):
        p, t = pred == c, y == c
        denom = p.sum() + t.sum()
        if denom > 0:
            scores.append(2.0 * (p & t).sum() / denom)
    return torch.stack(scores).mean() if scores else torch.ones((), device=logits.device)


def _make_step(loss_fn: nn.Module, augment, frozen: list[nn.Module]) -> Callable:
    def step(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch  # (N, C, *S), (N, *S)
        if model.training:
            keep_frozen_eval(model, frozen)
            if augment is not None:
                x, y = augment(x, y)  # one matrix per sample for both; torch's global generator (Trainer-seeded)
        logits = model(x)  # (N, K, *S')
        y = crop_to(y, tuple(logits.shape[2:]))
        out = {"loss": loss_fn(logits.float(), y)}
        if not model.training:
            out["dice"] = _foreground_dice(logits, y)
        return out
    return step


@torch.no_grad()
def segmentation_metrics(model: nn.Module, splits: DataSplits, device: torch.device,
                         batch_size: int = 8) -> dict[str, float]:
    """Dice, IoU and HD95 of ``model`` on ``splits.test``, per case and class (eval mode)."""
    tracker = MetricTracker(list(SEGMENTATION_METRICS), num_classes=splits.num_classes, spacing=splits.spacing)
    was_training = model.training
    model.eval()
    try:
        for x, y in DataLoader(splits.test, batch_size=batch_size, shuffle=False):
            logits = model(x.to(device)).float().cpu()  # (N, K, *S')
            tracker.update(logits.argmax(1), crop_to(torch.as_tensor(y), tuple(logits.shape[2:])))
    finally:
        model.train(was_training)
    return tracker.compute()


def train_segmenter(cfg: SegmentRecipe) -> RecipeResult:
    """Train a segmentation network as ``cfg`` says and test it; see the module docstring."""
    if not isinstance(cfg, SegmentRecipe):
        raise TypeError(f"train_segmenter takes a SegmentRecipe, got {type(cfg).__name__}")
    return run_recipe(cfg, "segmentation", _make_step, None, segmentation_metrics)
