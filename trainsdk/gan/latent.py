"""Latent-space walks and arithmetic, the lecture's "hallmarks of good embeddings" (Radford et al. 2016): smooth
interpolations between codes and vector arithmetic on averaged codes (a - b + c)."""
from __future__ import annotations

import torch

__all__ = ["interpolate_latents", "latent_arithmetic"]


def _latent(name: str, z) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() < 1 or z.numel() == 0:
        raise TypeError(f"{name} must be a non-empty floating-point tensor, got "
                        f"{type(z).__name__ if not isinstance(z, torch.Tensor) else f'{z.dtype} {tuple(z.shape)}'}")
    return z


def _slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per row of (B, D): along the great circle, scaled like the endpoints; rows whose
    directions (almost) coincide fall back to linear interpolation."""
    u0, u1 = v0 / v0.norm(dim=1, keepdim=True).clamp_min(1e-12), v1 / v1.norm(dim=1, keepdim=True).clamp_min(1e-12)
    omega = torch.arccos((u0 * u1).sum(1).clamp(-1.0, 1.0)).unsqueeze(1)  # (B, 1)
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    w0 = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, so, 1.0), torch.full_like(so, 1 - t))
    w1 = torch.where(safe, torch.sin(t * omega) / torch.where(safe, so, 1.0), torch.full_like(so, t))
    return w0 * v0 + w1 * v1


def interpolate_latents(z0: torch.Tensor, z1: torch.Tensor, steps: int = 8, *,
                        method: str = "linear") -> torch.Tensor:
    """``steps`` codes from ``z0`` to ``z1`` (both included), concatenated along dim 0: a (1, 1, L) code gives a
    (steps, 1, L) batch ready for the generator; a batch of B codes gives steps * B, step by step.

    ``method="slerp"`` follows the great circle (White 2016): for Gaussian latents the linear midpoint has a
    smaller norm than any typical sample, the spherical one does not.
    """
    z0, z1 = _latent("z0", z0), _latent("z1", z1)
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have one shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (the endpoints included), got {steps!r}")
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    batch = z0.shape[0] if z0.dim() > 1 else 1
    v0, v1 = z0.reshape(batch, -1), z1.reshape(batch, -1)  # (B, D)
    out = []
    for i in range(steps):
        t = i / (steps - 1)
        v = v0 + t * (v1 - v0) if method == "linear" else _slerp(v0, v1, t)
        if i == 0 or i == steps - 1:
            v = v0 if i == 0 else v1  # exact endpoints, whatever rounding the weights had
        out.append(v.reshape(z0.shape) if z0.dim() > 1 else v.reshape(1, *z0.shape))
    return torch.cat(out, dim=0)


def latent_arithmetic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``mean(a) - mean(b) + mean(c)`` over each group's first axis, kept as a batch of one: Radford et al.
    average three exemplars per concept ("smiling woman" - "neutral woman" + "neutral man") because single codes
    are unstable. Each group is (n_i, *code_shape)."""
    groups = [_latent(n, g) for n, g in (("a", a), ("b", b), ("c", c))]
    shapes = {tuple(g.shape[1:]) for g in groups}
    if len(shapes) != 1:
        raise ValueError(f"a, b and c must hold codes of one shape, got {[tuple(g.shape) for g in groups]}")
    ma, mb, mc = (g.mean(dim=0, keepdim=True) for g in groups)
    return ma - mb + mc
