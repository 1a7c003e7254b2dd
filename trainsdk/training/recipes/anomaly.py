"""Anomaly detection with an autoencoder trained on healthy images only (Baur, Wiestler, Albarqouni & Navab 2019).

An autoencoder that has only ever seen healthy anatomy learns to reproduce healthy anatomy; a lesion, never seen,
comes back as the healthy tissue around it. The residual ``|x - AE(x)|`` is then an anomaly map: near zero where
the image is healthy, large on the lesion. Smoothing removes the single-pixel residual of noise and edges, a mask
(the organ, as a brain mask for MR) can remove what lies outside the region of interest, and the mean of the
``top_k`` largest residuals scores the whole image. No lesion is ever labeled; evaluation uses image-level AUROC
(lesion vs healthy images) and pixel-level AUROC (lesion vs other pixels).

The maps also label: thresholded at a high percentile of the residuals on healthy images (so no lesion label is
used to choose it), they give pseudo-masks for many images, and a segmentation network trained on a few
ground-truth masks plus these pseudo-labels can be compared with one trained on the few masks alone
(:func:`run_anomaly_experiment`).

The autoencoder has to be unable to copy its input: a narrow bottleneck (``conv_dae`` with a few channels at 1/8
resolution by default) and no skip connections (RED-Net's skips would pass the lesion straight through).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from ...metrics import auroc
from ._checks import check_positive_ints

__all__ = ["reconstruction_step", "train_healthy_autoencoder", "reconstruct", "anomaly_maps", "image_scores",
           "anomaly_auroc", "healthy_threshold", "pseudo_labels", "AnomalyExperiment", "AnomalyResult",
           "run_anomaly_experiment"]


# --- training -------------------------------------------------------------------------------------------------------
def reconstruction_step(noise_std: float = 0.0):
    """A Trainer step: MSE between ``model(x + noise)`` and ``x`` for batches ``(x,)`` or ``(x, ...)``.

    ``noise_std`` > 0 trains a denoising autoencoder; the noise comes from torch's global generator, which the
    Trainer seeds and restores on resume.
    """
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not noise_std >= 0:
        raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")

    def step(model: nn.Module, batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch  # (N, C, H, W)
        noisy = x + noise_std * torch.randn_like(x) if noise_std > 0 and model.training else x
        return F.mse_loss(model(noisy).float(), x.float())
    return step


def train_healthy_autoencoder(model: nn.Module, healthy: Any, *, trainer_config, val_images: Any = None,
                              noise_std: float = 0.0, callbacks=(), resume: Any = None):
    """Fit ``model`` to reconstruct the ``healthy`` images (N, C, H, W); returns the Trainer after ``fit``.

    ``val_images`` (healthy too) gives ``val_loss``. Checkpoints and resume are the Trainer's (``out_dir``).
    """
    from ..trainer import Trainer

    x = _as_images(healthy, "healthy")
    val = None if val_images is None else (_as_images(val_images, "val_images"),)
    trainer = Trainer(model, trainer_config, (x,), val_data=val, step_fn=reconstruction_step(noise_std),
                      callbacks=callbacks, scheduler=cosine_schedule)
    trainer.fit(resume=resume)
    return trainer


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int):
    """The Trainer's scheduler factory used by these recipes: cosine annealing to 0 over the run, so the final
    weights (the ones compared) are those of a settled run rather than of wherever a constant rate left them."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(int(total_steps), 1))


