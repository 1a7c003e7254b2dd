"""Sample-quality measures: the Frechet distance between feature distributions (FID's formula, Heusel et al. 2017,
with the SDK's own feature extractor instead of a downloaded Inception network) and a diversity score that flags
mode collapse.

A Frechet distance is only comparable between runs that use the same extractor and weights, sample counts and
preprocessing; with a medical-image extractor it is not the published FID, and is reported as "FD".
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
from scipy import linalg
from scipy.spatial.distance import pdist

from .perceptual import build_frozen_model, match_channels

__all__ = ["FeatureExtractor", "gaussian_stats", "frechet_distance", "frechet_distance_from_stats",
           "DiversityReport", "diversity_score"]


def _as_2d(name: str, x: Any) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 samples along the first axis, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return a


class FeatureExtractor(nn.Module):
    """Embeddings (N, C) for the Frechet distance: a frozen zoo model's ``forward_features``, globally average
    pooled. ``model``: a name or a module (e.g. the SDK-trained lesion classifier); ``weights``: a path or
    state_dict loaded with ``trainsdk.models.load_weights``. 1-channel images feed a 3-channel network repeated."""

    def __init__(self, model: nn.Module | str, *, weights: str | os.PathLike | Mapping | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, load_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        self.net, self.load_report = build_frozen_model(model, weights=weights, model_kwargs=model_kwargs,
                                                        load_kwargs=load_kwargs)
        if not hasattr(self.net, "forward_features"):
            raise TypeError(f"{type(self.net).__name__} has no forward_features: use a zoo model")

    def train(self, mode: bool = True) -> "FeatureExtractor":
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = match_channels(x, getattr(self.net, "in_channels", None), "FeatureExtractor")
        f = self.net.forward_features(x)
        if isinstance(f, (tuple, list)):
            f = f[-1]
        return f.flatten(2).mean(2) if f.dim() > 2 else f  # (N, C)

    @torch.no_grad()
    def embed(self, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Features of many images, ``batch_size`` at a time, as a float64 array (N, C)."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        device = next((p.device for p in self.net.parameters()), torch.device("cpu"))
        out = [self(x[i:i + batch_size].to(device=device, dtype=torch.float32)).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).double().numpy()


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D)."""
    f = _as_2d("features", features)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance_from_stats(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``: the squared 2-Wasserstein distance between two
    Gaussians. A singular product gets ``eps`` on both diagonals (as pytorch-fid does)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"statistics do not match: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {s2.shape} (expected ({d},) and ({d}, {d}))")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if np.abs(np.diagonal(covmean).imag).max() > 1e-3 * max(1.0, np.abs(covmean).max()):
            raise ValueError("the matrix square root has a large imaginary part: the covariances are not positive "
                             "semi-definite (too few samples for the feature dimension?)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_distance(feats_a: Any, feats_b: Any, *, eps: float = 1e-6) -> float:
    """Frechet distance between two feature sets (N, D) and (M, D), each modelled as a Gaussian. Use far more
    samples than feature dimensions, or the covariance estimates dominate the number."""
    a, b = _as_2d("feats_a", feats_a), _as_2d("feats_b", feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b), eps=eps)


@dataclass
class DiversityReport:
    score: float  # mean pairwise distance of the samples / that of the reference
    sample_distance: float
    reference_distance: float
    threshold: float
    mode_collapse: bool  # score < threshold


def diversity_score(samples: Any, reference: Any, *, threshold: float = 0.5) -> DiversityReport:
    """Mean pairwise Euclidean distance between generated samples relative to that between real ones (images or
    features, flattened per sample). About 1 when the generator spreads like the data; a collapsed generator,
    which maps many codes to a few outputs, scores near 0 and is flagged below ``threshold``."""
    if isinstance(threshold, bool) or not 0 < float(threshold) < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    s, r = _as_2d("samples", samples), _as_2d("reference", reference)
    if s.shape[1] != r.shape[1]:
        raise ValueError(f"samples and reference differ in size per sample: {s.shape[1]} vs {r.shape[1]}")
    ds, dr = float(pdist(s).mean()), float(pdist(r).mean())
    if dr == 0.0:
        raise ValueError("the reference samples are all identical: there is no diversity to compare against")
    score = ds / dr
    return DiversityReport(score, ds, dr, float(threshold), score < threshold)
