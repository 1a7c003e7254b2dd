"""``GANConfig``: everything that decides a two-player run, validated on construction, saved in every checkpoint."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["GANConfig", "STEPS", "ADVERSARIAL_LOSSES"]

STEPS = ("minimax", "nonsaturating", "wgan_gp", "acgan", "paired")
ADVERSARIAL_LOSSES = ("minimax", "nonsaturating", "wgan_gp")
# fields whose change makes a resumed run differ from an uninterrupted one
RESUME_SENSITIVE = ("step", "adversarial", "batch_size", "lr_g", "lr_d", "betas", "n_critic", "gp_weight",
                    "label_smoothing", "aux_weight", "adv_weight", "pixel_loss", "pixel_weight", "gdl_weight",
                    "perceptual_weight", "condition_discriminator", "ema_decay", "seed", "drop_last")


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"GANConfig: {name} must be an integer >= {low}, got {value!r}")


def _number(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value < high
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        raise ValueError(f"GANConfig: {name} must be a finite number {bound}"
                         f"{'' if high == math.inf else f' and < {high}'}, got {value!r}")


@dataclass
class GANConfig:
    """A GAN run. ``step``:

    - "minimax" (the lecture's game: D ascends log D(x) + log(1 - D(G(z))), G descends log(1 - D(G(z)))),
      "nonsaturating" (G descends -log D(G(z))), "wgan_gp" (critic + gradient penalty, ``gp_weight``): an
      unconditional generator fed latent codes; batches are images (labels, if any, are ignored);
    - "acgan": batches are (images, labels); D's class head is trained on real and generated images
      (``aux_weight``), G on its own labels;
    - "paired": batches are (source, target) pairs (MR -> CT, low-dose -> normal-dose); G's loss is
      ``adv_weight`` x adversarial + ``pixel_weight`` x L2/L1 + ``gdl_weight`` x gradient difference +
      ``perceptual_weight`` x the trainer's perceptual loss; ``condition_discriminator`` shows D (source, image)
      pairs as pix2pix does, instead of images alone (Nie et al., Yang et al.).

    ``adversarial``: the adversarial loss of "acgan" (minimax/nonsaturating) and "paired" (any); default
    non-saturating. ``lr_g``/``lr_d``: separate learning rates (TTUR, Heusel et al. 2017) for Adam with ``betas``.
    ``n_critic``: D updates per G update (5 for WGAN-GP). ``label_smoothing``: one-sided, real targets 1 - s.
    ``ema_decay``: keep an exponential moving average of G's weights (sampled, exported); None: off.
    ``sample_every``: epochs between PNG sample grids (0: never); ``value_range``: intensities mapped to black and
    white in them (None: each grid's min..max). ``out_dir=None`` writes nothing.
    """

    step: str = "nonsaturating"
    adversarial: str | None = None
    max_epochs: int = 10
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # DCGAN's Adam settings
    n_critic: int = 1
    gp_weight: float = 10.0
    label_smoothing: float = 0.0
    aux_weight: float = 1.0
    adv_weight: float = 1.0
    pixel_loss: str | None = "l2"
    pixel_weight: float = 1.0
    gdl_weight: float = 0.0
    perceptual_weight: float = 0.0
    condition_discriminator: bool = False
    ema_decay: float | None = None
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    out_dir: str | None = None
    sample_every: int = 1
    num_samples: int = 16
    value_range: tuple[float, float] | None = None
    checkpoint_every: int = 1
    drop_last: bool = True

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"GANConfig: step must be one of {list(STEPS)}, got {self.step!r}")
        self._check_adversarial()
        for name, low in (("max_epochs", 1), ("batch_size", 1), ("n_critic", 1), ("seed", 0), ("sample_every", 0),
                          ("num_samples", 1), ("checkpoint_every", 1)):
            _int(name, getattr(self, name), low)
        for name in ("lr_g", "lr_d"):
            _number(name, getattr(self, name), 0.0, open_low=True)
        for name in ("gp_weight", "aux_weight", "adv_weight", "pixel_weight", "gdl_weight", "perceptual_weight"):
            _number(name, getattr(self, name), 0.0)
        _number("label_smoothing", self.label_smoothing, 0.0, 0.5)
        if self.ema_decay is not None:
            _number("ema_decay", self.ema_decay, 0.0, 1.0, open_low=True)
        b = self.betas
        if not (isinstance(b, (tuple, list)) and len(b) == 2 and all(isinstance(v, (int, float)) and 0 <= v < 1
                                                                      for v in b)):
            raise ValueError(f"GANConfig: betas must be two numbers in [0, 1), got {b!r}")
        self.betas = (float(b[0]), float(b[1]))
        if self.pixel_loss not in (None, "l2", "l1"):
            raise ValueError(f"GANConfig: pixel_loss must be 'l2', 'l1' or None, got {self.pixel_loss!r}")
        for name in ("condition_discriminator", "drop_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GANConfig: {name} must be True or False, got {getattr(self, name)!r}")
        if self.value_range is not None:
            lo, hi = self.value_range
            if not hi > lo:
                raise ValueError(f"GANConfig: value_range must be (low, high) with high > low, got {self.value_range}")
            self.value_range = (float(lo), float(hi))
        if not isinstance(self.device, str):
            raise ValueError(f"GANConfig: device must be a string such as 'cpu', 'cuda' or 'auto', got {self.device!r}")

    def _check_adversarial(self) -> None:
        adv = self.adversarial
        if adv is not None and adv not in ADVERSARIAL_LOSSES:
            raise ValueError(f"GANConfig: adversarial must be one of {list(ADVERSARIAL_LOSSES)} or None, got {adv!r}")
        if self.step in ADVERSARIAL_LOSSES and adv not in (None, self.step):
            raise ValueError(f"GANConfig: step={self.step!r} is itself the adversarial loss; adversarial="
                             f"{adv!r} contradicts it (leave it None)")
        if self.step == "acgan" and adv == "wgan_gp":
            raise ValueError("GANConfig: step='acgan' uses the discriminator's real/fake logit with a minimax or "
                             "non-saturating loss; adversarial='wgan_gp' is not supported for it")

    @property
    def adversarial_loss(self) -> str:
        """The adversarial loss in use: the step itself, or ``adversarial`` (default "nonsaturating")."""
        if self.step in ADVERSARIAL_LOSSES:
            return self.step
        return self.adversarial or "nonsaturating"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
