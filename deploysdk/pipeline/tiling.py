"""Sliding-window (tiled) inference over 2D images and 3D volumes, with numpy only.

Any predictor works: a ``deploysdk.Runtime`` (or any runner with ``run``/``inputs``/``outputs``) or a plain callable
``f(batch) -> batch`` mapping ``(B, C, *roi)`` to ``(B, K, *out)``. Windows are cut from the image, run in batches
and blended back with constant or Gaussian weights (the weight map is computed once per window size and cached).

Networks whose output is smaller than their input by a fixed border (the valid-convolution U-Net of Ronneberger et
al.: 572 in, 388 out) are handled by overlap-tile: the image is mirror-padded by the border, each window's output
covers the window's centre, and the stitched output covers the whole image at the input's size. ``border="auto"``
measures the border with one probe run; MONAI's sliding-window inferer, by contrast, needs output size == input size.

Memory: the output ``(K, *S)`` and a weight map ``(*S)`` in float32, plus one batch of windows; windows are never all
materialised at once, so a large volume costs about one output's worth beyond the input.

Blending: ``"gaussian"`` weights are a separable Gaussian (sigma = ``sigma_scale`` x tile size) scaled to a maximum of
1 and floored at 1e-3; ``"gaussian_monai"`` is MONAI's ``compute_importance_map`` step for step (float32, not
rescaled, floored at ``max(min, 1e-3)``), so stitched outputs equal ``sliding_window_inference(mode="gaussian")``
to float rounding (the two differ only where the floor bites, i.e. at tile corners, by up to ~1e-4 relative).

Larger tiles: a network's cost grows with the voxels it sees, and overlapping windows make it see some twice. With
``max_roi_size`` (what the host's memory allows) a dynamic-size model gets, per axis, the window between
``roi_size`` and ``max_roi_size`` (a size the model accepts: ``roi_step * k + roi_offset``) that covers the axis with
the fewest computed voxels, e.g. one 1024-pixel window instead of 11 overlapping 128-pixel ones.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError

__all__ = ["TileConfig", "TiledInferer", "importance_map", "window_starts", "grown_roi"]

PAD_MODES = ("reflect", "symmetric", "edge", "constant")
BLEND_MODES = ("gaussian", "gaussian_monai", "constant")


@dataclass(frozen=True)
class TileConfig:
    """How to tile. ``roi_size``: the network's input window (None: the runtime's fixed input size);
    ``border``: how much smaller the output is on each side (int, per-axis tuple, or ``"auto"`` to measure it);
    ``overlap``: fraction of an output tile shared with its neighbour, in [0, 1); ``max_roi_size``: grow windows up
    to this size where it saves computation (module docstring), in sizes ``roi_step * k + roi_offset``."""

    roi_size: tuple[int, ...] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    batch_size: int = 4
    border: int | tuple[int, ...] | str = "auto"
    pad_mode: str = "reflect"
    pad_value: float = 0.0
    max_roi_size: int | tuple[int, ...] | None = None
    roi_step: int = 1
    roi_offset: int = 0

    def validate(self) -> None:
        if not 0.0 <= float(self.overlap) < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLEND_MODES:
            raise InputError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.sigma_scale > 0:
            raise InputError(f"sigma_scale must be > 0, got {self.sigma_scale}")
        if isinstance(self.border, str) and self.border != "auto":
            raise InputError(f"border must be an int, a tuple of ints or 'auto', got {self.border!r}")
        if isinstance(self.roi_step, bool) or not isinstance(self.roi_step, int) or self.roi_step < 1:
            raise InputError(f"roi_step must be an int >= 1, got {self.roi_step!r}")


# --- geometry -----------------------------------------------------------------------------------------------------
def window_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)``; the last tile ends exactly at ``size``
    (or one tile at 0 when the image is not larger than a tile)."""
    if size <= tile:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


