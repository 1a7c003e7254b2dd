"""Autoencoders as denoisers and restorers, and as pretraining when labels are scarce.

Restoration (``run_restoration_experiment``): clean phantoms (``make_phantoms`` without acquisition noise) are
degraded in code -- Gaussian noise (``denoise``), 2x down-sampling (``superres``; the network refines the bicubic
up-sampling, SRCNN's setting) or a simulated low-dose CT acquisition reconstructed by filtered back-projection
(``lowdose``) -- so every training pair ``(degraded, clean)`` is exact and free. A network (``conv_dae``, Gondara
2016; ``rednet10/20/30``, Mao et al. 2016) is trained on MSE and compared, in PSNR and SSIM on held-out phantoms,
with the classical answer to the same degradation: a median filter, bicubic interpolation, FBP itself.

Pretraining (``run_pretraining_experiment``): a convolutional denoising autoencoder learns from unlabeled lesion
images; its encoder with a new head is fine-tuned on a few labels per class and compared with the same classifier
trained from random weights on the same labels. ``run_stacked_ae_experiment`` is the historical version on digits:
a stacked autoencoder pretrained greedily layer by layer (then end to end) before the classifier is fine-tuned.

``trainsdk train --task denoise|superres|lowdose|anomaly|mean-teacher`` runs these experiments
(:func:`run_cli_task`); ``benchmarks/results_issue7.py`` runs all of them side by side.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...metrics import psnr, ssim
from ._checks import check_positive_ints

__all__ = ["RESTORE_TASKS", "degrade_pairs", "tile", "pair_step", "train_restorer", "restore", "restoration_metrics",
           "RestorationExperiment", "RestorationResult", "run_restoration_experiment", "EncoderClassifier",
           "PretrainExperiment", "PretrainResult", "run_pretraining_experiment", "StackedAEExperiment",
           "StackedAEResult", "run_stacked_ae_experiment", "CLI_TASKS", "run_cli_task"]

RESTORE_TASKS = ("denoise", "superres", "lowdose")


# --- pairs ----------------------------------------------------------------------------------------------------------
def degrade_pairs(task: str, clean: np.ndarray, *, seed: int = 0, sigma: float = 0.1, factor: int = 2,
                  dose_fraction: float = 0.05, angles: int = 180) -> np.ndarray:
    """The network's input for ``clean`` (N, 1, H, W) in [0, 1], same shape, deterministic for ``seed``.

    ``denoise``: ``clean + N(0, sigma^2)``. ``superres``: area down-sampling by ``factor``, then bicubic back to the
    full size (the network learns what interpolation cannot restore). ``lowdose``: Poisson noise on the sinogram at
    ``dose_fraction`` of the full dose, ``angles`` projections, FBP (``trainsdk.data.simulate_low_dose_ct``).
    """
    from ...data import degradations as D

    c = np.asarray(clean, dtype=np.float32)
    if c.ndim != 4:
        raise ValueError(f"clean must be (N, C, H, W), got shape {c.shape}")
    if task == "denoise":
        return D.gaussian_noise(c, sigma, seed=seed)
    if task == "superres":
        return D.upsample_bicubic(D.downsample(c, factor, method="area"), factor)
    if task == "lowdose":
        return D.simulate_low_dose_ct(c, dose_fraction, angles=angles, seed=seed)
    raise ValueError(f"task must be one of {RESTORE_TASKS}, got {task!r}")


def tile(images: Any, patch: int) -> np.ndarray:
    """(N, C, H, W) -> (N * (H // patch) * (W // patch), C, patch, patch): non-overlapping tiles, row by row.
    Training on tiles is as good for a fully convolutional network and several times cheaper per step."""
    a = np.asarray(images)
    n, c, h, w = a.shape
    if isinstance(patch, bool) or not isinstance(patch, int) or not 1 <= patch <= min(h, w):
        raise ValueError(f"patch must be an integer in 1..{min(h, w)}, got {patch!r}")
    gh, gw = h // patch, w // patch
    a = a[:, :, :gh * patch, :gw * patch].reshape(n, c, gh, patch, gw, patch)
    return np.ascontiguousarray(a.transpose(0, 2, 4, 1, 3, 5).reshape(n * gh * gw, c, patch, patch))


# --- training and evaluation ----------------------------------------------------------------------------------------
def pair_step(model: nn.Module, batch) -> torch.Tensor:
    """The Trainer step for ``(degraded, clean)`` batches: mean squared error of the restoration."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError("pair_step expects (degraded, clean) batches")
    x, y = batch
    return F.mse_loss(model(x).float(), y.float())


def start_from_input(model: nn.Module) -> bool:
    """Zero the last layer of a residual RED-Net, so training starts from ``output == input`` (the baseline the
    network must beat) instead of the input plus random noise; True when it applied."""
    last = getattr(model, f"deconv{getattr(model, 'n', 0)}", None)
    if not getattr(getattr(model, "config", None), "residual", False) or last is None:
        return False
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return True


def train_restorer(model: nn.Module, degraded: Any, clean: Any, *, trainer_config, val_data: Any = None,
                   callbacks=(), resume: Any = None):
    """Fit ``model`` to map ``degraded`` to ``clean`` (both (N, C, H, W)) on MSE with a cosine schedule; returns
    the Trainer after ``fit`` (checkpoints and exact resume under ``trainer_config.out_dir``)."""
    from ..trainer import Trainer
    from .anomaly import cosine_schedule

    x, y = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (degraded, clean))
    if x.shape != y.shape:
        raise ValueError(f"degraded {tuple(x.shape)} and clean {tuple(y.shape)} must have the same shape")
    trainer = Trainer(model, trainer_config, (x, y), val_data=val_data, step_fn=pair_step, callbacks=callbacks,
                      scheduler=cosine_schedule)
    trainer.fit(resume=resume)
    return trainer


def restore(model: nn.Module, images: Any, batch_size: int = 32) -> np.ndarray:
    """``model(images)`` in eval mode as a numpy array (N, C, H, W)."""
    from .anomaly import reconstruct

    return reconstruct(model, torch.as_tensor(np.asarray(images, dtype=np.float32)), batch_size).numpy()


def restoration_metrics(pred: Any, clean: Any, data_range: float = 1.0) -> dict[str, float]:
    """Mean over images of PSNR (dB) and SSIM, with a fixed ``data_range`` so images are comparable."""
    p, c = np.asarray(pred, dtype=np.float64), np.asarray(clean, dtype=np.float64)
    if p.shape != c.shape or p.ndim != 4:
        raise ValueError(f"pred and clean must both be (N, C, H, W), got {p.shape} and {c.shape}")
    return {"psnr": float(np.mean([psnr(a, b, data_range=data_range) for a, b in zip(p, c)])),
            "ssim": float(np.mean([ssim(a, b, data_range=data_range, spatial_dims=2) for a, b in zip(p, c)]))}


# --- restoration experiment -----------------------------------------------------------------------------------------
@dataclass
class RestorationExperiment:
    """One restoration task on 64x64 phantoms: ``model`` (a zoo name and its keyword arguments) trained on
    ``n_train`` phantoms (tiled into ``patch`` x ``patch`` tiles when ``patch`` is set) and tested on ``n_test``."""

    task: str = "denoise"
    model: str = "conv_dae"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": (32, 32)})
    n_train: int = 128
    n_test: int = 32
    size: int = 64
    patch: int | None = 32
    sigma: float = 0.1
    factor: int = 2
    dose_fraction: float = 0.05
    angles: int = 180
    median_sizes: tuple[int, ...] = (3, 5)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.task not in RESTORE_TASKS:
            raise ValueError(f"RestorationExperiment: task must be one of {RESTORE_TASKS}, got {self.task!r}")
        check_positive_ints(self, ("n_train", "n_test", "size", "epochs", "batch_size"))


@dataclass
class RestorationResult:
    """``rows``: method -> {"psnr", "ssim"} on the test phantoms, the degraded input and baselines first."""

    task: str
    model: str
    rows: dict[str, dict[str, float]]
    history: list[dict[str, Any]]

    @property
    def best_baseline(self) -> tuple[str, dict[str, float]]:
        """The classical method with the highest PSNR (the degraded input counts for super-resolution and
        low-dose CT, where it is the bicubic / FBP image)."""
        candidates = {k: v for k, v in self.rows.items() if k != self.model}
        name = max(candidates, key=lambda k: candidates[k]["psnr"])
        return name, candidates[name]


def _phantoms(n: int, size: int, seed: int) -> np.ndarray:
    from ...data import PhantomConfig, make_phantoms

    return make_phantoms(n, (size, size), seed=seed, config=PhantomConfig(noise="none")).images  # (N, 1, S, S)


def _baselines(exp: RestorationExperiment, degraded: np.ndarray) -> dict[str, np.ndarray]:
    from ...data.degradations import median_filter

    if exp.task == "denoise":
        return {"noisy input": degraded, **{f"median {k}x{k}": median_filter(degraded, k) for k in exp.median_sizes}}
    return {"bicubic" if exp.task == "superres" else "FBP": degraded}


def run_restoration_experiment(exp: RestorationExperiment | None = None, *,
                               out_dir: str | None = None) -> RestorationResult:
    """Train ``exp.model`` on ``exp.task`` and measure it and the baselines on the same test phantoms."""
    from ...models import create_model
    from ..config import TrainerConfig

    exp = exp or RestorationExperiment()
    kw = dict(sigma=exp.sigma, factor=exp.factor, dose_fraction=exp.dose_fraction, angles=exp.angles)
    clean_train, clean_test = _phantoms(exp.n_train, exp.size, exp.seed), _phantoms(exp.n_test, exp.size,
                                                                                       exp.seed + 10_000)
    x_train = degrade_pairs(exp.task, clean_train, seed=exp.seed, **kw)
    x_test = degrade_pairs(exp.task, clean_test, seed=exp.seed + 10_000, **kw)
    if exp.patch is not None:
        x_train, clean_train = tile(x_train, exp.patch), tile(clean_train, exp.patch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        model = create_model(exp.model, in_channels=1, **exp.model_kwargs)
    start_from_input(model)
    cfg = TrainerConfig(max_epochs=exp.epochs, batch_size=exp.batch_size, lr=exp.lr, seed=exp.seed,
                        device=exp.device, progress=False, log_every=0, out_dir=out_dir)
    trainer = train_restorer(model, x_train, clean_train, trainer_config=cfg)
    rows = {name: restoration_metrics(img, clean_test) for name, img in _baselines(exp, x_test).items()}
    rows[exp.model] = restoration_metrics(restore(model, x_test), clean_test)
    return RestorationResult(exp.task, exp.model, rows, trainer.history)


# --- pretraining experiments ---------------------------------------------------------------------------------------
class EncoderClassifier(nn.Module):
    """An autoencoder's encoder (``forward_features``: a map (N, C, h, w)) with global average and max pooling
    and a linear head: the average sees diffuse texture, the max a small bright or dark lesion anywhere."""

    def __init__(self, autoencoder: nn.Module, num_classes: int, channels: int) -> None:
        super().__init__()
        if not hasattr(autoencoder, "forward_features"):
            raise TypeError(f"EncoderClassifier needs a zoo autoencoder (forward_features), got "
                            f"{type(autoencoder).__name__}")
        self.autoencoder = autoencoder
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.autoencoder.forward_features(x)  # (N, C, h, w)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1))


@dataclass
class PretrainExperiment:
    """Lesion classification (cyst / metastasis / hemangioma, 64x64): a convolutional denoising autoencoder
    (``conv_dae`` with batch norm) learns from ``n_unlabeled_per_class`` x 3 images without labels; its encoder
    with a new head is fine-tuned on ``labels_per_class`` labels per class, vs the same network from random
    weights (same head, same labels, same schedule). Batch norm matters: without it the pretrained encoder's
    activations are badly scaled for a new head, and in our runs it fine-tuned worse than random weights."""

    labels_per_class: tuple[int, ...] = (3, 5, 10)
    n_unlabeled_per_class: int = 100
    n_test_per_class: int = 50
    size: int = 64
    ae_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": (16, 32, 32), "norm": "batch"})
    ae_epochs: int = 15
    noise_std: float = 0.05
    classifier_epochs: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        self.labels_per_class = tuple(self.labels_per_class)
        if not self.labels_per_class or any(isinstance(k, bool) or not isinstance(k, int) or not
                                            1 <= k <= self.n_unlabeled_per_class for k in self.labels_per_class):
            raise ValueError(f"PretrainExperiment: labels_per_class must be integers in 1..n_unlabeled_per_class "
                             f"({self.n_unlabeled_per_class}), got {self.labels_per_class!r}")
        check_positive_ints(self, ("n_unlabeled_per_class", "n_test_per_class", "ae_epochs", "classifier_epochs"))


@dataclass
class PretrainResult:
    """Test accuracy per number of labels per class: {"from scratch": ..., "AE-pretrained": ...}."""

    n_unlabeled: int
    n_test: int
    accuracy: dict[int, dict[str, float]]
    ae_final_loss: float


def _scarce(y: Any, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` indices of every class, drawn without replacement (sorted)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(y)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def run_pretraining_experiment(exp: PretrainExperiment | None = None) -> PretrainResult:
    """Scratch vs autoencoder-pretrained classifier at each ``exp.labels_per_class``."""
    from ...data import make_lesion_classification
    from ...models import create_model
    from ..config import TrainerConfig
    from ..simple import evaluate_classifier, fit_classifier
    from .anomaly import train_healthy_autoencoder

    exp = exp or PretrainExperiment()
    pool = make_lesion_classification(exp.n_unlabeled_per_class, exp.size, seed=exp.seed)
    test = make_lesion_classification(exp.n_test_per_class, exp.size, seed=exp.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        ae = create_model("conv_dae", in_channels=1, **exp.ae_kwargs)
        initial = copy.deepcopy(ae)
        head = nn.Linear(2 * ae.config.widths[-1], pool.num_classes).state_dict()
    cfg = TrainerConfig(max_epochs=exp.ae_epochs, batch_size=16, lr=2e-3, seed=exp.seed, device=exp.device,
                        progress=False, log_every=0)
    trainer = train_healthy_autoencoder(ae, pool.images, trainer_config=cfg, noise_std=exp.noise_std)  # no labels
    ae.cpu()
    x_test, y_test = torch.from_numpy(test.images), torch.from_numpy(test.labels)
    accuracy: dict[int, dict[str, float]] = {}
    for per in exp.labels_per_class:
        idx = _scarce(pool.labels, per, exp.seed)
        x, y = torch.from_numpy(pool.images[idx]), torch.from_numpy(pool.labels[idx])
        accuracy[per] = {}
        for name, encoder in (("from scratch", initial), ("AE-pretrained", ae)):
            clf = EncoderClassifier(copy.deepcopy(encoder), pool.num_classes, ae.config.widths[-1])
            clf.head.load_state_dict(head)
            fit_classifier(clf, x, y, epochs=exp.classifier_epochs, batch_size=32, lr=exp.lr, seed=exp.seed)
            accuracy[per][name] = evaluate_classifier(clf, x_test, y_test)
    return PretrainResult(len(pool), len(test), accuracy, float(trainer.history[-1]["train_loss"]))


@dataclass
class StackedAEExperiment:
    """Digits (32x32, the fixed split): a stacked autoencoder (``hidden_sizes``) pretrained greedily layer by
    layer (denoising, masking fraction ``noise``) and then end to end on every training image without labels;
    its encoder with a new head fine-tuned on ``labels_per_class`` labels per class vs the same classifier from
    random weights."""

    labels_per_class: int = 5
    hidden_sizes: tuple[int, ...] = (256, 64)
    greedy_epochs: int = 10
    finetune_ae_epochs: int = 10
    classifier_epochs: int = 60
    noise: float = 0.2
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_ints(self, ("labels_per_class", "greedy_epochs", "finetune_ae_epochs", "classifier_epochs"))
        self.hidden_sizes = tuple(self.hidden_sizes)


@dataclass
class StackedAEResult:
    """Test accuracy of each arm; ``layerwise``: reconstruction MSE of each greedy stage before and after."""

    n_labeled: int
    n_unlabeled: int
    accuracy: dict[str, float]
    layerwise: list[Any]
    ae_losses: list[float]


def run_stacked_ae_experiment(exp: StackedAEExperiment | None = None) -> StackedAEResult:
    """Scratch vs greedy layer-wise pretraining vs greedy + end-to-end autoencoder training, each then trained
    as a classifier on the same few labels with the same head, schedule and seed."""
    from ...data import load_digits
    from ...models import create_model
    from ...models.autoencoders import finetune_autoencoder, greedy_pretrain
    from ..simple import evaluate_classifier, fit_classifier

    exp = exp or StackedAEExperiment()
    digits = load_digits(32, seed=exp.seed)
    idx = _scarce(digits.y_train, exp.labels_per_class, exp.seed)
    x_l, y_l = digits.x_train[idx], digits.y_train[idx]
    common = dict(in_channels=1, image_size=(32, 32), hidden_sizes=exp.hidden_sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        ae = create_model("stacked_ae", out_activation="identity", **common)  # digits are standardized, not [0, 1]
        scratch = create_model("stacked_ae_classifier", num_classes=10, **common)
    logs = greedy_pretrain(ae, digits.x_train, epochs=exp.greedy_epochs, lr=exp.lr, noise=exp.noise, seed=exp.seed)
    greedy_only = ae.encoder_as_classifier(10)
    ae_losses = finetune_autoencoder(ae, digits.x_train, epochs=exp.finetune_ae_epochs, lr=exp.lr, seed=exp.seed)
    arms = {"from scratch": scratch, "greedy pretraining": greedy_only,
            "greedy + end-to-end AE": ae.encoder_as_classifier(10)}
    head = copy.deepcopy(scratch.head.state_dict())
    accuracy = {}
    for name, clf in arms.items():
        clf.head.load_state_dict(head)  # the same new head in every arm
        fit_classifier(clf, x_l, y_l, epochs=exp.classifier_epochs, batch_size=32, lr=exp.lr, seed=exp.seed)
        accuracy[name] = evaluate_classifier(clf, digits.x_test, digits.y_test)
    return StackedAEResult(len(idx), len(digits.x_train), accuracy, logs, ae_losses)


# --- command line ---------------------------------------------------------------------------------------------------
CLI_TASKS = {"denoise": "phantoms", "superres": "phantoms", "lowdose": "phantoms", "anomaly": "lesions",
             "mean-teacher": "phantoms"}


def _cli_experiment(args):
    """The experiment dataclass ``trainsdk train --task {CLI_TASKS}`` describes; ``--data-arg`` sets its fields."""
    from .anomaly import AnomalyExperiment
    from .mean_teacher import MeanTeacherExperiment

    if args.data != CLI_TASKS[args.task]:
        raise ValueError(f"--task {args.task} generates its own {CLI_TASKS[args.task]} data: pass --data "
                         f"{CLI_TASKS[args.task]} (got {args.data!r}); --data-arg KEY=VALUE sets the sizes")
    common = dict(lr=args.lr, seed=args.seed, device=args.device, **dict(args.data_arg))
    if args.batch_size is not None:
        common["batch_size"] = args.batch_size
    if args.task == "anomaly":
        kw = {"ae_kwargs": dict(args.model_arg)} if args.model_arg else {}
        return AnomalyExperiment(ae_model=args.model, ae_epochs=args.epochs, **kw, **common)
    if args.task == "mean-teacher":
        if args.model != "unet":
            raise ValueError(f"--task mean-teacher trains the zoo's 'unet' (--model-arg base_width=8 depth=3), got "
                             f"--model {args.model!r}")
        return MeanTeacherExperiment(epochs=args.epochs, **dict(args.model_arg), **common)
    kw = {"model_kwargs": dict(args.model_arg)} if args.model_arg else {}
    return RestorationExperiment(task=args.task, model=args.model, epochs=args.epochs, **kw, **common)


def run_cli_task(args) -> int:
    """``trainsdk train --task denoise|superres|lowdose|anomaly|mean-teacher``: run the experiment, print its
    comparison table (the same functions as the API and ``benchmarks/results_issue7.py``)."""
    from .anomaly import AnomalyExperiment, run_anomaly_experiment
    from .mean_teacher import MeanTeacherExperiment, run_mean_teacher_experiment

    exp = _cli_experiment(args)
    if isinstance(exp, AnomalyExperiment):
        lines = [f"{name:<34} {value:.4f}" for name, value in run_anomaly_experiment(exp).rows()]
    elif isinstance(exp, MeanTeacherExperiment):
        r = run_mean_teacher_experiment(exp, out_dir=args.out, progress=not args.quiet)
        lines = [f"{r.labeled} labeled / {r.unlabeled} unlabeled images; pooled test Dice (mean, per class)"]
        lines += [f"{row[0]:<24} " + "  ".join(f"{v:.4f}" for v in row[1:]) for row in r.rows()]
    else:
        r = run_restoration_experiment(exp, out_dir=args.out)
        lines = [f"{name:<16} PSNR {m['psnr']:7.2f} dB   SSIM {m['ssim']:.4f}" for name, m in r.rows.items()]
        if args.out:
            lines.append(f"checkpoint: {os.path.join(args.out, 'last.pt')}")
    print("\n".join(lines))
    return 0