def _as_images(images: Any, name: str) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float batch (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
    return x.float()


# --- maps and scores ------------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstruct(model: nn.Module, images: Any, batch_size: int = 64) -> torch.Tensor:
    """``model(images)`` in eval mode, batch by batch, on the model's device; returned on the CPU."""
    x = _as_images(images, "images")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def anomaly_maps(model: nn.Module, images: Any, *, smooth_sigma: float = 1.0, mask: Any = None,
                 batch_size: int = 64) -> np.ndarray:
    """(N, H, W) residual maps ``|x - AE(x)|`` (mean over channels), Gaussian-smoothed in-plane by
    ``smooth_sigma`` pixels (0: none) and zeroed outside ``mask`` (N, H, W) bool when given."""
    x = _as_images(images, "images")
    if not smooth_sigma >= 0:
        raise ValueError(f"smooth_sigma must be >= 0, got {smooth_sigma!r}")
    residual = (x - reconstruct(model, x, batch_size)).abs().mean(1).numpy()  # (N, H, W)
    if smooth_sigma > 0:
        residual = ndimage.gaussian_filter(residual, (0, smooth_sigma, smooth_sigma), mode="nearest")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != residual.shape:
            raise ValueError(f"mask must be (N, H, W) = {residual.shape}, got {m.shape}")
        residual = np.where(m, residual, 0.0)
    return residual.astype(np.float32)


def image_scores(maps: Any, top_k: int | float = 0.01) -> np.ndarray:
    """(N,) the mean of the ``top_k`` largest values of each map: an int is a pixel count, a float in (0, 1) a
    fraction of the pixels. Large enough to ignore a stray pixel, small enough that a lesion fills it."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim < 2:
        raise ValueError(f"maps must be (N, *spatial), got shape {m.shape}")
    flat = m.reshape(len(m), -1)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)):
        raise TypeError(f"top_k must be an int (pixels) or a float fraction, got {top_k!r}")
    k = int(top_k) if isinstance(top_k, int) else int(math.ceil(float(top_k) * flat.shape[1]))
    if isinstance(top_k, float) and not 0.0 < top_k <= 1.0 or not 1 <= k <= flat.shape[1]:
        raise ValueError(f"top_k must be 1..{flat.shape[1]} pixels or a fraction in (0, 1], got {top_k!r}")
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def anomaly_auroc(maps: Any, scores: Any, anomalous: Any, lesion_masks: Any) -> dict[str, float]:
    """``image_auroc``: scores of anomalous vs normal images; ``pixel_auroc``: map values of lesion pixels vs all
    other pixels, over every image given (healthy images contribute negatives only)."""
    maps, masks = np.asarray(maps), np.asarray(lesion_masks, dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and lesion_masks {masks.shape} must have the same shape")
    flags = np.asarray(anomalous, dtype=bool)
    if flags.shape != (len(maps),) or np.asarray(scores).shape != (len(maps),):
        raise ValueError(f"scores and anomalous must be ({len(maps)},), got {np.asarray(scores).shape} and "
                         f"{flags.shape}")
    return {"image_auroc": float(auroc(flags.astype(np.int64), np.asarray(scores, dtype=np.float64))),
            "pixel_auroc": float(auroc(masks.ravel().astype(np.int64), maps.ravel().astype(np.float64)))}


# --- pseudo-labels --------------------------------------------------------------------------------------------------
def healthy_threshold(healthy_maps: Any, percentile: float = 99.5, mask: Any = None) -> float:
    """The ``percentile`` of the map values on healthy images (within ``mask`` when given): a residual above it is
    rarer than ``100 - percentile`` % on healthy tissue. Chosen without any lesion label."""
    values = np.asarray(healthy_maps, dtype=np.float64)
    if mask is not None:
        values = values[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        raise ValueError("healthy_threshold needs at least one healthy map value")
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"percentile must be in (0, 100), got {percentile!r}")
    return float(np.percentile(values, percentile))


def pseudo_labels(maps: Any, threshold: float, *, min_size: int = 0) -> np.ndarray:
    """(N, H, W) bool: map > ``threshold``, without connected components smaller than ``min_size`` pixels."""
    m = np.asarray(maps)
    if m.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {m.shape}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    labels = m > threshold
    if min_size > 1:
        for i, image in enumerate(labels):
            comp, n = ndimage.label(image)
            if n:
                sizes = np.bincount(comp.ravel())
                keep = sizes >= min_size
                keep[0] = False
                labels[i] = keep[comp]
    return labels


# --- the experiment -------------------------------------------------------------------------------------------------
@dataclass
class AnomalyExperiment:
    """Synthetic lesion data (``make_healthy`` / ``make_lesion_classification``, 64x64): an autoencoder on
    ``n_healthy`` healthy images; AUROC on a test set of ``n_test_per_class`` images per lesion class plus as many
    healthy ones; then an unlabeled pool (``n_pool_per_class`` per class, healthy included) gets pseudo-labels,
    and a U-Net trained on ``n_masks`` ground-truth masks + the pseudo-labeled pool is compared with one trained on
    the ``n_masks`` masks alone (same initial weights and number of steps)."""

    n_healthy: int = 200
    n_healthy_val: int = 40
    n_test_per_class: int = 20
    n_pool_per_class: int = 30
    n_masks: int = 6
    size: int = 64
    ae_model: str = "conv_dae"
    ae_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": (16, 32, 8)})
    ae_epochs: int = 20
    noise_std: float = 0.0
    smooth_sigma: float = 2.0
    top_k: float = 0.01
    use_organ_mask: bool = True  # like a brain mask: residuals outside the organ are not lesions
    percentile: float = 99.5
    min_size: int = 10
    seg_epochs: int = 15
    seg_base_width: int = 8
    seg_depth: int = 3
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n_healthy", "n_healthy_val", "n_test_per_class", "n_pool_per_class", "n_masks",
                                   "ae_epochs", "seg_epochs", "batch_size", "seg_base_width", "seg_depth"))
        if self.n_masks >= 3 * self.n_pool_per_class:
            raise ValueError(f"AnomalyExperiment: n_masks ({self.n_masks}) must be smaller than the lesion images "
                             f"in the pool (3 x n_pool_per_class = {3 * self.n_pool_per_class})")


@dataclass
class AnomalyResult:
    """AUROCs of the anomaly maps; Dice of the lesion class: pseudo-labels against the hidden masks of the pool,
    the thresholded maps as a segmentation of the test set, and the two U-Nets on the test set."""

    image_auroc: float
    pixel_auroc: float
    threshold: float
    pseudo_label_dice: float
    map_dice_test: float
    dice_masks_only: float
    dice_masks_plus_pseudo: float
    n_masks: int
    n_pseudo: int
    ae_final_loss: float

    def rows(self) -> list[tuple[str, float]]:
        return [("image-level AUROC", self.image_auroc), ("pixel-level AUROC", self.pixel_auroc),
                ("pseudo-label Dice (pool)", self.pseudo_label_dice), ("thresholded map Dice (test)",
                                                                        self.map_dice_test),
                (f"U-Net, {self.n_masks} masks only", self.dice_masks_only),
                (f"U-Net, {self.n_masks} masks + {self.n_pseudo} pseudo", self.dice_masks_plus_pseudo)]


def _lesion_sets(exp: AnomalyExperiment):
    from ...data import make_healthy, make_lesion_classification

    healthy = make_healthy(exp.n_healthy + exp.n_healthy_val, exp.size, seed=exp.seed)
    test = make_lesion_classification(exp.n_test_per_class, exp.size, seed=exp.seed + 1, include_healthy=True)
    pool = make_lesion_classification(exp.n_pool_per_class, exp.size, seed=exp.seed + 2, include_healthy=True)
    return healthy.subset(np.arange(exp.n_healthy)), healthy.subset(np.arange(exp.n_healthy, len(healthy))), \
        test, pool


def _dice(pred: Any, target: Any) -> float:
    from ...metrics import dice_score

    return float(dice_score(np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)))


def _train_segmenter(initial: nn.Module, x: torch.Tensor, y: torch.Tensor, steps_like: int,
                     exp: AnomalyExperiment) -> nn.Module:
    """A copy of ``initial`` trained with Dice + cross-entropy on (x, y), repeated to ``steps_like`` samples per
    epoch so both arms take the same number of optimizer steps."""
    from ...losses import DiceCELoss
    from ..config import TrainerConfig
    from ..trainer import Trainer

    reps = -(-steps_like // len(x))
    x, y = x.repeat(reps, 1, 1, 1)[:steps_like], y.repeat(reps, 1, 1)[:steps_like]
    model, loss_fn = copy.deepcopy(initial), DiceCELoss()
    cfg = TrainerConfig(max_epochs=exp.seg_epochs, batch_size=exp.batch_size, lr=exp.lr, seed=exp.seed,
                        device=exp.device, progress=False, log_every=0)
    Trainer(model, cfg, (x, y), step_fn=lambda m, b: loss_fn(m(b[0]).float(), b[1]), scheduler=cosine_schedule).fit()
    return model


def _segment(model: nn.Module, images: np.ndarray) -> np.ndarray:
    from .mean_teacher import predict_labels

    return predict_labels(model, torch.from_numpy(images)).numpy() == 1


def run_anomaly_experiment(exp: AnomalyExperiment | None = None) -> AnomalyResult:
    """Everything in ``exp``'s docstring, deterministic for ``exp.seed``."""
    from ...models import create_model
    from ..config import TrainerConfig

    exp = exp or AnomalyExperiment()
    healthy, healthy_val, test, pool = _lesion_sets(exp)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        ae = create_model(exp.ae_model, in_channels=1, **exp.ae_kwargs)
        seg_init = create_model("unet", num_classes=2, in_channels=1, base_width=exp.seg_base_width,
                                depth=exp.seg_depth)
    cfg = TrainerConfig(max_epochs=exp.ae_epochs, batch_size=exp.batch_size, lr=exp.lr, seed=exp.seed,
                        device=exp.device, progress=False, log_every=0)
    trainer = train_healthy_autoencoder(ae, healthy.images, trainer_config=cfg, noise_std=exp.noise_std)

    def maps_of(s):
        return anomaly_maps(ae, s.images, smooth_sigma=exp.smooth_sigma,
                            mask=s.organ_masks if exp.use_organ_mask else None)

    test_maps = maps_of(test)
    aurocs = anomaly_auroc(test_maps, image_scores(test_maps, exp.top_k), test.labels != 3, test.lesion_masks)
    tau = healthy_threshold(maps_of(healthy_val), exp.percentile,
                            mask=healthy_val.organ_masks if exp.use_organ_mask else None)
    pool_pseudo = pseudo_labels(maps_of(pool), tau, min_size=exp.min_size)
    lesion_idx = np.flatnonzero(pool.labels != 3)  # the few images an expert would outline
    gt_idx = np.random.default_rng(exp.seed).choice(lesion_idx, exp.n_masks, replace=False)
    rest = np.setdiff1d(np.arange(len(pool)), gt_idx)
    x_pool, y_gt = torch.from_numpy(pool.images), torch.from_numpy(pool.lesion_masks.astype(np.int64))
    y_mixed = torch.from_numpy(pool_pseudo.astype(np.int64))
    y_mixed[gt_idx] = y_gt[gt_idx]
    only = _train_segmenter(seg_init, x_pool[gt_idx], y_gt[gt_idx], len(pool), exp)
    mixed = _train_segmenter(seg_init, x_pool, y_mixed, len(pool), exp)
    return AnomalyResult(
        image_auroc=aurocs["image_auroc"], pixel_auroc=aurocs["pixel_auroc"], threshold=tau,
        pseudo_label_dice=_dice(pool_pseudo[rest], pool.lesion_masks[rest]),
        map_dice_test=_dice(pseudo_labels(test_maps, tau, min_size=exp.min_size), test.lesion_masks),
        dice_masks_only=_dice(_segment(only, test.images), test.lesion_masks),
        dice_masks_plus_pseudo=_dice(_segment(mixed, test.images), test.lesion_masks),
        n_masks=exp.n_masks, n_pseudo=len(rest), ae_final_loss=float(trainer.history[-1]["train_loss"]))
