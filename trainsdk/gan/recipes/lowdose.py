"""WGAN-GP with a perceptual loss for low-dose CT denoising (Yang et al. 2018, "WGAN-VGG"), on simulated scans.

    result = train_wgan_ct(WGANCTRecipe(out_dir="runs/wgan-ct"))
    print(result.table(["psnr", "ssim", "hf_ratio"]))
    export_denoiser(result.models["wgan+perceptual"], "denoiser.onnx")   # runs in deploysdk.Runtime

Data: clean phantoms (``make_phantoms``, no noise) are the normal-dose truth; ``simulate_low_dose_ct`` gives their
low-dose filtered back-projection (Poisson photon counts at ``dose_fraction`` of ``photons``, ``angles``
projections) -- the network's input. Training and test phantoms come from separate seeds.

Arms:

- ``"fbp"``: the low-dose reconstruction itself (no network);
- ``"mse"``: Yang et al.'s 8-layer generator (``wgan_ct_generator``) trained on MSE alone (``Trainer``);
- ``"wgan+perceptual"``: the same generator trained by ``GANTrainer`` against a WGAN critic with gradient penalty
  (``n_critic`` critic updates per generator update) plus ``perceptual_weight`` x the perceptual loss (and
  ``pixel_weight`` x MSE, 0 in WGAN-VGG). It runs ``epochs * n_critic`` epochs, so both generators take the same
  number of updates.

The perceptual loss compares feature maps of a frozen zoo model (``perceptual_model``, layers
``perceptual_layers``). Nothing is downloaded: by default a small convolutional denoising autoencoder is trained
here on the clean training phantoms (``train_perceptual_extractor``; saved to ``out_dir/perceptual_extractor.pt``);
``perceptual_weights`` loads a user's state_dict file for ``perceptual_model`` instead (e.g. a VGG trained
elsewhere with ``perceptual_layers=["features.35"]``).

Test metrics: PSNR and SSIM (data range 1), MAE, and the high-frequency ratios of ``trainsdk.gan.quality``
(Laplacian energy and FFT top band of the output over the truth's: below 1 is over-smoothed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from deploysdk._atomic import atomic_path

from ...data import PhantomConfig, make_phantoms, simulate_low_dose_ct
from ..config import GANConfig
from ..images import save_image_grid
from ..perceptual import PerceptualLoss
from ..quality import image_quality
from ..trainer import train_gan
from ._common import GANRecipeResult, Stopwatch, check_int, check_number, fit_pixel_baseline, predict, \
    refresh_batch_norm, seeded_model, subdir

__all__ = ["WGANCTRecipe", "train_wgan_ct", "make_low_dose_pairs", "train_perceptual_extractor", "export_denoiser"]


@dataclass
class WGANCTRecipe:
    """Sizes, acquisition, networks and loss weights (see the module docstring)."""

    n_train: int = 96
    n_test: int = 32
    size: int = 64
    dose_fraction: float = 0.1
    photons: float = 3e4
    angles: int = 90
    width: int = 32
    depth: int = 8
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    lr_d: float = 1e-3  # with 1e-4 the critic barely leaves its N(0, 0.02) start in this short a run
    betas: tuple[float, float] = (0.5, 0.9)  # Gulrajani et al.'s Adam settings for WGAN-GP
    n_critic: int = 2
    gp_weight: float = 10.0
    adv_weight: float = 1e-3
    perceptual_weight: float = 5.0  # 1.0 lets the adversarial term leave striped artefacts here
    pixel_weight: float = 0.0
    ema_decay: float | None = None  # moving average of the weights, every arm alike (None: off)
    critic_width: int = 16
    critic_depth: int = 3
    perceptual_model: str = "conv_dae"
    perceptual_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": (16, 32)})
    perceptual_layers: tuple[str, ...] = ("encoder.conv1", "encoder.conv2")
    perceptual_weights: str | None = None
    perceptual_epochs: int = 10
    seed: int = 0
    device: str = "auto"
    out_dir: str | None = None
    resume: str | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, low in (("n_train", 2), ("n_test", 1), ("size", 32), ("angles", 1), ("width", 1), ("depth", 2),
                          ("epochs", 1), ("batch_size", 1), ("n_critic", 1), ("critic_width", 1),
                          ("critic_depth", 1), ("perceptual_epochs", 1), ("seed", 0)):
            check_int(owner, name, getattr(self, name), low)
        check_number(owner, "dose_fraction", self.dose_fraction, 0.0, 1.0, open_low=True)
        check_number(owner, "photons", self.photons, 0.0, open_low=True)
        for name in ("lr", "lr_d"):
            check_number(owner, name, getattr(self, name), 0.0, open_low=True)
        for name in ("gp_weight", "adv_weight", "perceptual_weight", "pixel_weight"):
            check_number(owner, name, getattr(self, name), 0.0)
        if self.ema_decay is not None:
            check_number(owner, "ema_decay", self.ema_decay, 0.0, 0.999999, open_low=True)
        if self.size < 2 ** (self.critic_depth + 1):
            raise ValueError(f"{owner}: size {self.size} is below the critic's minimum 2**(critic_depth + 1) = "
                             f"{2 ** (self.critic_depth + 1)}")
        if isinstance(self.perceptual_layers, str) or not self.perceptual_layers:
            raise ValueError(f"{owner}: perceptual_layers must be a non-empty list of module names, got "
                             f"{self.perceptual_layers!r}")
        self.perceptual_layers = tuple(self.perceptual_layers)
        if self.perceptual_weights is not None and not os.path.isfile(self.perceptual_weights):
            raise ValueError(f"{owner}: perceptual_weights file not found: {self.perceptual_weights}")
        if self.batch_size > self.n_train:
            raise ValueError(f"{owner}: batch_size {self.batch_size} exceeds n_train {self.n_train}")


# --- data --------------------------------------------------------------------------------------------------------
def make_low_dose_pairs(n: int, size: int, *, seed: int, dose_fraction: float = 0.1, photons: float = 3e4,
                        angles: int = 90) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-dose FBP, clean truth), each (n, 1, size, size) float32: clean phantoms and their simulated low-dose
    reconstructions (Poisson noise drawn from ``seed``)."""
    clean = make_phantoms(n, (size, size), seed=seed, config=PhantomConfig(noise="none")).images  # (n, 1, S, S)
    low = simulate_low_dose_ct(clean[:, 0], dose_fraction, photons=photons, angles=angles, seed=seed)
    return torch.from_numpy(low[:, None].astype("float32")), torch.from_numpy(clean)


