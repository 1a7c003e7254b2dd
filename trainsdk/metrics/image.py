"""Image-quality metrics for reconstruction/denoising/synthesis: PSNR and SSIM (Wang et al. 2004), 2D and 3D.

``data_range`` (the span of possible intensities, e.g. 1.0 for images in [0, 1], 4095 for 12-bit CT) sets the
scale of both metrics. Pass it explicitly whenever images are compared across cases; when it is None it is inferred
as ``target.max() - target.min()`` (the dynamic range of the reference image, torchmetrics' rule), and a constant
reference, which has no range, raises.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._convert import as_array, same_shape

__all__ = ["psnr", "ssim", "infer_data_range"]


def _float_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_array(pred, "pred"), as_array(target, "target")
    same_shape(p, t, "pred", "target")
    for name, a in (("pred", p), ("target", t)):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
            raise TypeError(f"{name} must be a real-valued image, got dtype {a.dtype}")
    p, t = p.astype(np.float64), t.astype(np.float64)
    if t.size == 0:
        raise ValueError("pred and target are empty")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("pred and target must be finite (found NaN or inf)")
    return p, t


def infer_data_range(target: Any, data_range: float | None = None) -> float:
    """``data_range`` checked (finite, > 0), or ``target.max() - target.min()`` when it is None."""
    if data_range is None:
        t = as_array(target, "target").astype(np.float64)
        span = float(t.max() - t.min()) if t.size else 0.0
        if not span > 0:
            raise ValueError("cannot infer data_range from a constant target image; pass data_range= explicitly "
                             "(the span of possible intensities, e.g. 1.0 or 255)")
        return span
    if isinstance(data_range, bool) or not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    return float(data_range)


def psnr(pred: Any, target: Any, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB over all elements (``inf`` if identical)."""
    p, t = _float_pair(pred, target)
    dr = infer_data_range(t, data_range)
    mse = float(np.mean((p - t) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(dr * dr / mse))


def _gaussian_window(win_size: int, sigma: float) -> np.ndarray:
    r = win_size // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _local_mean(a: np.ndarray, window: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Separable Gaussian weighted mean over ``axes``, cropped to the 'valid' region (window fully inside)."""
    for ax in axes:
        a = ndimage.correlate1d(a, window, axis=ax, mode="reflect")
    r = len(window) // 2
    crop = tuple(slice(r, a.shape[ax] - r) if ax in axes else slice(None) for ax in range(a.ndim))
    return a[crop]


def _spatial_axes(shape: tuple[int, ...], spatial_dims: int | None, win_size: int) -> tuple[int, ...]:
    if spatial_dims is None:
        if len(shape) not in (2, 3):
            raise ValueError(f"ssim takes a 2D (H, W) or 3D (D, H, W) image, got shape {shape}; pass spatial_dims=2 "
                             "or 3 for batched input (N, C, *spatial)")
        spatial_dims = len(shape)
    if spatial_dims not in (2, 3) or spatial_dims > len(shape):
        raise ValueError(f"spatial_dims must be 2 or 3 and at most the rank of the image {shape}, got {spatial_dims}")
    axes = tuple(range(len(shape) - spatial_dims, len(shape)))
    small = [shape[ax] for ax in axes if shape[ax] < win_size]
    if small:
        raise ValueError(f"ssim needs every spatial side >= win_size={win_size}, got spatial shape "
                         f"{tuple(shape[ax] for ax in axes)}")
    return axes


def ssim(pred: Any, target: Any, *, data_range: float | None = None, spatial_dims: int | None = None,
         win_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004), in [-1, 1], 1 for identical images.

    The paper's settings: an ``win_size`` x ``win_size`` (x ``win_size``) Gaussian window of std ``sigma``, the
    population (not sample) covariance, ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L = data_range``, and the mean
    over the positions where the window lies inside the image (MATLAB's ``filter2(..., 'valid')``; scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``). Input is one 2D/3D image, or
    ``(..., *spatial)`` with ``spatial_dims`` given, where leading axes (batch, channel) are averaged over.
    """
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd int >= 3, got {win_size!r}")
    if not sigma > 0 or not k1 > 0 or not k2 > 0:
        raise ValueError(f"sigma, k1 and k2 must be > 0, got sigma={sigma}, k1={k1}, k2={k2}")
    p, t = _float_pair(pred, target)
    axes = _spatial_axes(p.shape, spatial_dims, int(win_size))
    dr = infer_data_range(t, data_range)
    window = _gaussian_window(int(win_size), float(sigma))
    mu_p, mu_t = _local_mean(p, window, axes), _local_mean(t, window, axes)
    var_p = _local_mean(p * p, window, axes) - mu_p * mu_p
    var_t = _local_mean(t * t, window, axes) - mu_t * mu_t
    cov = _local_mean(p * t, window, axes) - mu_p * mu_t
    c1, c2 = (k1 * dr) ** 2, (k2 * dr) ** 2
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return float(ssim_map.mean())
