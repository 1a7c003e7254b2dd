"""Intensity augmentation: noise, gamma, Gaussian blur, bias field, brightness/contrast (2D and 3D batches).

Each transform draws its parameters per sample (uniformly in the configured range, gamma log-uniformly), applies
them with probability ``p`` per sample, and never touches the mask: ``t(image, mask)`` returns the very same mask
object, since intensity changes move no anatomy. Values are in the image's own units, so the ranges (and the
clinical profiles' limits) assume normalized intensities (about [0, 1] or z-scored).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ._base import Transform, as_ranges, check_batch, check_probability, gate, uniform

__all__ = ["GaussianNoise", "RandomGamma", "GaussianBlur", "BiasField", "BrightnessContrast", "gaussian_blur",
           "gaussian_kernel1d", "bias_field_basis"]


def _nonnegative(owner: str, name: str, value: Any) -> tuple[float, float]:
    """A number s means (0, s); a pair is (low, high); both ends must be >= 0 (a std, a sigma)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (0.0, value)
    (r,) = as_ranges(owner, name, value, (1,))
    if r[0] < 0:
        raise ValueError(f"{owner}: {name} must be >= 0, got range ({r[0]:g}, {r[1]:g})")
    return r


def _one(owner: str, name: str, value: Any, centre: float) -> tuple[float, float]:
    (r,) = as_ranges(owner, name, value, (1,), centre=centre)
    return r