# --- perceptual feature extractor --------------------------------------------------------------------------------
def train_perceptual_extractor(images: torch.Tensor, *, model: str = "conv_dae",
                               model_kwargs: dict[str, Any] | None = None, epochs: int = 10, noise: float = 0.1,
                               seed: int = 0, path: str | os.PathLike | None = None) -> nn.Module:
    """A zoo autoencoder (``model``) trained in the SDK as a denoising autoencoder on ``images`` (N, 1, H, W):
    its encoder's feature maps then describe edges and texture of these images, for ``PerceptualLoss``. ``path``:
    where to save its state_dict (atomically), for ``WGANCTRecipe(perceptual_weights=path)`` next time."""
    from ...models.autoencoders import finetune_autoencoder

    net = seeded_model(model, seed, **{"in_channels": images.shape[1], **dict(model_kwargs or {})})
    finetune_autoencoder(net, images, epochs=epochs, lr=1e-3, batch_size=16, noise=noise, noise_kind="gaussian",
                         seed=seed)
    if path is not None:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(net.state_dict(), tmp)
    return net.eval()


def _perceptual_loss(cfg: WGANCTRecipe, clean: torch.Tensor) -> tuple[PerceptualLoss, str | None]:
    kwargs = {"in_channels": 1, **dict(cfg.perceptual_kwargs)}
    if cfg.perceptual_weights is not None:
        loss = PerceptualLoss(cfg.perceptual_model, list(cfg.perceptual_layers), weights=cfg.perceptual_weights,
                              model_kwargs=kwargs)
        return loss, None  # the user's file: nothing written
    path = None if cfg.out_dir is None else os.path.join(cfg.out_dir, "perceptual_extractor.pt")
    net = train_perceptual_extractor(clean, model=cfg.perceptual_model, model_kwargs=kwargs,
                                     epochs=cfg.perceptual_epochs, seed=cfg.seed, path=path)
    return PerceptualLoss(net, list(cfg.perceptual_layers)), path


