"""The games ``GANTrainer`` plays, one class per kind of batch: the discriminator's and the generator's loss for a
batch, a check that the two models and the data fit together, and what the sample grids show.

Randomness (codes, fake labels, the gradient penalty's interpolation) comes from the trainer's ``noise``
generator only, which it reseeds every epoch; that is what makes a resumed run repeat an uninterrupted one.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


from .config import GANConfig
from .losses import auxiliary_class_loss, gradient_difference_loss, gradient_penalty, minimax_d_loss, \
    minimax_g_loss, nonsaturating_g_loss, wgan_critic_loss, wgan_generator_loss

__all__ = ["GANStep", "UnconditionalStep", "ACGANStep", "PairedStep", "make_step", "latent_codes"]

_G_LOSSES = {"minimax": minimax_g_loss, "nonsaturating": nonsaturating_g_loss, "wgan_gp": wgan_generator_loss}


def latent_codes(G: nn.Module, n: int, noise: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` generator inputs: ``G.make_input(G.sample_latent(...), labels)`` for the zoo's latent generators,
    else standard normal codes shaped like ``G.example_input()``."""
    if hasattr(G, "sample_latent") and hasattr(G, "make_input"):
        return G.make_input(G.sample_latent(n, generator=noise, device=noise.device), labels)
    if labels is not None:
        raise TypeError(f"{type(G).__name__} cannot take class labels: AC-GAN needs a generator with "
                        f"sample_latent/make_input (create_model('acgan_generator'))")
    if not hasattr(G, "example_input"):
        raise TypeError(f"{type(G).__name__} has neither sample_latent nor example_input: the trainer cannot "
                        f"tell what codes it takes")
    return torch.randn((n, *G.example_input().shape[1:]), generator=noise, device=noise.device)


def _one_score_each(D_out: torch.Tensor, who: str) -> None:
    if D_out.dim() > 2 or (D_out.dim() == 2 and D_out.shape[1] != 1):
        raise ValueError(f"{who} must give one logit/score per image, (N, 1); got shape {tuple(D_out.shape)} "
                         f"(build it with num_classes=1)")