def _per_sample(v: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(N,) parameters -> (N, 1, 1, ...) broadcastable over (N, C, *spatial), on the image's device and dtype."""
    return v.to(device=image.device, dtype=image.dtype).view(-1, *([1] * (image.dim() - 1)))


def _where(applied: torch.Tensor, out: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Samples that drew "not this time" come back bit-identical."""
    return torch.where(_per_sample(applied, image).bool(), out, image)


class _Intensity(Transform):
    """Shared call: check the batch, transform the image, hand the mask back untouched."""

    p: float

    def _apply(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _check_p(self) -> None:
        check_probability(type(self).__name__, "p", self.p)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None):
        image, _, _ = check_batch(type(self).__name__, image, mask)
        out = self._apply(image, generator)
        return out if mask is None else (out, mask)


@dataclass(frozen=True)
class GaussianNoise(_Intensity):
    """Additive zero-mean Gaussian noise; ``std`` per sample in the range (a number s means (0, s))."""

    std: Any = 0.05
    p: float = 1.0

    kind = "noise"

    def __post_init__(self) -> None:
        _nonnegative(type(self).__name__, "std", self.std)
        self._check_p()

    def policy_limits(self) -> dict[str, Any]:
        return {"noise_std": _nonnegative(type(self).__name__, "std", self.std) if self.p > 0 else (0.0, 0.0)}

    def _apply(self, image, generator):
        n = image.shape[0]
        std = uniform([_nonnegative(type(self).__name__, "std", self.std)], n, generator)[:, 0]
        applied = gate(self.p, n, generator)
        noise = torch.randn(image.shape, generator=generator, dtype=image.dtype).to(image.device)
        return _where(applied, image + noise * _per_sample(std, image), image)


@dataclass(frozen=True)
class RandomGamma(_Intensity):
    """x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma with lo/hi each channel's min/max: contrast curve
    changes that keep the intensity range. ``gamma`` is drawn log-uniformly (a number r means (1 - r, 1 + r))."""

    gamma: Any = (0.7, 1.5)
    p: float = 1.0

    kind = "gamma"

    def __post_init__(self) -> None:
        r = _one(type(self).__name__, "gamma", self.gamma, 1.0)
        if r[0] <= 0:
            raise ValueError(f"{type(self).__name__}: gamma must stay > 0, got range ({r[0]:g}, {r[1]:g})")
        self._check_p()

    def policy_limits(self) -> dict[str, Any]:
        return {"gamma": _one(type(self).__name__, "gamma", self.gamma, 1.0) if self.p > 0 else (1.0, 1.0)}

    def _apply(self, image, generator):
        n = image.shape[0]
        lo_g, hi_g = _one(type(self).__name__, "gamma", self.gamma, 1.0)
        gamma = uniform([(math.log(lo_g), math.log(hi_g))], n, generator)[:, 0].exp()
        applied = gate(self.p, n, generator)
        flat = image.flatten(2)  # (N, C, P)
        lo = flat.amin(-1).view(*image.shape[:2], *([1] * (image.dim() - 2)))
        span = flat.amax(-1).view_as(lo) - lo
        unit = ((image - lo) / span.clamp_min(torch.finfo(image.dtype).tiny)).clamp(0, 1)
        out = torch.where(span > 0, lo + span * unit.pow(_per_sample(gamma, image)), image)
        return _where(applied, out, image)


def gaussian_kernel1d(sigma: torch.Tensor, truncate: float = 4.0) -> torch.Tensor:
    """(M,) sigmas -> (M, 2R + 1) normalized sampled Gaussians, R from the largest sigma; each row is zero beyond
    its own radius int(truncate * sigma + 0.5), as ``scipy.ndimage.gaussian_filter`` does (sigma 0: identity)."""
    sigma = sigma.to(torch.float64)
    radius = int(truncate * float(sigma.max()) + 0.5) if sigma.numel() else 0
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)  # (2R + 1,)
    own = (truncate * sigma + 0.5).floor()[:, None]  # (M, 1) each row's own radius
    safe = sigma.clamp_min(1e-12)[:, None]
    k = torch.exp(-0.5 * (x / safe) ** 2) * (x.abs() <= own)
    return k / k.sum(-1, keepdim=True)


def gaussian_blur(image: torch.Tensor, sigma: Any, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, *spatial) with one sigma (pixels) per sample, edges replicated;
    equal to ``scipy.ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=truncate)`` per image."""
    image, _, _ = check_batch("gaussian_blur", image)
    n, c, *spatial = image.shape
    nd = len(spatial)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).cpu()
    sigma = sigma.expand(n) if sigma.dim() == 0 else sigma
    if tuple(sigma.shape) != (n,) or bool((sigma < 0).any()) or not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"gaussian_blur: sigma must be one number or (N={n},) finite values >= 0, got "
                         f"{sigma.tolist()}")
    k = gaussian_kernel1d(sigma, truncate).to(device=image.device, dtype=image.dtype)
    r = (k.shape[1] - 1) // 2
    if r == 0:
        return image.clone()
    k = k.repeat_interleave(c, dim=0)  # (N*C, 2R+1): every channel of a sample gets its sample's kernel
    conv = F.conv2d if nd == 2 else F.conv3d
    x = image.reshape(1, n * c, *spatial)  # one group per (sample, channel)
    for axis in range(nd):
        shape = [n * c, 1] + [1] * nd
        shape[2 + axis] = 2 * r + 1
        pad = [0] * (2 * nd)
        pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = r  # F.pad lists the last axis first
        x = conv(F.pad(x, pad, mode="replicate"), k.view(shape), groups=n * c)
    return x.reshape(image.shape)


@dataclass(frozen=True)
class GaussianBlur(_Intensity):
    """Gaussian blur (separable, 2D/3D) with ``sigma`` pixels per sample (a number s means (0, s))."""

    sigma: Any = (0.0, 1.0)
    p: float = 1.0

    kind = "blur"

    def __post_init__(self) -> None:
        _nonnegative(type(self).__name__, "sigma", self.sigma)
        self._check_p()

    def policy_limits(self) -> dict[str, Any]:
        return {"blur_sigma": _nonnegative(type(self).__name__, "sigma", self.sigma) if self.p > 0 else (0.0, 0.0)}

    def _apply(self, image, generator):
        n = image.shape[0]
        sigma = uniform([_nonnegative(type(self).__name__, "sigma", self.sigma)], n, generator)[:, 0]
        applied = gate(self.p, n, generator)
        return _where(applied, gaussian_blur(image, torch.where(applied, sigma, 0.0)), image)