# --- training ----------------------------------------------------------------------------------------------------
def _train_wgan(cfg: WGANCTRecipe, low: torch.Tensor, clean: torch.Tensor, perceptual: PerceptualLoss):
    G = seeded_model("wgan_ct_generator", cfg.seed, width=cfg.width, depth=cfg.depth)
    C = seeded_model("wgan_critic", cfg.seed + 1, width=cfg.critic_width, depth=cfg.critic_depth)
    gan_cfg = GANConfig(step="paired", adversarial="wgan_gp", max_epochs=cfg.epochs * cfg.n_critic,
                        batch_size=cfg.batch_size, lr_g=cfg.lr, lr_d=cfg.lr_d, betas=cfg.betas, n_critic=cfg.n_critic,
                        gp_weight=cfg.gp_weight, adv_weight=cfg.adv_weight,
                        pixel_loss="l2" if cfg.pixel_weight > 0 else None, pixel_weight=cfg.pixel_weight,
                        perceptual_weight=cfg.perceptual_weight, ema_decay=cfg.ema_decay, seed=cfg.seed,
                        device=cfg.device,
                        out_dir=subdir(cfg.out_dir, "wgan"), num_samples=4,
                        sample_every=max(1, cfg.epochs * cfg.n_critic // 5), value_range=(0.0, 1.0))
    trainer = train_gan(G, C, (low, clean), gan_cfg, resume=cfg.resume, perceptual_loss=perceptual)
    if trainer.ema is None:
        return trainer.G, trainer.history
    return refresh_batch_norm(trainer.ema, low, cfg.batch_size), trainer.history  # averaged weights


def train_wgan_ct(cfg: WGANCTRecipe) -> GANRecipeResult:
    """Run the low-dose CT experiment (module docstring): FBP, MSE and WGAN + perceptual arms on one test set."""
    if not isinstance(cfg, WGANCTRecipe):
        raise TypeError(f"train_wgan_ct takes a WGANCTRecipe, got {type(cfg).__name__}")
    clock = Stopwatch()
    acq = dict(dose_fraction=cfg.dose_fraction, photons=cfg.photons, angles=cfg.angles)
    low, clean = make_low_dose_pairs(cfg.n_train, cfg.size, seed=cfg.seed, **acq)
    test_low, test_clean = make_low_dose_pairs(cfg.n_test, cfg.size, seed=cfg.seed + 10_000, **acq)
    perceptual, extractor_path = _perceptual_loss(cfg, clean)
    mse = seeded_model("wgan_ct_generator", cfg.seed, width=cfg.width, depth=cfg.depth)
    mse, history = fit_pixel_baseline(mse, low, clean, loss="l2", epochs=cfg.epochs, batch_size=cfg.batch_size,
                                      lr=cfg.lr, betas=cfg.betas, seed=cfg.seed, device=cfg.device,
                                      out_dir=subdir(cfg.out_dir, "mse"), resume=cfg.resume, ema_decay=cfg.ema_decay)
    histories = {"mse": history}
    wgan, histories["wgan+perceptual"] = _train_wgan(cfg, low, clean, perceptual)
    preds = {"fbp": test_low, "mse": predict(mse, test_low), "wgan+perceptual": predict(wgan, test_low)}
    metrics = {arm: image_quality(p, test_clean, data_range=1.0) for arm, p in preds.items()}
    files = {}
    if cfg.out_dir is not None:
        files["grid_test"] = _save_grid(cfg.out_dir, preds, test_clean)
    if extractor_path is not None:
        files["perceptual_extractor"] = extractor_path
    updates = {"mse": cfg.epochs * (cfg.n_train // cfg.batch_size),  # drop_last: full batches only
               "wgan+perceptual": histories["wgan+perceptual"][-1]["g_steps"]}
    details = {"num_train": cfg.n_train, "num_test": cfg.n_test, "generator_updates": updates, "acquisition": acq,
               "perceptual_extractor": cfg.perceptual_weights or f"{cfg.perceptual_model} trained here (DAE)"}
    return GANRecipeResult("wgan-ct", metrics, {"mse": mse, "wgan+perceptual": wgan}, histories, details, files,
                           clock())


def _save_grid(out_dir: str, preds: dict[str, torch.Tensor], truth: torch.Tensor, rows: int = 6) -> str:
    cols = [p[:rows] for p in preds.values()] + [truth[:rows]]
    images = torch.stack(cols, 1).flatten(0, 1)  # each row: FBP | MSE | WGAN | truth
    path = os.path.join(out_dir, "wgan_ct_test.png")
    save_image_grid(images, path, nrow=len(cols), value_range=(0.0, 1.0))
    return path


# --- deployment --------------------------------------------------------------------------------------------------
def export_denoiser(model: nn.Module, path: str | os.PathLike, *, size: int = 64, **export_kwargs: Any):
    """Export a trained denoiser (any fully convolutional image-to-image generator) with
    ``deploysdk.export.export_onnx``: dynamic batch and spatial size, verified against ONNX Runtime on a
    (2, C, ``size``, ``size``) example before the file appears. Returns the ``ExportReport``."""
    from deploysdk.export import export_onnx

    model = model.cpu().eval()
    example = torch.rand((2, model.in_channels, size, size), generator=torch.Generator().manual_seed(0))
    return export_onnx(model, path, example_input=example, **export_kwargs)
