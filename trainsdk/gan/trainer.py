"""``GANTrainer``: the two-player training loop, resumable like the SDK's ``Trainer``.

    G, D = create_model("dcgan_generator", image_size=32), create_model("dcgan_discriminator", image_size=32)
    trainer = train_gan(G, D, images, GANConfig(step="nonsaturating", max_epochs=20, out_dir="runs/dcgan"))
    trainer = train_gan(G, D, images, config, resume="auto")   # continues from runs/dcgan/last.pt

Per batch the discriminator takes one step (``opt_d``, ``lr_d``); every ``n_critic``-th batch the generator takes
one (``opt_g``, ``lr_g``) with the discriminator's parameters frozen, then its EMA copy is updated. Epoch records
(mean losses and the step's diagnostics) go to ``history`` and ``out_dir/metrics.jsonl``; sample grids to
``out_dir/samples/epoch_NNNN.png``; the full state to ``out_dir/last.pt``.

Reproducibility: ``fit`` seeds torch, numpy and ``random`` (global generators) with ``config.seed`` unless it
resumes, in which case it restores the generators saved with the checkpoint; each epoch's sample order and the
noise of the game (codes, fake labels, gradient-penalty mixing) come from generators reseeded from ``(seed,
epoch)``. A run resumed from a checkpoint therefore continues exactly: 2 + 2 epochs give the weights of 4.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import time
import warnings
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from deploysdk._atomic import atomic_path
from trainsdk.training.checkpoint import CheckpointError, capture_rng_state, restore_rng_state
from trainsdk.training.steps import as_dataset, to_device

from .config import RESUME_SENSITIVE, GANConfig
from .images import save_image_grid
from .steps import make_step

__all__ = ["GANTrainer", "train_gan", "load_gan_state", "NonFiniteGANLossError", "GAN_STATE_FORMAT"]

GAN_STATE_FORMAT = "trainsdk.gan_state/1"


class NonFiniteGANLossError(FloatingPointError):
    """A loss became NaN or infinite; training stopped before that update touched the weights."""

    def __init__(self, player: str, loss: float, epoch: int, batch_idx: int, checkpoint: str | None) -> None:
        self.player, self.loss, self.epoch, self.batch_idx, self.checkpoint = player, loss, epoch, batch_idx, checkpoint
        kept = f"the last good checkpoint {checkpoint} is kept" if checkpoint else "no checkpoint was written"
        super().__init__(f"the {player} loss is {loss} at epoch {epoch}, batch {batch_idx}; training stopped before "
                         f"this update ({kept}). Lower lr_g/lr_d, add label smoothing or spectral norm, or use "
                         f"step='wgan_gp'.")


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0])


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"GANConfig: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"GANConfig: device {name!r} asked for, but CUDA is not available here")
    return device


@contextlib.contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _batch_of_one(item: Any) -> Any:
    if isinstance(item, (tuple, list)):
        return [torch.as_tensor(t).unsqueeze(0) for t in item]
    return torch.as_tensor(item).unsqueeze(0)


def _entry(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return {"model_name": getattr(model, "model_name", None),
            "config": config.to_dict() if hasattr(config, "to_dict") else None, "state_dict": model.state_dict()}


def load_gan_state(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``GANTrainer`` checkpoint with ``torch.load(weights_only=True)``: no pickled code runs."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"GAN training state not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"could not read {path} with torch.load(weights_only=True): "
                              f"{str(e).strip().splitlines()[0][:300]}") from e
    if not isinstance(state, dict) or state.get("format") != GAN_STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a GAN training state: format {got!r}, expected {GAN_STATE_FORMAT!r}")
    return state


class GANTrainer:
    """Trains ``generator`` against ``discriminator`` on ``data`` with ``config`` (see ``GANConfig`` for the games).

    ``data``: a tensor of images, a tuple of tensors ((images,), (images, labels) or (source, target)) or a
    map-style Dataset giving such items. ``perceptual_loss``: a module ``(pred, target) -> loss`` for
    ``perceptual_weight`` (e.g. ``PerceptualLoss``). Models, data and the game are checked against each other here,
    before any training, with an error naming what does not fit.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data: Any, config: GANConfig | None = None,
                 *, perceptual_loss: nn.Module | None = None) -> None:
        for name, m in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
        self.config = GANConfig() if config is None else config
        if not isinstance(self.config, GANConfig):
            raise TypeError(f"config must be a GANConfig, got {type(self.config).__name__}")
        cfg = self.config
        self.device = _device(cfg.device)
        self.G, self.D = generator.to(self.device), discriminator.to(self.device)
        if perceptual_loss is not None:
            perceptual_loss.to(self.device)
        self.step = make_step(cfg, perceptual_loss)
        self.dataset = as_dataset((data,) if isinstance(data, torch.Tensor) else data, "data")
        self._loader_gen = torch.Generator()
        self.noise = torch.Generator(device=self.device)
        self.loader = DataLoader(self.dataset, batch_size=cfg.batch_size, shuffle=True, generator=self._loader_gen,
                                 drop_last=cfg.drop_last)
        if len(self.loader) == 0:
            raise ValueError(f"data gives no batch per epoch: {len(self.dataset)} samples, batch_size="
                             f"{cfg.batch_size}, drop_last=True")
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.ema = None
        if cfg.ema_decay is not None:
            self.ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.epoch = self.d_steps = self.g_steps = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: str | None = None
        self._check_models()
        fixed_gen = torch.Generator(device=self.device).manual_seed(_epoch_seed(cfg.seed, 0, 2))
        self._fixed = self.step.fixed_inputs(self.G, self.dataset, cfg.num_samples, fixed_gen)

    def _check_models(self) -> None:
        sample = self.step.unpack(to_device(_batch_of_one(self.dataset[0]), self.device))
        probe = torch.Generator(device=self.device).manual_seed(0)
        self.step.check_critic(self.D)
        with _eval_mode(self.G, self.D), torch.no_grad():
            self.step.check(self.G, self.D, sample, probe)

    @property
    def sample_generator(self) -> nn.Module:
        """The generator to sample and deploy: the EMA copy when ``ema_decay`` is set, else G."""
        return self.ema if self.ema is not None else self.G

    # --- fit ----------------------------------------------------------------------------------------------------------
    def fit(self, resume: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """Train up to ``config.max_epochs``; returns the epoch records. ``resume``: None (fresh), "auto"
        (``out_dir/last.pt`` when it exists) or a checkpoint path."""
        cfg = self.config
        if not self._resume(resume):
            torch.manual_seed(cfg.seed)
            np.random.seed(cfg.seed % 2**32)
            random.seed(cfg.seed)
        for epoch in range(self.epoch + 1, cfg.max_epochs + 1):
            start = time.perf_counter()
            self._loader_gen.manual_seed(_epoch_seed(cfg.seed, epoch, 0))
            self.noise.manual_seed(_epoch_seed(cfg.seed, epoch, 1))
            record = {"epoch": epoch, **self._train_epoch(epoch)}
            record["time_s"] = time.perf_counter() - start
            self.epoch = epoch
            self.history.append(record)
            self._epoch_outputs(epoch)
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.G.train()
        self.D.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for batch_idx, batch in enumerate(self.loader):
            batch = to_device(batch, self.device)
            d_loss, metrics = self.step.d_loss(self.G, self.D, batch, self.noise)
            self._update(self.opt_d, d_loss, "discriminator", epoch, batch_idx)
            self.d_steps += 1
            metrics = {"d_loss": d_loss, **metrics}
            if self.d_steps % self.config.n_critic == 0:
                g_loss, g_metrics = self._generator_loss(batch)
                self._update(self.opt_g, g_loss, "generator", epoch, batch_idx)
                self.g_steps += 1
                self._update_ema()
                metrics.update(g_loss=g_loss, **g_metrics)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
                counts[k] = counts.get(k, 0) + 1
        return {"d_steps": self.d_steps, "g_steps": self.g_steps, **{k: sums[k] / counts[k] for k in sums}}

    def _generator_loss(self, batch: Any):
        """G's loss with D's parameters frozen: no gradients are computed (or left behind) for D."""
        flags = [p.requires_grad for p in self.D.parameters()]
        self.D.requires_grad_(False)
        try:
            return self.step.g_loss(self.G, self.D, batch, self.noise)
        finally:
            for p, flag in zip(self.D.parameters(), flags):
                p.requires_grad_(flag)

    def _update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, player: str, epoch: int,
                batch_idx: int) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteGANLossError(player, value, epoch, batch_idx, self.last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        for pe, p in zip(self.ema.parameters(), self.G.parameters()):
            pe.lerp_(p, 1.0 - self.config.ema_decay)  # pe = decay * pe + (1 - decay) * p
        for be, b in zip(self.ema.buffers(), self.G.buffers()):
            be.copy_(b)  # batch-norm statistics follow G

    # --- outputs ------------------------------------------------------------------------------------------------------
    def _epoch_outputs(self, epoch: int) -> None:
        cfg = self.config
        if cfg.out_dir is None:
            return
        self._write_metrics()
        last = epoch == cfg.max_epochs
        if cfg.sample_every and (epoch % cfg.sample_every == 0 or last):
            self.save_samples(os.path.join(cfg.out_dir, "samples", f"epoch_{epoch:04d}.png"))
        if epoch % cfg.checkpoint_every == 0 or last:
            path = os.path.join(cfg.out_dir, "last.pt")
            self.save_checkpoint(path)
            self.last_checkpoint = path

    def _write_metrics(self) -> None:
        text = "".join(json.dumps({"kind": "epoch", **r}) + "\n" for r in self.history)
        with atomic_path(os.path.join(self.config.out_dir, "metrics.jsonl"), suffix=".jsonl") as tmp, \
                open(tmp, "w") as f:
            f.write(text)

    @torch.no_grad()
    def save_samples(self, path: str | os.PathLike) -> str:
        """A PNG grid from the fixed codes (or the first sources) of this run: rows comparable across epochs."""
        G = self.sample_generator
        with _eval_mode(G):
            images, nrow = self.step.grid(G, self._fixed)
        save_image_grid(images, path, nrow, value_range=self.config.value_range)
        return os.fspath(path)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Both models, both optimizers, the EMA copy, counters, history, RNG states and the config, written
        atomically. ``model_name``/``config``/``state_dict`` at the top describe the deployable generator (the EMA
        copy when kept), so ``deploysdk export last.pt g.onnx`` exports it."""
        deploy = _entry(self.sample_generator)
        state = {"format": GAN_STATE_FORMAT, "state_dict": deploy["state_dict"],
                 **({"model_name": deploy["model_name"], "config": deploy["config"]} if deploy["model_name"] else {}),
                 "generator": _entry(self.G), "discriminator": _entry(self.D),
                 "ema": None if self.ema is None else self.ema.state_dict(),
                 "optimizer_g": self.opt_g.state_dict(), "optimizer_d": self.opt_d.state_dict(),
                 "epoch": self.epoch, "d_steps": self.d_steps, "g_steps": self.g_steps, "history": self.history,
                 "rng": capture_rng_state(), "gan_config": self.config.to_dict()}
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(state, tmp)

    # --- resume -------------------------------------------------------------------------------------------------------
    def _resume(self, resume: str | os.PathLike | None) -> bool:
        if resume is None:
            return False
        if isinstance(resume, str) and resume == "auto":
            if self.config.out_dir is None:
                raise ValueError("fit(resume='auto') needs config.out_dir (where last.pt is looked for)")
            path = os.path.join(self.config.out_dir, "last.pt")
            if not os.path.isfile(path):
                return False
        else:
            path = os.fspath(resume)
        state = load_gan_state(path)
        self._warn_config_changes(path, state.get("gan_config") or {})
        self.G.load_state_dict(state["generator"]["state_dict"])
        self.D.load_state_dict(state["discriminator"]["state_dict"])
        if (state.get("ema") is None) != (self.ema is None):
            warnings.warn(f"resuming {path}: the checkpoint {'has no' if state.get('ema') is None else 'has an'} EMA "
                          f"generator but this run {'keeps' if self.ema is not None else 'keeps none'}; "
                          f"{'starting it from G' if self.ema is not None else 'ignoring it'}")
            if self.ema is not None:
                self.ema.load_state_dict(self.G.state_dict())
        elif self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.epoch, self.d_steps, self.g_steps = int(state["epoch"]), int(state["d_steps"]), int(state["g_steps"])
        self.history = list(state.get("history") or [])
        restore_rng_state(state["rng"])
        self.last_checkpoint = path
        return True

    def _warn_config_changes(self, path: str, saved: dict) -> None:
        now = self.config.to_dict()
        changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in RESUME_SENSITIVE
                   if k in saved and _norm(saved[k]) != _norm(now[k])]
        if changed:
            warnings.warn(f"resuming {path} with a different setup: {'; '.join(changed)}; the run will not match an "
                          f"uninterrupted one", stacklevel=3)


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def train_gan(generator: nn.Module, discriminator: nn.Module, data: Any, config: GANConfig | None = None, *,
              step: str | None = None, resume: str | os.PathLike | None = None,
              perceptual_loss: nn.Module | None = None) -> GANTrainer:
    """Build a ``GANTrainer`` (``step`` overrides ``config.step``), run ``fit(resume)``, return the trainer."""
    config = GANConfig() if config is None else config
    if step is not None:
        if not isinstance(config, GANConfig):
            raise TypeError(f"config must be a GANConfig, got {type(config).__name__}")
        config = dataclasses.replace(config, step=step)
    trainer = GANTrainer(generator, discriminator, data, config, perceptual_loss=perceptual_loss)
    trainer.fit(resume=resume)
    return trainer
