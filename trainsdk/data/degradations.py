"""Image degradations that make (degraded, clean) training pairs for denoising and restoration networks.

Every function takes images with any leading batch axes, ``(..., H, W)`` (a ``(N, C, H, W)`` batch included), as a
numpy array or a torch tensor, and returns the same kind, shape (except the resampling ones), device and float
dtype (float32 stays float32; other inputs come back float64). Random degradations draw from ``seed``: an int, a
``numpy.random.Generator`` (to stream different noise through a data pipeline) or None (fresh entropy, not
reproducible); the same int gives the same noise on every machine, and the global RNGs are never touched.

Why these: they are the corruptions the lecture's autoencoder examples undo -- sensor noise (Gaussian), photon
counting (Poisson), multiplicative noise (speckle; ultrasound's Rayleigh speckle), missing resolution
(down-sampling, with the bicubic up-sampling that super-resolution has to beat), compression (JPEG) and reduced
dose (:func:`simulate_low_dose_ct`, in ``ct_sim``). ``median_filter`` is the classical baseline a denoising
autoencoder is compared against.
"""
from __future__ import annotations

import functools
import io
import numbers
from typing import Callable

import numpy as np
from scipy import ndimage

from . import ct_sim

__all__ = ["gaussian_noise", "poisson_noise", "speckle_noise", "ultrasound_speckle", "downsample", "upsample_bicubic",
           "jpeg_artifacts", "median_filter", "simulate_low_dose_ct", "DEGRADATIONS", "degrade"]


# --- helpers -------------------------------------------------------------------------------------------------------
def _tensor_io(fn: Callable) -> Callable:
    """Let ``fn`` (written for numpy) take and return torch tensors too, on the caller's device and dtype."""

    @functools.wraps(fn)
    def wrapper(image, *args, **kwargs):
        try:
            import torch
        except ImportError:  # numpy-only environments
            return fn(image, *args, **kwargs)
        if not isinstance(image, torch.Tensor):
            return fn(image, *args, **kwargs)
        out = fn(image.detach().cpu().numpy(), *args, **kwargs)
        dtype = image.dtype if image.is_floating_point() else torch.float64
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=image.device, dtype=dtype)

    return wrapper


def _images(image, name: str = "image") -> np.ndarray:
    """A finite, real array of rank >= 2 (the last two axes are H, W), as float32 or float64."""
    a = np.asarray(image)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"{name} must be a real-valued array or tensor, got dtype {a.dtype}")
    if a.ndim < 2:
        raise ValueError(f"{name} must have at least 2 axes (..., H, W), got shape {a.shape}")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be a non-negative int, a numpy.random.Generator or None, got {seed!r}")