@functools.lru_cache(maxsize=16)
def importance_map(shape: tuple[int, ...], blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Per-pixel blending weights of one output tile, strictly positive (cached; treat as read-only).

    "gaussian": max 1, floor 1e-3; "gaussian_monai": MONAI's map exactly (module docstring); "constant": ones.
    """
    if blend == "constant":
        w = np.ones(shape, np.float32)
    elif blend == "gaussian_monai":
        w = _monai_gaussian(tuple(shape), float(sigma_scale))
    else:
        axes = []
        for n in shape:
            centre, sigma = (n - 1) / 2.0, max(sigma_scale * n, 1e-6)
            axes.append(np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2))
        w = functools.reduce(np.multiply.outer, axes).astype(np.float32)
        w /= w.max()
        w = np.maximum(w, 1e-3)  # edges of a lone tile still count
    w.setflags(write=False)
    return w


def _monai_gaussian(shape: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    """``monai.data.utils.compute_importance_map(shape, "gaussian", sigma_scale)`` in numpy: float32 throughout,
    the same operation order, no rescaling, clamped below at ``max(min, 1e-3)``."""
    w = None
    for n in shape:
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)[:n]
        g = np.exp(x ** 2 / np.float32(-2 * (n * sigma_scale) ** 2)).astype(np.float32)
        w = g if w is None else w[..., None] * g
    return np.maximum(w, np.float32(max(float(w.min()), 1e-3))).astype(np.float32)


def grown_roi(spatial, roi, max_roi, border, overlap: float, step: int = 1, offset: int = 0) -> tuple[int, ...]:
    """Per axis, the window in ``[roi, max_roi]`` (sizes ``step * k + offset``) that covers the axis with the fewest
    computed voxels (windows x window size); ties go to the smaller window. Axes are independent: the total cost is
    the product of the per-axis costs."""
    out = []
    for s, r, m, b in zip(spatial, roi, max_roi, border):
        best = (len(window_starts(s, r - 2 * b, overlap)) * r, r)
        k = -(-(r - offset) // step)  # first k with step * k + offset >= r
        while step * k + offset <= m:
            w = step * k + offset
            if w > r and w - 2 * b >= 1:
                cost = len(window_starts(s, w - 2 * b, overlap)) * w
                best = min(best, (cost, w))
                if w - 2 * b >= s:  # one window covers the axis: larger ones only cost more
                    break
            k += 1
        out.append(best[1])
    return tuple(out)


def _per_axis(value, nd: int, what: str) -> tuple[int, ...]:
    vals = (value,) * nd if np.isscalar(value) else tuple(value)
    if len(vals) != nd or any(int(v) != v or v < 0 for v in vals):
        raise InputError(f"{what} must be a non-negative int or {nd} of them, got {value!r}")
    return tuple(int(v) for v in vals)


# --- predictor adapter --------------------------------------------------------------------------------------------
class _Predictor:
    """Uniform ``(B, C, *roi) -> (B, K, *out)`` call over a runtime/runner or a plain callable."""

    def __init__(self, predictor):
        self.fn = predictor
        self.batch_fixed: int | None = None
        self.spatial_fixed: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        self.fresh_output = False  # True: each call returns a new array, safe to weight in place
        inputs = getattr(predictor, "inputs", None)
        if inputs is not None and hasattr(predictor, "run"):
            if len(inputs) != 1 or len(predictor.outputs) != 1:
                raise InputError(f"tiled inference needs a model with one input and one output; this one has "
                                 f"inputs {[s.name for s in inputs]} and outputs "
                                 f"{[s.name for s in predictor.outputs]}")
            spec = inputs[0]
            self.in_name, self.out_name, self.dtype = spec.name, predictor.outputs[0].name, np.dtype(spec.dtype)
            self.batch_fixed = spec.shape[0]
            spatial = tuple(spec.shape[2:])
            self.spatial_fixed = spatial if spatial and all(d is not None for d in spatial) else None
            self.fn = lambda batch: predictor.run({self.in_name: batch})[self.out_name]
            self.fresh_output = True
        elif not callable(predictor):
            raise InputError(f"predictor must be a deploysdk Runtime/runner or a callable, got "
                             f"{type(predictor).__name__}")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n, fixed = batch.shape[0], self.batch_fixed
        if fixed is not None and n > fixed:  # a model with a fixed batch size: run it in slices
            return np.concatenate([self(batch[i:i + fixed]) for i in range(0, n, fixed)])
        if fixed is not None and n < fixed:  # pad a short batch to the fixed size
            pad = np.zeros((self.batch_fixed - n,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        out = np.asarray(self.fn(np.ascontiguousarray(batch, dtype=self.dtype)))
        if out.ndim != batch.ndim or out.shape[0] != batch.shape[0]:
            raise InputError(f"predictor returned shape {out.shape} for a batch of shape {batch.shape}; expected "
                             f"(B, K, *spatial) with B = {batch.shape[0]}")
        return out[:n]


# --- the inferer --------------------------------------------------------------------------------------------------
class TiledInferer:
    """``TiledInferer(predictor, TileConfig(...))(image) -> (K, *S)`` float32 for ``image`` of shape ``(C, *S)``.

    ``progress(done, total)`` is called after each batch of windows. Thread-safe as long as the predictor is (a
    ``deploysdk.Runtime`` is): the only shared state is the read-only cached weight map.
    """

    def __init__(self, predictor, config: TileConfig | None = None, *,
                 progress: Callable[[int, int], None] | None = None, **overrides):
        config = config or TileConfig()
        if overrides:
            config = TileConfig(**{**config.__dict__, **overrides})
        config.validate()
        self.config, self.progress = config, progress
        self.predictor = _Predictor(predictor)
        self._borders: dict[tuple[int, ...], tuple[int, ...]] = {}

    # geometry of one call
    def roi_for(self, nd: int) -> tuple[int, ...]:
        roi = self.config.roi_size or self.predictor.spatial_fixed
        if roi is None:
            raise InputError("roi_size is needed: the model's input size is dynamic (set TileConfig(roi_size=...))")
        roi = _per_axis(roi, nd, "roi_size")
        fixed = self.predictor.spatial_fixed
        if fixed is not None and roi != fixed:
            raise InputError(f"roi_size {roi} differs from the model's fixed input size {fixed}")
        if min(roi) < 1:
            raise InputError(f"roi_size must be positive, got {roi}")
        return roi

    def border_for(self, roi: tuple[int, ...], channels: int) -> tuple[int, ...]:
        """The output border per axis: configured, or measured once per window size with a zero window."""
        if self.config.border != "auto":
            border = _per_axis(self.config.border, len(roi), "border")
        elif roi in self._borders:
            return self._borders[roi]
        else:
            out = self.predictor(np.zeros((1, channels) + roi, np.float32))
            diff = [r - o for r, o in zip(roi, out.shape[2:])]
            if any(d < 0 or d % 2 for d in diff):
                raise InputError(f"the model maps a {roi} window to {tuple(out.shape[2:])}: tiled inference needs "
                                 f"an output equal to the input or smaller by the same border on both sides")
            border = tuple(d // 2 for d in diff)
        if any(r - 2 * b < 1 for r, b in zip(roi, border)):
            raise InputError(f"border {border} leaves no output in a {roi} window")
        self._borders[roi] = border
        return border

    def window_for(self, spatial: tuple[int, ...], channels: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window, border) for an image of this spatial size: ``roi_size``, grown when ``max_roi_size`` is set."""
        roi = self.roi_for(len(spatial))
        border = self.border_for(roi, channels)
        if self.config.max_roi_size is None:
            return roi, border
        if self.predictor.spatial_fixed is not None:
            raise InputError(f"max_roi_size needs a model with dynamic spatial dims; this one takes only "
                             f"{self.predictor.spatial_fixed}")
        max_roi = _per_axis(self.config.max_roi_size, len(spatial), "max_roi_size")
        grown = grown_roi(spatial, roi, max_roi, border, float(self.config.overlap), self.config.roi_step,
                          int(self.config.roi_offset))
        return grown, border  # the border of a valid-conv network does not depend on the window size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = self._check_image(image)
        spatial = image.shape[1:]
        roi, border = self.window_for(spatial, image.shape[0])
        tile = tuple(r - 2 * b for r, b in zip(roi, border))  # output tile size
        starts = list(itertools.product(*(window_starts(s, t, self.config.overlap) for s, t in zip(spatial, tile))))
        padded = self._pad(image, border, tile)
        blend = self.config.blend != "constant" and len(starts) > 1  # one window: its weights cancel out
        weights = importance_map(tile, self.config.blend if blend else "constant", float(self.config.sigma_scale))
        out_size = tuple(max(s, t) for s, t in zip(spatial, tile))
        out, wsum = None, np.zeros(out_size, np.float32)
        for i in range(0, len(starts), self.config.batch_size):
            chunk = starts[i:i + self.config.batch_size]
            batch = np.stack([padded[(slice(None),) + tuple(slice(p, p + r) for p, r in zip(s, roi))]
                              for s in chunk])  # (B, C, *roi)
            pred = self._check_pred(self.predictor(batch), roi, tile)  # (B, K, *tile)
            if out is None:
                out = np.zeros((pred.shape[1],) + out_size, np.float32)
            if blend:
                in_place = self.predictor.fresh_output and pred.flags.writeable
                pred = np.multiply(pred, weights, out=pred if in_place else None)
            for s, p in zip(chunk, pred):
                region = tuple(slice(a, a + t) for a, t in zip(s, tile))
                out[(slice(None),) + region] += p
                wsum[region] += weights
            if self.progress is not None:
                self.progress(min(i + len(chunk), len(starts)), len(starts))
        np.divide(out, wsum, out=out)
        return out[(slice(None),) + tuple(slice(0, s) for s in spatial)]

    def _check_image(self, image) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise InputError(f"image must be a numpy.ndarray of shape (C, *spatial), got {type(image).__name__}")
        if image.ndim not in (3, 4):
            raise InputError(f"image must have shape (C, H, W) or (C, D, H, W), got {image.shape}")
        if 0 in image.shape:
            raise InputError(f"image is empty: shape {image.shape}")
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise InputError(f"image must be real-valued, got dtype {image.dtype}")
        return image.astype(np.float32, copy=False)

    def _pad(self, image: np.ndarray, border, tile) -> np.ndarray:
        """Mirror (or constant) padding: ``border`` on both sides plus whatever a too-small image lacks."""
        widths = [(0, 0)] + [(b, b + max(0, t - s)) for s, b, t in zip(image.shape[1:], border, tile)]
        if all(w == (0, 0) for w in widths):
            return image
        if self.config.pad_mode == "constant":
            return np.pad(image, widths, mode="constant", constant_values=self.config.pad_value)
        return np.pad(image, widths, mode=self.config.pad_mode)

    @staticmethod
    def _check_pred(pred: np.ndarray, roi, tile) -> np.ndarray:
        if tuple(pred.shape[2:]) != tile:
            raise InputError(f"the model returned spatial size {tuple(pred.shape[2:])} for a {roi} window; "
                             f"expected {tile} (input minus twice the border): set TileConfig(border=...)")
        if not np.all(np.isfinite(pred)):
            raise InputError("the model returned NaN or inf for a window; check the input's intensity range")
        return pred.astype(np.float32, copy=False)
