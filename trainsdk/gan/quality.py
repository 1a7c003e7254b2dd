"""Image-to-image quality for the GAN recipes: PSNR/SSIM/MAE against a reference, and a high-frequency energy
measure that shows over-smoothing.

Why a high-frequency measure: a network trained with MSE alone predicts the conditional mean, which blurs the
texture and the fine edges that a reader uses (Yang et al. 2018 call it over-smoothing); PSNR barely notices, since
the lost energy is small. ``high_frequency_ratio(pred, target)`` is the high-frequency energy of the prediction
over that of the reference: 1 means the texture has the reference's strength, below 1 smoothed, above 1 noisier.

Two measures, both per image then averaged:

- ``"laplacian"``: mean squared 5-point Laplacian ``x[i-1,j] + x[i+1,j] + x[i,j-1] + x[i,j+1] - 4 x[i,j]`` over the
  interior pixels (no padding, so the border adds nothing); a +-1 checkerboard gives exactly 64.
- ``"fft"``: the spectral energy ``sum |F(k)|^2 / (H W)^2`` (Parseval: per-pixel energy) over the frequencies whose
  radius ``sqrt(fy^2 + fx^2)`` in cycles per pixel is at least ``cutoff`` (0.25: the top band, up to Nyquist 0.5
  per axis); the mean is removed first.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["HF_METHODS", "high_frequency_energy", "high_frequency_ratio", "image_quality"]

HF_METHODS = ("laplacian", "fft")


def _planes(images: Any, name: str) -> np.ndarray:
    """(..., H, W) array or tensor -> (B, H, W) float64 planes."""
    try:
        import torch

        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().double().numpy()
    except ImportError:  # numpy-only environments
        pass
    a = np.asarray(images)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"{name} must be a real-valued array or tensor, got dtype {a.dtype}")
    if a.ndim < 2 or a.shape[-1] < 3 or a.shape[-2] < 3 or a.size == 0:
        raise ValueError(f"{name} must be images (..., H, W) with H, W >= 3, got shape {a.shape}")
    a = a.reshape(-1, *a.shape[-2:]).astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return a


def _laplacian_energy(p: np.ndarray) -> np.ndarray:
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * p[:, 1:-1, 1:-1]
    return (lap ** 2).mean(axis=(1, 2))  # (B,)


def _fft_energy(p: np.ndarray, cutoff: float) -> np.ndarray:
    h, w = p.shape[-2:]
    spec = np.abs(np.fft.fft2(p - p.mean(axis=(1, 2), keepdims=True))) ** 2  # (B, H, W)
    radius = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    return spec[:, radius >= cutoff].sum(axis=1) / float(h * w) ** 2  # (B,)


def high_frequency_energy(images: Any, *, method: str = "laplacian", cutoff: float = 0.25) -> float:
    """Mean high-frequency energy of ``images`` (..., H, W) by ``method`` ("laplacian" or "fft"; see the module).
    ``cutoff``: the lowest radial frequency of the "fft" band, in cycles per pixel, in (0, 0.5]."""
    if method not in HF_METHODS:
        raise ValueError(f"method must be one of {list(HF_METHODS)}, got {method!r}")
    if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real) or not 0.0 < cutoff <= 0.5:
        raise ValueError(f"cutoff must be a frequency in (0, 0.5] cycles per pixel, got {cutoff!r}")
    p = _planes(images, "images")
    energy = _laplacian_energy(p) if method == "laplacian" else _fft_energy(p, float(cutoff))
    return float(energy.mean())


def high_frequency_ratio(pred: Any, target: Any, *, method: str = "laplacian", cutoff: float = 0.25) -> float:
    """``high_frequency_energy(pred) / high_frequency_energy(target)``: below 1 over-smoothed, 1 the reference's
    texture strength, above 1 noisier than the reference."""
    p, t = _planes(pred, "pred"), _planes(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have one shape, got {p.shape} and {t.shape} (as (B, H, W))")
    ref = high_frequency_energy(t, method=method, cutoff=cutoff)
    if not ref > 0:
        raise ValueError("the target has no high-frequency energy (constant images?): the ratio is undefined")
    return high_frequency_energy(p, method=method, cutoff=cutoff) / ref


def image_quality(pred: Any, target: Any, *, data_range: float) -> dict[str, float]:
    """PSNR (dB), SSIM, MAE and the high-frequency ratios (Laplacian and FFT top band) of ``pred`` against
    ``target``, both (N, C, H, W) or (N, H, W), on one fixed ``data_range`` so figures compare across methods."""
    from trainsdk.metrics import psnr, ssim

    p, t = _planes(pred, "pred"), _planes(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have one shape, got {p.shape} and {t.shape} (as (B, H, W))")
    return {"psnr": psnr(p, t, data_range=data_range), "ssim": ssim(p, t, data_range=data_range, spatial_dims=2),
            "mae": float(np.abs(p - t).mean()), "hf_ratio": high_frequency_ratio(p, t, method="laplacian"),
            "hf_ratio_fft": high_frequency_ratio(p, t, method="fft")}
