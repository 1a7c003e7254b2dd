"""Context-aware GAN for cross-modality synthesis (Nie et al. 2017), MR -> CT on paired synthetic slices.

    result = train_context_gan(ContextGANRecipe(out_dir="runs/context-gan"))
    print(result.table(["mae_hu", "psnr", "ssim"]))

Data: ``trainsdk.data.make_paired_modalities`` (MR-like source, CT-like target of one anatomy; bone dark in MR and
bright in CT, fat the other way round), a training set and a test set from separate seeds.

Arms, every one trained for ``epochs`` with the same batches, generator learning rate and Adam settings:

- ``"l2"``: the fully convolutional context generator (``context_gan_generator``) with an L2 loss alone, trained
  by the SDK's ``Trainer`` -- the baseline;
- ``"gan+gdl+cascade"``: Nie et al.'s recipe -- an auto-context cascade of ``stages`` such generators (stage k
  reads the MR and stage k-1's estimate; ``context_gan_cascade``) trained by ``GANTrainer`` (``step="paired"``)
  on ``adv_weight`` x adversarial + ``pixel_weight`` x ``pixel_loss`` + ``gdl_weight`` x image-gradient-difference
  loss against a DCGAN discriminator;
- with ``ablation=True`` also ``"l2+cascade"`` (the cascade, L2 alone) and ``"gan+gdl"`` (one stage, the GAN
  losses), to tell the cascade's share from the losses'.

With ``ema_decay`` every arm is evaluated with the exponential moving average of its weights (``GANTrainer``'s
EMA generator; a ``Trainer`` callback for the baselines): at a constant learning rate the adversarial updates
keep the last weights oscillating, and averaging them is a standard GAN stability aid -- applied to the
baselines too, so the comparison stays like for like. The averaged weights get batch-norm statistics recomputed
on the training sources (SWA's ``update_bn``): the live model's statistics do not fit them.

Test metrics per arm: MAE (on the [0, 1] target scale and in HU), PSNR (data range 1, i.e. 2000 HU), SSIM and the
high-frequency ratios of ``trainsdk.gan.quality``. A grid (MR | each arm | CT) of test slices goes to
``out_dir/context_test.png``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ...data.paired import PairedConfig, make_paired_modalities
from ..config import GANConfig
from ..images import save_image_grid
from ..quality import image_quality
from ..trainer import train_gan
from ._common import GANRecipeResult, Stopwatch, check_choice, check_int, check_number, fit_pixel_baseline, \
    predict, refresh_batch_norm, seeded_model, subdir

__all__ = ["ContextGANRecipe", "train_context_gan", "CONTEXT_ARMS"]

# arm -> (cascade?, trained adversarially?)
CONTEXT_ARMS = {"l2": (False, False), "gan+gdl+cascade": (True, True), "l2+cascade": (True, False),
                "gan+gdl": (False, True)}


@dataclass
class ContextGANRecipe:
    """Sizes, generator/discriminator settings and loss weights (see the module docstring)."""

    n_train: int = 96
    n_test: int = 32
    size: int = 64
    width: int = 16
    levels: int = 2
    stages: int = 2
    norm: str | None = "batch"
    epochs: int = 100
    batch_size: int = 8
    lr: float = 3e-3
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adversarial: str = "nonsaturating"
    adv_weight: float = 0.002  # the discriminator's loss is O(1-10): a light touch next to L1 ~0.02
    pixel_loss: str = "l1"
    pixel_weight: float = 1.0
    gdl_weight: float = 0.1  # 1.0 (Nie et al.'s) slowed the L1 fit here: 41 vs 26 HU training MAE
    label_smoothing: float = 0.0
    ema_decay: float | None = 0.99  # every arm: the averaged weights are evaluated
    spectral_norm: bool = False  # the discriminator's (it then has no batch norm)
    disc_width: int = 16
    condition_discriminator: bool = False
    ablation: bool = False
    data_config: dict[str, Any] = field(default_factory=dict)  # PairedConfig fields
    seed: int = 0
    device: str = "auto"
    out_dir: str | None = None
    resume: str | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, low in (("n_train", 2), ("n_test", 1), ("width", 1), ("levels", 1), ("stages", 2), ("epochs", 1),
                          ("batch_size", 1), ("disc_width", 1), ("seed", 0)):
            check_int(owner, name, getattr(self, name), low)
        check_choice(owner, "size", self.size, (32, 64, 128))  # the DCGAN discriminator's sizes
        if self.size % 2 ** self.levels:
            raise ValueError(f"{owner}: size {self.size} must be a multiple of 2**levels = {2 ** self.levels}")
        for name in ("lr", "lr_d"):
            check_number(owner, name, getattr(self, name), 0.0, open_low=True)
        for name in ("adv_weight", "pixel_weight", "gdl_weight"):
            check_number(owner, name, getattr(self, name), 0.0)
        if self.ema_decay is not None:
            check_number(owner, "ema_decay", self.ema_decay, 0.0, 0.999999, open_low=True)
        check_number(owner, "label_smoothing", self.label_smoothing, 0.0, 0.49)
        check_choice(owner, "adversarial", self.adversarial, ("minimax", "nonsaturating", "wgan_gp"))
        check_choice(owner, "pixel_loss", self.pixel_loss, ("l1", "l2"))
        check_choice(owner, "norm", self.norm, (None, "batch", "instance"))
        if self.batch_size > self.n_train:
            raise ValueError(f"{owner}: batch_size {self.batch_size} exceeds n_train {self.n_train}")
        PairedConfig(**self.data_config).validate()  # unknown fields and bad ranges fail here, before any work

    @property
    def arms(self) -> list[str]:
        return list(CONTEXT_ARMS) if self.ablation else ["l2", "gan+gdl+cascade"]


def _generator(cfg: ContextGANRecipe, cascade: bool):
    kwargs = dict(width=cfg.width, levels=cfg.levels, norm=cfg.norm)
    if cascade:
        return seeded_model("context_gan_cascade", cfg.seed, stages=cfg.stages, **kwargs)
    return seeded_model("context_gan_generator", cfg.seed, **kwargs)


def _train_adversarial(cfg: ContextGANRecipe, G, source, target, out_dir):
    D = seeded_model("dcgan_discriminator", cfg.seed + 1, image_size=cfg.size, width=cfg.disc_width,
                     in_channels=2 if cfg.condition_discriminator else 1,
                     norm=None if cfg.adversarial == "wgan_gp" or cfg.spectral_norm else "batch",
                     spectral_norm=cfg.spectral_norm)
    gan_cfg = GANConfig(step="paired", adversarial=cfg.adversarial, max_epochs=cfg.epochs, batch_size=cfg.batch_size,
                        lr_g=cfg.lr, lr_d=cfg.lr_d, betas=cfg.betas, label_smoothing=cfg.label_smoothing,
                        adv_weight=cfg.adv_weight, pixel_loss=cfg.pixel_loss, pixel_weight=cfg.pixel_weight,
                        gdl_weight=cfg.gdl_weight, condition_discriminator=cfg.condition_discriminator,
                        ema_decay=cfg.ema_decay, seed=cfg.seed, device=cfg.device, out_dir=out_dir, num_samples=4,
                        sample_every=max(1, cfg.epochs // 5), value_range=(0.0, 1.0))
    trainer = train_gan(G, D, (source, target), gan_cfg, resume=cfg.resume)
    if trainer.ema is None:
        return trainer.G, trainer.history
    return refresh_batch_norm(trainer.ema, source, cfg.batch_size), trainer.history  # averaged weights


def _metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    q = image_quality(pred, target, data_range=1.0)
    return {"mae_hu": 2000.0 * q["mae"], **q}


def train_context_gan(cfg: ContextGANRecipe) -> GANRecipeResult:
    """Run the cross-modality experiment (module docstring); arms in ``cfg.arms`` order, the L2 baseline first."""
    if not isinstance(cfg, ContextGANRecipe):
        raise TypeError(f"train_context_gan takes a ContextGANRecipe, got {type(cfg).__name__}")
    clock = Stopwatch()
    data_cfg = PairedConfig(**cfg.data_config)
    train = make_paired_modalities(cfg.n_train, cfg.size, seed=cfg.seed, config=data_cfg)
    test = make_paired_modalities(cfg.n_test, cfg.size, seed=cfg.seed + 10_000, config=data_cfg)
    source, target = torch.from_numpy(train.source), torch.from_numpy(train.target)
    test_source, test_target = torch.from_numpy(test.source), torch.from_numpy(test.target)
    metrics, models, histories, preds = {}, {}, {}, {}
    for arm in cfg.arms:
        cascade, adversarial = CONTEXT_ARMS[arm]
        G = _generator(cfg, cascade)
        out_dir = subdir(cfg.out_dir, arm.replace("+", "_"))
        if adversarial:
            G, histories[arm] = _train_adversarial(cfg, G, source, target, out_dir)
        else:
            G, histories[arm] = fit_pixel_baseline(G, source, target, loss="l2", epochs=cfg.epochs,
                                                   batch_size=cfg.batch_size, lr=cfg.lr, betas=cfg.betas,
                                                   seed=cfg.seed, device=cfg.device, out_dir=out_dir,
                                                   resume=cfg.resume, ema_decay=cfg.ema_decay)
        preds[arm] = predict(G, test_source)
        metrics[arm], models[arm] = _metrics(preds[arm], test_target), G
    files = {}
    if cfg.out_dir is not None:
        files["grid_test"] = _save_grid(cfg.out_dir, test_source, preds, test_target)
    details = {"num_train": len(train), "num_test": len(test), "arms": cfg.arms,
               "test_tissue_mae_hu": {arm: _tissue_mae(p, test) for arm, p in preds.items()}}
    return GANRecipeResult("context-gan", metrics, models, histories, details, files, clock())


def _tissue_mae(pred: torch.Tensor, test) -> dict[str, float]:
    """MAE in HU per tissue: where the error sits (bone and air are what MR cannot show by intensity)."""
    err = (pred[:, 0].numpy() - test.target[:, 0]).__abs__() * 2000.0
    return {name: float(err[test.tissues == k].mean()) for k, name in enumerate(test.tissue_names)
            if (test.tissues == k).any()}


def _save_grid(out_dir: str, source, preds: dict[str, torch.Tensor], target, rows: int = 6) -> str:
    cols = [source[:rows].clamp(0, 1)] + [p[:rows] for p in preds.values()] + [target[:rows]]
    images = torch.stack(cols, 1).flatten(0, 1)  # (rows * cols, 1, H, W): each row MR | arms... | CT
    path = os.path.join(out_dir, "context_test.png")
    save_image_grid(images, path, nrow=len(cols), value_range=(0.0, 1.0))
    return path
