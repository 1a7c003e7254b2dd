"""Pictures of a 2-D latent space, drawn with Pillow (no plotting library needed): the codes of a set of images as a
scatter plot coloured by class, and the images the decoder generates from a grid of codes.

Why: with a 2-D code (``conv_ae2d``) the encoder's feature space can be seen directly -- classes that form separate
clusters are what a classifier on the codes can separate -- and decoding a grid shows the decoder as a generator,
and how smoothly it moves between digits. Files are written atomically (temporary name, then rename).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from deploysdk._atomic import atomic_path

__all__ = ["PALETTE", "save_code_scatter", "interpolation_codes", "decode_codes", "save_interpolation_grid"]

# Ten distinguishable colours (the "tab10" qualitative palette), cycled for more classes.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _array(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    a = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return a


def _save_png(img: Image.Image, path) -> str:
    path = os.fspath(path)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return path


# --- scatter plot of codes ------------------------------------------------------------------------------------------
def _scale(values: np.ndarray, lo: float, hi: float, size: int, margin: int, flip: bool) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    pos = (values - lo) / span * (size - 2 * margin)
    return margin + ((size - 2 * margin) - pos if flip else pos)


def save_code_scatter(codes, labels, path, *, size: int = 480, radius: int = 2, title: str | None = None) -> str:
    """Draw 2-D ``codes`` ``(N, 2)`` as points coloured by integer ``labels`` ``(N,)`` (None: one colour, no legend)
    and write the PNG to ``path``; returns the path.

    Axes span the codes' range (printed at the corners), y pointing up as in a plot.
    """
    z = _array(codes, "codes")
    if z.ndim != 2 or z.shape[1] != 2 or len(z) == 0:
        raise ValueError(f"codes must have shape (N, 2) with N >= 1 (a 2-D latent space), got {z.shape}")
    y = np.zeros(len(z), dtype=np.int64) if labels is None else _array(labels, "labels").astype(np.int64)
    if y.shape != (len(z),):
        raise ValueError(f"labels must have shape ({len(z)},) to match the codes, got {y.shape}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        raise ValueError(f"size must be an integer >= 64 pixels, got {size!r}")
    margin, legend = 36, 0 if labels is None else 70
    img = Image.new("RGB", (size + legend, size), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([margin, margin, size - margin, size - margin], outline=(0, 0, 0))
    (x0, y0), (x1, y1) = z.min(axis=0), z.max(axis=0)
    px = _scale(z[:, 0], x0, x1, size, margin, flip=False)
    py = _scale(z[:, 1], y0, y1, size, margin, flip=True)
    for cx, cy, label in zip(px, py, y):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=PALETTE[label % len(PALETTE)])
    draw.text((margin, size - margin + 4), f"{x0:.3g}", fill=(0, 0, 0))
    draw.text((size - margin - 30, size - margin + 4), f"{x1:.3g}", fill=(0, 0, 0))
    draw.text((2, size - margin - 12), f"{y0:.3g}", fill=(0, 0, 0))
    draw.text((2, margin), f"{y1:.3g}", fill=(0, 0, 0))
    if title:
        draw.text((margin, 10), title, fill=(0, 0, 0))
    if labels is not None:
        for row, label in enumerate(np.unique(y)):
            top = margin + 16 * row
            draw.rectangle([size + 4, top, size + 14, top + 10], fill=PALETTE[label % len(PALETTE)])
            draw.text((size + 20, top - 1), str(label), fill=(0, 0, 0))
    return _save_png(img, path)


# --- decoded grid ---------------------------------------------------------------------------------------------------
def interpolation_codes(z_a, z_b, steps: int = 10, *, mode: str | None = None) -> np.ndarray:
    """Codes between ``z_a`` and ``z_b`` (both ``(d,)``).

    ``mode="grid"`` (default for d = 2): a ``steps x steps`` grid over the rectangle with corners ``z_a`` and ``z_b``,
    ``(steps * steps, 2)`` row-major: the first coordinate goes from ``z_a`` to ``z_b`` along each row, the second
    from ``z_b`` (top row) to ``z_a`` (bottom row), so the tiled picture is oriented like the scatter plot (y up).
    ``mode="line"`` (default otherwise): ``steps`` points on the segment, ``(steps, d)``.
    """
    a, b = _array(z_a, "z_a").ravel(), _array(z_b, "z_b").ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"z_a and z_b must be codes of the same length, got shapes {a.shape} and {b.shape}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    mode = mode or ("grid" if a.size == 2 else "line")
    t = np.linspace(0.0, 1.0, steps)
    if mode == "line":
        return a[None, :] + t[:, None] * (b - a)[None, :]
    if mode != "grid" or a.size != 2:
        raise ValueError(f"mode must be 'line', or 'grid' for 2-D codes; got mode={mode!r} for {a.size}-D codes")
    gx, gy = np.meshgrid(a[0] + t * (b[0] - a[0]), b[1] + t * (a[1] - b[1]))  # (steps, steps) each
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def decode_codes(decoder: Callable, codes: np.ndarray) -> np.ndarray:
    """Run ``decoder`` (a model with ``decode``, or any callable on a ``(N, d)`` tensor) without gradients, in eval
    mode (restored afterwards); returns the first channel of each image, ``(N, H, W)``."""
    fn = getattr(decoder, "decode", decoder)
    module = decoder if isinstance(decoder, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            out = fn(torch.as_tensor(codes, dtype=torch.float32))
    finally:
        if module is not None:
            module.train(was_training)
    images = _array(out, "decoded images")
    if images.ndim != 4:
        raise ValueError(f"the decoder must return images (N, C, H, W), got shape {images.shape}")
    return images[:, 0]


def save_interpolation_grid(decoder: Callable, z_a, z_b, path, steps: int = 10, *,
                            mode: str | None = None, value_range: tuple[float, float] | None = None,
                            zoom: int = 2) -> np.ndarray:
    """Decode the codes of :func:`interpolation_codes` and tile them into a PNG (``steps x steps`` or one row).

    Grey levels map ``value_range`` (default: the decoded images' min..max) to black..white; ``zoom`` enlarges each
    pixel. Returns the decoded images, ``(steps, steps, H, W)`` for a grid or ``(steps, H, W)`` for a line.
    """
    if isinstance(zoom, bool) or not isinstance(zoom, int) or zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom!r}")
    codes = interpolation_codes(z_a, z_b, steps, mode=mode)
    images = decode_codes(decoder, codes)  # (n, H, W)
    rows = steps if len(codes) == steps * steps else 1  # a grid has steps**2 codes, a line steps (steps >= 2)
    lo, hi = value_range if value_range is not None else (float(images.min()), float(images.max()))
    grey = np.clip((images - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    h, w = grey.shape[1:]
    tiles = grey.reshape(rows, -1, h, w)
    mosaic = tiles.transpose(0, 2, 1, 3).reshape(rows * h, tiles.shape[1] * w)
    img = Image.fromarray(np.round(mosaic * 255).astype(np.uint8))
    if zoom > 1:
        img = img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST)
    _save_png(img, path)
    return images.reshape(rows, -1, h, w) if rows > 1 else images