def _non_negative(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0 \
            or (positive and value == 0):
        want = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {want}, got {value!r}")
    return float(value)


def _factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    return int(factor)


# --- noise -----------------------------------------------------------------------------------------------------------
@_tensor_io
def gaussian_noise(image, sigma: float, *, seed=None, clip: tuple[float, float] | None = None):
    """``image + N(0, sigma^2)`` per pixel (additive white noise of the detector electronics); ``clip`` = (lo, hi)."""
    img = _images(image)
    noisy = img + _non_negative("sigma", sigma) * _rng(seed).standard_normal(img.shape)
    if clip is not None:
        noisy = np.clip(noisy, *clip)
    return noisy.astype(img.dtype)


@_tensor_io
def poisson_noise(image, photons: float, *, seed=None):
    """Photon-counting noise: ``Poisson(image * photons) / photons``, so the mean stays ``image``.

    ``photons`` is the expected count at intensity 1; the variance is ``image / photons`` (it grows with the signal,
    the way quantum noise does, and fewer photons mean relatively more noise). ``image`` must be non-negative.
    """
    img = _images(image)
    if img.size and img.min() < 0:
        raise ValueError(f"image must be non-negative for Poisson noise (intensities are photon rates), got a "
                         f"minimum of {float(img.min()):.4g}")
    scale = _non_negative("photons", photons, positive=True)
    return (_rng(seed).poisson(img * scale) / scale).astype(img.dtype)


@_tensor_io
def speckle_noise(image, sigma: float, *, seed=None):
    """Multiplicative Gaussian noise ``image * (1 + sigma * N(0, 1))``: the factor has mean 1 and std ``sigma``."""
    img = _images(image)
    return (img * (1.0 + _non_negative("sigma", sigma) * _rng(seed).standard_normal(img.shape))).astype(img.dtype)


@_tensor_io
def ultrasound_speckle(image, *, psf_sigma: tuple[float, float] = (1.0, 2.0), seed=None):
    """B-mode-like speckle: the image times fully developed (Rayleigh) speckle of mean 1, blurred by the PSF.

    Fully developed speckle -- many sub-resolution scatterers per cell -- has a Rayleigh-distributed envelope; its
    scale here is ``sqrt(2 / pi)`` so the factor has mean 1 and std ``sqrt(4 / pi - 1)`` (about 0.52, the
    signal-to-noise ratio 1.91 of Burckhardt 1978). The Gaussian point-spread function (``psf_sigma`` = axial, lateral
    in pixels along H, W; lateral resolution is the coarser one) gives the speckle its elongated grain and blurs the
    edges as an imaging system would; ``(0, 0)`` leaves the per-pixel speckle unblurred.
    """
    img = _images(image)
    if (not isinstance(psf_sigma, (tuple, list)) or len(psf_sigma) != 2
            or any(isinstance(s, bool) or not isinstance(s, numbers.Real) or not s >= 0 for s in psf_sigma)):
        raise ValueError(f"psf_sigma must be (axial, lateral) standard deviations >= 0 in pixels, got {psf_sigma!r}")
    speckle = _rng(seed).rayleigh(np.sqrt(2.0 / np.pi), size=img.shape)
    sigma = (0.0,) * (img.ndim - 2) + tuple(float(s) for s in psf_sigma)
    return ndimage.gaussian_filter(img * speckle, sigma, mode="reflect").astype(img.dtype)


# --- resolution and compression ------------------------------------------------------------------------------------
@_tensor_io
def downsample(image, factor: int, *, method: str = "area"):
    """``(..., H, W) -> (..., H // factor, W // factor)`` for super-resolution pairs.

    ``"area"`` averages ``factor x factor`` blocks (what a detector with larger pixels records; H and W must be
    multiples of ``factor``). ``"bicubic"`` is antialiased bicubic resampling, the SRCNN-style degradation; sizes
    that are not multiples are rounded down.
    """
    img = _images(image)
    f = _factor(factor)
    h, w = img.shape[-2:]
    if h // f < 1 or w // f < 1:
        raise ValueError(f"factor {f} is larger than the image size {(h, w)}")
    if method == "area":
        if h % f or w % f:
            raise ValueError(f"method='area' needs H and W divisible by factor {f}, got {(h, w)}; crop the image "
                             f"or use method='bicubic'")
        return img.reshape(*img.shape[:-2], h // f, f, w // f, f).mean(axis=(-3, -1)).astype(img.dtype)
    if method == "bicubic":
        return _resize_bicubic(img, (h // f, w // f), antialias=True)
    raise ValueError(f"method must be 'area' or 'bicubic', got {method!r}")


def _resize_bicubic(img: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    planes = torch.from_numpy(np.ascontiguousarray(img.reshape(-1, 1, *img.shape[-2:]), dtype=np.float64))
    out = F.interpolate(planes, size=size, mode="bicubic", align_corners=False, antialias=antialias)  # (B, 1, h, w)
    return out.numpy().reshape(*img.shape[:-2], *size).astype(img.dtype)


@_tensor_io
def upsample_bicubic(image, factor: int | None = None, *, size: tuple[int, int] | None = None):
    """Bicubic interpolation (Keys, a = -0.75) up by ``factor`` or to ``size``: the baseline super-resolution
    networks are measured against (SRCNN starts from it)."""
    img = _images(image)
    if (factor is None) == (size is None):
        raise ValueError("give exactly one of factor (an integer) or size (H, W)")
    if factor is not None:
        f = _factor(factor)
        size = (img.shape[-2] * f, img.shape[-1] * f)
    elif (not isinstance(size, (tuple, list)) or len(size) != 2
          or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)):
        raise ValueError(f"size must be (H, W) positive integers, got {size!r}")
    return _resize_bicubic(img, (int(size[0]), int(size[1])), antialias=False)


@_tensor_io
def jpeg_artifacts(image, quality: int, *, data_range: tuple[float, float] = (0.0, 1.0)):
    """Round trip through baseline JPEG at ``quality`` (1-95): blocking and ringing, as in compressed archives.

    Each 2-D plane is mapped from ``data_range`` to 8 bits (values outside are clipped), encoded as a grayscale
    JPEG by Pillow, decoded and mapped back. Deterministic: the encoder has no randomness.
    """
    from PIL import Image

    img = _images(image)
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 95:
        raise ValueError(f"quality must be an integer in [1, 95] (Pillow's useful range), got {quality!r}")
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must be (low, high) with high > low, got {data_range!r}")
    planes = np.clip((img.reshape(-1, *img.shape[-2:]) - lo) / (hi - lo), 0.0, 1.0)
    out = np.empty(planes.shape)
    for i, plane in enumerate(planes):
        buf = io.BytesIO()
        Image.fromarray(np.round(plane * 255.0).astype(np.uint8)).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("L"), dtype=np.float64) / 255.0
    return (out * (hi - lo) + lo).reshape(img.shape).astype(img.dtype)


simulate_low_dose_ct = _tensor_io(ct_sim.simulate_low_dose_ct)  # tensors in, tensors out, like the rest


# --- baseline ------------------------------------------------------------------------------------------------------
@_tensor_io
def median_filter(image, size: int = 3):
    """``size x size`` median over H, W of each plane (reflecting the border): the classical denoising baseline,
    good on impulse noise and edge-preserving, which a denoising autoencoder should beat on Gaussian noise."""
    img = _images(image)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return ndimage.median_filter(img, size=(1,) * (img.ndim - 2) + (int(size), int(size)), mode="reflect")


# --- by name -------------------------------------------------------------------------------------------------------
DEGRADATIONS: dict[str, Callable] = {
    "gaussian": gaussian_noise, "poisson": poisson_noise, "speckle": speckle_noise,
    "ultrasound_speckle": ultrasound_speckle, "downsample": downsample, "jpeg": jpeg_artifacts,
    "low_dose_ct": simulate_low_dose_ct,
}


def degrade(name: str, image, **params):
    """``DEGRADATIONS[name](image, **params)``: pick a degradation from a config string (recipes, CLIs)."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; choose one of {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[name](image, **params)
