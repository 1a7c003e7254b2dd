"""GAN-based data augmentation (Frid-Adar et al. 2018) with a class-conditional AC-GAN (Odena et al. 2017).

    result = train_gan_augmentation(GANAugmentRecipe(n_per_class=30, out_dir="runs/gan-augment"))
    print(result.table())   # "classic" vs "classic+acgan": accuracy, sensitivity, specificity (macro, per class)

1. A small training set of synthetic lesions (cyst / metastasis / hemangioma, ``n_per_class`` each) and a
   separate, larger test set (another seed).
2. An AC-GAN learns the three lesion types from the training set alone (images scaled to the generator's tanh
   range [-1, 1]); ``GANTrainer`` writes its checkpoints and per-epoch sample grids (one row per class).
   With ``gan_dihedral`` the AC-GAN sees the 8 rotations/mirror images of every training image (Frid-Adar et
   al. also train their GANs on classically augmented lesions): 90 images are too few for the discriminator.
3. ``synthetic_per_class`` lesions per type are sampled. With ``filter_synthetic`` the AC-GAN's own class head
   vets them: of ``oversample`` times as many draws, those it assigns to the intended class with the highest
   confidence are kept (a generator that drifts to another type's look would otherwise inject label noise).
4. The same classifier is trained with classic augmentation (random rotation, flips, shift, zoom: Frid-Adar's
   "classic" set; lesions have no orientation) on the real images alone and on real + synthetic images, with the
   same number of optimizer steps (the smaller set gets proportionally more epochs), for each of ``seeds``; test
   metrics are averaged over the seeds (per-seed values in ``details``).

Reported per arm: accuracy, sensitivity and specificity (one-vs-rest, macro and per class), AUROC. GAN diagnostics
in ``details``: the share of synthetic images the real-only classifier assigns to their intended class, the
filter's acceptance rate and the per-class diversity score (mode collapse flag).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...data import LESION_CLASSES, ArrayDataset, make_lesion_classification
from ...metrics import sensitivity, specificity
from ..config import GANConfig
from ..evaluation import diversity_score
from ..images import save_image_grid
from ..trainer import train_gan
from ._common import GANRecipeResult, Stopwatch, check_choice, check_int, check_number, predict, seeded_model, subdir

__all__ = ["GANAugmentRecipe", "train_gan_augmentation", "sample_acgan", "dihedral"]

LESION_AUGMENT: dict[str, Any] = {"rotation_deg": 180.0, "flip_axes": (0, 1), "translation": 0.05, "scale": 0.1}
ARMS = ("classic", "classic+acgan")


@dataclass
class GANAugmentRecipe:
    """Sizes, the AC-GAN's and the classifier's settings (see the module docstring for the protocol)."""

    n_per_class: int = 30
    n_test_per_class: int = 100
    size: int = 32
    synthetic_per_class: int = 100
    filter_synthetic: bool = True
    oversample: int = 3
    gan_epochs: int = 40  # of the 8x dihedral set: 1,800 steps at batch 16
    gan_dihedral: bool = True
    gan_batch_size: int = 16
    latent_dim: int = 32
    gan_width: int = 32
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    label_smoothing: float = 0.1
    spectral_norm: bool = False
    ema_decay: float | None = 0.99
    classifier: str = "lenet5_modern"
    classifier_kwargs: dict[str, Any] = field(default_factory=dict)
    classifier_epochs: int = 30
    classifier_batch_size: int = 32
    classifier_lr: float = 2e-3
    augment: Any = field(default_factory=lambda: dict(LESION_AUGMENT))
    seeds: tuple[int, ...] = (0,)
    seed: int = 0
    device: str = "auto"
    out_dir: str | None = None
    resume: str | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, low in (("n_per_class", 2), ("n_test_per_class", 1), ("synthetic_per_class", 1), ("oversample", 1),
                          ("gan_epochs", 1), ("gan_batch_size", 1), ("latent_dim", 1), ("gan_width", 1),
                          ("classifier_epochs", 1), ("classifier_batch_size", 1), ("seed", 0)):
            check_int(owner, name, getattr(self, name), low)
        check_choice(owner, "size", self.size, (16, 32, 64, 128))
        for name in ("lr_g", "lr_d", "classifier_lr"):
            check_number(owner, name, getattr(self, name), 0.0, open_low=True)
        check_number(owner, "label_smoothing", self.label_smoothing, 0.0, 0.49)
        if isinstance(self.seeds, int) or not self.seeds:
            raise ValueError(f"{owner}: seeds must be a non-empty sequence of classifier seeds, got {self.seeds!r}")
        self.seeds = tuple(self.seeds)
        for s in self.seeds:
            check_int(owner, "seeds entry", s, 0)
        if self.gan_batch_size > 3 * self.n_per_class:
            raise ValueError(f"{owner}: gan_batch_size {self.gan_batch_size} exceeds the {3 * self.n_per_class} "
                             f"training images (no full batch per epoch)")


# --- data and sampling -------------------------------------------------------------------------------------------
def _lesion_data(cfg: GANAugmentRecipe):
    train = make_lesion_classification(cfg.n_per_class, cfg.size, seed=cfg.seed)
    test = make_lesion_classification(cfg.n_test_per_class, cfg.size, seed=cfg.seed + 10_000)  # disjoint stream
    return (torch.from_numpy(train.images), torch.from_numpy(train.labels),
            torch.from_numpy(test.images), torch.from_numpy(test.labels))


@torch.no_grad()
def sample_acgan(generator, discriminator, per_class: int, *, seed: int = 0, oversample: int = 1,
                 batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``per_class`` images per class from an AC-GAN generator (tanh output mapped back to [0, 1]) and their
    labels. ``oversample`` > 1 draws that many times more and keeps, per class, the images the discriminator's
    class head gives the highest probability of the intended class, those it classifies correctly first.
    Returns (images (K * per_class, 1, H, W), labels, acceptance: the share of draws classified as intended)."""
    k = generator.num_labels
    noise = torch.Generator().manual_seed(seed)
    draws = per_class * oversample
    labels = torch.arange(k).repeat_interleave(draws)  # (K * draws,)
    codes = generator.make_input(generator.sample_latent(len(labels), generator=noise), labels)
    fake = predict(generator, codes, batch_size)  # (K * draws, 1, H, W) in [-1, 1]
    probs = predict(_ClassHead(discriminator), fake, batch_size).softmax(1)  # (K * draws, K)
    hit = probs.argmax(1) == labels
    keep = []
    for c in range(k):
        idx = torch.nonzero(labels == c).flatten()
        score = probs[idx, c] + hit[idx].float()  # correctly classified first, then by confidence
        keep.append(idx[score.argsort(descending=True)[:per_class]])
    keep = torch.cat(keep)
    images = ((fake[keep] + 1.0) / 2.0).clamp(0.0, 1.0)
    return images, labels[keep], float(hit.float().mean())