def bias_field_basis(spatial: tuple[int, ...], order: int) -> torch.Tensor:
    """(T, *spatial) float64 monomials prod_i u_i ** e_i with 1 <= sum(e) <= order, u_i in [-1, 1] per axis.
    The constant term is left out: a global gain is brightness/contrast's business."""
    axes = [torch.linspace(-1.0, 1.0, s, dtype=torch.float64) for s in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    terms = [e for e in itertools.product(range(order + 1), repeat=len(spatial)) if 1 <= sum(e) <= order]
    return torch.stack([math.prod(g ** p for g, p in zip(grids, e)) for e in terms])


@dataclass(frozen=True)
class BiasField(_Intensity):
    """Smooth multiplicative field exp(sum_k c_k m_k(x)) over polynomial monomials up to ``order`` (MRI
    intensity inhomogeneity, as in TorchIO's RandomBiasField); each c_k is drawn from ``coefficients``
    (a number c means (-c, c))."""

    coefficients: Any = 0.3
    order: int = 3
    p: float = 1.0

    kind = "bias_field"

    def __post_init__(self) -> None:
        _one(type(self).__name__, "coefficients", self.coefficients, 0.0)
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 1 <= self.order <= 6:
            raise ValueError(f"{type(self).__name__}: order must be an int in 1..6, got {self.order!r}")
        self._check_p()

    def policy_limits(self) -> dict[str, Any]:
        r = _one(type(self).__name__, "coefficients", self.coefficients, 0.0)
        return {"bias_field": r if self.p > 0 else (0.0, 0.0)}

    def _apply(self, image, generator):
        n = image.shape[0]
        basis = bias_field_basis(tuple(image.shape[2:]), self.order)  # (T, *spatial)
        r = _one(type(self).__name__, "coefficients", self.coefficients, 0.0)
        coeffs = uniform([r] * basis.shape[0], n, generator)  # (N, T)
        applied = gate(self.p, n, generator)
        field = torch.tensordot(coeffs, basis, dims=1).exp()  # (N, *spatial)
        return _where(applied, image * field.unsqueeze(1).to(device=image.device, dtype=image.dtype), image)


@dataclass(frozen=True)
class BrightnessContrast(_Intensity):
    """x -> (x - mean) * contrast + mean + brightness, mean per sample and channel. ``brightness`` is additive
    (a number b means (-b, b)), ``contrast`` a factor (a number c means (1 - c, 1 + c))."""

    brightness: Any = 0.1
    contrast: Any = 0.1
    p: float = 1.0

    kind = "brightness_contrast"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _one(owner, "brightness", self.brightness, 0.0)
        if _one(owner, "contrast", self.contrast, 1.0)[0] < 0:
            raise ValueError(f"{owner}: contrast must stay >= 0 (a negative factor inverts the image), got "
                             f"{_one(owner, 'contrast', self.contrast, 1.0)}")
        self._check_p()

    def policy_limits(self) -> dict[str, Any]:
        owner = type(self).__name__
        if self.p == 0:
            return {"brightness": (0.0, 0.0), "contrast": (1.0, 1.0)}
        return {"brightness": _one(owner, "brightness", self.brightness, 0.0),
                "contrast": _one(owner, "contrast", self.contrast, 1.0)}

    def _apply(self, image, generator):
        n, owner = image.shape[0], type(self).__name__
        params = uniform([_one(owner, "brightness", self.brightness, 0.0),
                          _one(owner, "contrast", self.contrast, 1.0)], n, generator)  # (N, 2)
        applied = gate(self.p, n, generator)
        mean = image.mean(dim=tuple(range(2, image.dim())), keepdim=True)
        out = (image - mean) * _per_sample(params[:, 1], image) + mean + _per_sample(params[:, 0], image)
        return _where(applied, out, image)