class GANStep:
    """Base: the adversarial terms shared by every game."""

    def __init__(self, config: GANConfig, perceptual: nn.Module | None = None):
        self.cfg, self.kind = config, config.adversarial_loss
        self.perceptual = perceptual

    def d_adversarial(self, critic, real: torch.Tensor, fake: torch.Tensor,
                      noise: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r, f = critic(real), critic(fake)
        if self.kind == "wgan_gp":
            gp = gradient_penalty(critic, real, fake, generator=noise)
            return wgan_critic_loss(r, f) + self.cfg.gp_weight * gp, {"wasserstein": r.mean() - f.mean(), "gp": gp}
        loss = minimax_d_loss(r, f, label_smoothing=self.cfg.label_smoothing)
        return loss, {"d_real": torch.sigmoid(r).mean(), "d_fake": torch.sigmoid(f).mean()}

    def g_adversarial(self, scores: torch.Tensor) -> torch.Tensor:
        return _G_LOSSES[self.kind](scores)

    def check_critic(self, D: nn.Module) -> None:
        """The gradient penalty differentiates the critic twice (fused bias-act layers support that)."""
        if self.kind != "wgan_gp":
            return
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()):
            warnings.warn("the critic has batch norm, which couples the samples of a batch; the gradient penalty "
                          "assumes they are independent (Gulrajani et al. use no norm or layer norm)", stacklevel=4)

    # overridden
    def unpack(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def d_loss(self, G, D, batch, noise) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def g_loss(self, G, D, batch, noise) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def check(self, G, D, sample: tuple[torch.Tensor, torch.Tensor | None], noise: torch.Generator) -> None:
        """Raise a clear error when G, D and the data do not fit (models in eval mode, no gradients)."""

    def fixed_inputs(self, G, dataset, n: int, noise: torch.Generator) -> Any:
        raise NotImplementedError

    def grid(self, G, fixed) -> tuple[torch.Tensor, int]:
        """(images (M, C, H, W), images per row) for the sample grid."""
        raise NotImplementedError


class UnconditionalStep(GANStep):
    """"minimax", "nonsaturating", "wgan_gp": G maps codes to images; D sees images."""

    def unpack(self, batch):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        return real, None

    def d_loss(self, G, D, batch, noise):
        real, _ = self.unpack(batch)
        with torch.no_grad():
            fake = G(latent_codes(G, real.shape[0], noise))
        return self.d_adversarial(D, real, fake, noise)

    def g_loss(self, G, D, batch, noise):
        real, _ = self.unpack(batch)
        fake = G(latent_codes(G, real.shape[0], noise))
        return self.g_adversarial(D(fake)), {}

    def check(self, G, D, sample, noise):
        real = sample[0]
        fake = G(latent_codes(G, 2, noise))
        if fake.shape[1:] != real.shape[1:]:
            raise ValueError(f"the generator makes images of shape {tuple(fake.shape[1:])} but the data holds "
                             f"{tuple(real.shape[1:])}")
        _one_score_each(D(fake), "the discriminator")

    def fixed_inputs(self, G, dataset, n, noise):
        return latent_codes(G, n, noise)

    def grid(self, G, fixed):
        return G(fixed), int(math.ceil(math.sqrt(fixed.shape[0])))


class ACGANStep(GANStep):
    """"acgan": batches (images, labels); D has a real/fake and a class head (``discriminate``)."""

    def unpack(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("step='acgan' needs (images, labels) batches")
        return batch[0], batch[1]

    def _fake_labels(self, D, n, noise):
        return torch.randint(0, D.num_classes, (n,), generator=noise, device=noise.device)

    def d_loss(self, G, D, batch, noise):
        real, labels = self.unpack(batch)
        fake_labels = self._fake_labels(D, real.shape[0], noise).to(real.device)
        with torch.no_grad():
            fake = G(latent_codes(G, real.shape[0], noise, fake_labels))
        src_r, cls_r = D.discriminate(real)
        src_f, cls_f = D.discriminate(fake)
        adv = minimax_d_loss(src_r, src_f, label_smoothing=self.cfg.label_smoothing)
        aux = auxiliary_class_loss(cls_r, labels) + auxiliary_class_loss(cls_f, fake_labels)
        return adv + self.cfg.aux_weight * aux, {
            "d_real": torch.sigmoid(src_r).mean(), "d_fake": torch.sigmoid(src_f).mean(), "d_aux": aux,
            "class_acc_real": (cls_r.argmax(1) == labels).float().mean()}

    def g_loss(self, G, D, batch, noise):
        real, _ = self.unpack(batch)
        labels = self._fake_labels(D, real.shape[0], noise).to(real.device)
        src, cls = D.discriminate(G(latent_codes(G, real.shape[0], noise, labels)))
        aux = auxiliary_class_loss(cls, labels)
        return self.g_adversarial(src) + self.cfg.aux_weight * aux, {
            "g_aux": aux, "class_acc_fake": (cls.argmax(1) == labels).float().mean()}

    def check(self, G, D, sample, noise):
        if not hasattr(D, "discriminate"):
            raise TypeError(f"step='acgan' needs a discriminator with real/fake and class heads "
                            f"(create_model('acgan_discriminator')), got {type(D).__name__}")
        k = getattr(G, "num_labels", None)
        if k != D.num_classes:
            raise ValueError(f"the generator is conditioned on {k} classes (num_labels) but the discriminator "
                             f"classifies {D.num_classes} (num_classes): make them equal")
        real, label = sample
        if label is None or label.is_floating_point() or not 0 <= int(label.reshape(-1)[0]) < k:
            raise ValueError(f"step='acgan' needs integer labels in [0, {k}), got {label!r}")
        fake = G(latent_codes(G, 2, noise, torch.arange(2, device=noise.device) % k))
        if fake.shape[1:] != real.shape[1:]:
            raise ValueError(f"the generator makes images of shape {tuple(fake.shape[1:])} but the data holds "
                             f"{tuple(real.shape[1:])}")
        _one_score_each(D.discriminate(fake).source, "the discriminator's real/fake head")

    def fixed_inputs(self, G, dataset, n, noise):
        per_class = max(1, math.ceil(n / G.num_labels))
        labels = torch.arange(G.num_labels, device=noise.device).repeat_interleave(per_class)
        return latent_codes(G, labels.shape[0], noise, labels), per_class

    def grid(self, G, fixed):
        codes, per_class = fixed
        return G(codes), per_class  # one row per class


class PairedStep(GANStep):
    """"paired": batches (source, target); G maps source to target."""

    def unpack(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("step='paired' needs (source, target) batches")
        return batch[1], batch[0]  # (real target, source)

    def _critic(self, D, source):
        if self.cfg.condition_discriminator:
            return lambda img: D(torch.cat([source, img], dim=1))  # pix2pix: D judges (source, image) pairs
        return D

    def d_loss(self, G, D, batch, noise):
        target, source = self.unpack(batch)
        with torch.no_grad():
            fake = G(source)
        return self.d_adversarial(self._critic(D, source), target, fake, noise)

    def g_loss(self, G, D, batch, noise):
        target, source = self.unpack(batch)
        fake = G(source)
        adv = self.g_adversarial(self._critic(D, source)(fake))
        loss, metrics = self.cfg.adv_weight * adv, {"g_adv": adv}
        if self.cfg.pixel_loss is not None and self.cfg.pixel_weight > 0:
            pixel = F.mse_loss(fake, target) if self.cfg.pixel_loss == "l2" else F.l1_loss(fake, target)
            loss, metrics["pixel"] = loss + self.cfg.pixel_weight * pixel, pixel
        if self.cfg.gdl_weight > 0:
            gdl = gradient_difference_loss(fake, target)
            loss, metrics["gdl"] = loss + self.cfg.gdl_weight * gdl, gdl
        if self.cfg.perceptual_weight > 0:
            perc = self.perceptual(fake, target)
            loss, metrics["perceptual"] = loss + self.cfg.perceptual_weight * perc, perc
        return loss, metrics

    def check(self, G, D, sample, noise):
        target, source = sample
        fake = G(torch.cat([source, source]))
        if fake.shape[1:] != target.shape[1:]:
            raise ValueError(f"the generator maps sources of shape {tuple(source.shape[1:])} to "
                             f"{tuple(fake.shape[1:])}, but the targets are {tuple(target.shape[1:])}")
        _one_score_each(self._critic(D, torch.cat([source, source]))(fake), "the discriminator")

    def fixed_inputs(self, G, dataset, n, noise):
        items = [dataset[i] for i in range(min(n, len(dataset)))]
        return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])

    def grid(self, G, fixed):
        source, target = (t.to(next(G.parameters()).device) for t in fixed)
        fake = G(source)
        rows = [torch.stack([source[i, :1], fake[i, :1], target[i, :1]]) for i in range(source.shape[0])]
        return torch.cat(rows), 3  # each row: source | generated | target (first channel of each)


def make_step(config: GANConfig, perceptual: nn.Module | None = None) -> GANStep:
    if config.perceptual_weight > 0 and config.step != "paired":
        raise ValueError("perceptual_weight applies to step='paired' only")
    if config.perceptual_weight > 0 and perceptual is None:
        raise ValueError("perceptual_weight > 0 needs a perceptual_loss (e.g. trainsdk.gan.PerceptualLoss)")
    cls = {"acgan": ACGANStep, "paired": PairedStep}.get(config.step, UnconditionalStep)
    return cls(config, perceptual)