class _ClassHead(torch.nn.Module):
    """AC-GAN discriminator's class logits (``discriminate(x).classes``) as a module, for ``predict``."""

    def __init__(self, discriminator) -> None:
        super().__init__()
        self.d = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d.discriminate(x).classes


# --- training ----------------------------------------------------------------------------------------------------
def dihedral(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 rotations by 90 degrees and mirror images of every image (N, C, H, W) -> (8N, C, H, W), labels
    repeated: exact (no interpolation), and label-preserving for lesions, which have no orientation."""
    views = [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
    return torch.cat(views), y.repeat(8)


def _train_acgan(cfg: GANAugmentRecipe, x: torch.Tensor, y: torch.Tensor):
    if cfg.gan_dihedral:
        x, y = dihedral(x, y)
    G = seeded_model("acgan_generator", cfg.seed, image_size=cfg.size, latent_dim=cfg.latent_dim,
                     width=cfg.gan_width, num_labels=len(LESION_CLASSES))
    D = seeded_model("acgan_discriminator", cfg.seed + 1, image_size=cfg.size, width=cfg.gan_width,
                     num_classes=len(LESION_CLASSES), spectral_norm=cfg.spectral_norm)
    gan_cfg = GANConfig(step="acgan", max_epochs=cfg.gan_epochs, batch_size=cfg.gan_batch_size, lr_g=cfg.lr_g,
                        lr_d=cfg.lr_d, label_smoothing=cfg.label_smoothing, ema_decay=cfg.ema_decay, seed=cfg.seed,
                        device=cfg.device, out_dir=subdir(cfg.out_dir, "acgan"),
                        sample_every=max(1, cfg.gan_epochs // 10), num_samples=8 * len(LESION_CLASSES),
                        value_range=(-1.0, 1.0))
    return train_gan(G, D, (x * 2.0 - 1.0, y), gan_cfg, resume=cfg.resume)


def _classifier_metrics(model, x: torch.Tensor, y: torch.Tensor, aggregate: dict[str, float]) -> dict[str, float]:
    pred = predict(model, x).argmax(1).numpy()
    k = len(LESION_CLASSES)
    out = {name: float(aggregate[name]) for name in ("accuracy", "sensitivity", "specificity", "auroc")}
    for name, fn in (("sensitivity", sensitivity), ("specificity", specificity)):
        for c, value in enumerate(fn(y.numpy(), pred, num_classes=k, average=None)):
            out[f"{name}/{LESION_CLASSES[c]}"] = float(value)
    return out


def _train_classifier(cfg: GANAugmentRecipe, x, y, x_test, y_test, epochs: int, seed: int, out_dir: str | None):
    from ...training.recipes import ClassifyRecipe, train_classifier

    recipe = ClassifyRecipe(model=cfg.classifier, model_kwargs=dict(cfg.classifier_kwargs),
                            data=ArrayDataset(x, y), test_data=ArrayDataset(x_test, y_test), epochs=epochs,
                            batch_size=cfg.classifier_batch_size, lr=cfg.classifier_lr, augment=cfg.augment,
                            seed=seed, device=cfg.device, out_dir=out_dir, progress=False)
    result = train_classifier(recipe)
    return result.model, _classifier_metrics(result.model, x_test, y_test, result.test_metrics)


def _mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmean([m[k] for m in per_seed])) for k in per_seed[0]}


def _diagnostics(baseline, synth_x, synth_y, x, y, acceptance: float) -> dict[str, Any]:
    agree = float((predict(baseline, synth_x).argmax(1) == synth_y).float().mean())
    diversity = {}
    for c, name in enumerate(LESION_CLASSES):
        report = diversity_score(synth_x[synth_y == c], x[y == c])
        diversity[name] = {"score": report.score, "mode_collapse": report.mode_collapse}
    return {"synthetic_agreement": agree, "filter_acceptance": acceptance, "diversity": diversity}


def _save_grids(cfg: GANAugmentRecipe, x, y, synth_x, synth_y) -> dict[str, str]:
    if cfg.out_dir is None:
        return {}
    files = {}
    for tag, images, labels in (("real", x, y), ("synthetic", synth_x, synth_y)):
        rows = [images[labels == c][:8] for c in range(len(LESION_CLASSES))]  # one row per class
        path = os.path.join(cfg.out_dir, f"lesions_{tag}.png")
        save_image_grid(torch.cat(rows), path, nrow=min(8, min(len(r) for r in rows)), value_range=(0.0, 1.0))
        files[f"grid_{tag}"] = path
    return files


def train_gan_augmentation(cfg: GANAugmentRecipe) -> GANRecipeResult:
    """Run the GAN-augmentation experiment (module docstring) and return both arms' test metrics."""
    if not isinstance(cfg, GANAugmentRecipe):
        raise TypeError(f"train_gan_augmentation takes a GANAugmentRecipe, got {type(cfg).__name__}")
    clock = Stopwatch()
    x, y, x_test, y_test = _lesion_data(cfg)
    trainer = _train_acgan(cfg, x, y)
    synth_x, synth_y, acceptance = sample_acgan(trainer.sample_generator, trainer.D, cfg.synthetic_per_class,
                                                seed=cfg.seed, oversample=cfg.oversample if cfg.filter_synthetic
                                                else 1)
    aug_x, aug_y = torch.cat([x, synth_x]), torch.cat([y, synth_y])
    steps = math.ceil(len(aug_x) / cfg.classifier_batch_size)  # per epoch of the augmented set
    real_epochs = max(1, round(cfg.classifier_epochs * steps / math.ceil(len(x) / cfg.classifier_batch_size)))
    per_seed: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    models = {}
    for seed in cfg.seeds:
        for arm, (xs, ys, epochs) in zip(ARMS, ((x, y, real_epochs), (aug_x, aug_y, cfg.classifier_epochs))):
            model, metrics = _train_classifier(cfg, xs, ys, x_test, y_test, epochs, seed,
                                               subdir(cfg.out_dir, f"classifier-{arm}-seed{seed}"))
            per_seed[arm].append(metrics)
            models.setdefault(arm, model)
    details = {"per_seed": per_seed, "num_real": len(x), "num_synthetic": len(synth_x), "num_test": len(x_test),
               "epochs": {ARMS[0]: real_epochs, ARMS[1]: cfg.classifier_epochs}, "seeds": list(cfg.seeds),
               **_diagnostics(models[ARMS[0]], synth_x, synth_y, x, y, acceptance)}
    return GANRecipeResult("gan-augment", {arm: _mean_over_seeds(per_seed[arm]) for arm in ARMS},
                           {**models, "acgan_generator": trainer.sample_generator},
                           {"acgan": trainer.history}, details, _save_grids(cfg, x, y, synth_x, synth_y), clock())
