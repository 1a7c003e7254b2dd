"""From the network's score maps to a clean label map and its volumes, with numpy and scipy only (no torch).

    labels = to_labels(scores, kind="logits")               # scores (K, *S) from TiledInferer -> (*S) uint8
    labels = largest_component(labels)                      # drop islands: one connected piece per label
    label_volumes(labels, spacing_mm=(2.5, 0.7, 0.7), names={1: "liver", 2: "tumour"})
    # {"liver": {"label": 1, "voxels": 812345, "ml": 995.0}, "tumour": {...}}

``kind`` says what the K channels hold, because the decision rule depends on it:
  * "logits": raw network outputs. K > 1: mutually exclusive classes (softmax; argmax). K == 1: binary (sigmoid;
    foreground where sigmoid(x) > threshold).
  * "softmax": probabilities of K > 1 mutually exclusive classes, channel 0 the background (argmax).
  * "sigmoid": independent per-channel probabilities (multi-label, no background channel): channel c is label
    c + 1 where its probability exceeds ``threshold``; where several do, the most probable wins.
  * "sigmoid_logits": as "sigmoid", but raw logits (compared with logit(threshold), no sigmoid computed).
Everything works on 2D ``(y, x)`` and 3D ``(z, y, x)`` maps alike.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = ["KINDS", "probabilities", "to_labels", "largest_component", "fill_holes", "label_volumes"]

KINDS = ("logits", "softmax", "sigmoid", "sigmoid_logits")


# --- checks -------------------------------------------------------------------------------------------------------
def _check_scores(scores, kind: str, threshold: float) -> np.ndarray:
    if not isinstance(scores, np.ndarray):
        raise InputError(f"scores must be a numpy array (K, *spatial), got {type(scores).__name__}")
    if scores.ndim not in (3, 4):
        raise InputError(f"scores must be (K, y, x) or (K, z, y, x) with a channel axis first, got shape "
                         f"{scores.shape}")
    if scores.dtype.kind != "f":
        raise InputError(f"scores must be floating point, got {scores.dtype.name}")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "softmax" and scores.shape[0] == 1:
        raise InputError("kind='softmax' with one channel: a softmax over one channel is always 1; a single-channel "
                         "probability map is kind='sigmoid' (or 'logits' for raw scores)")
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"threshold is a probability and must be in (0, 1), got {threshold}")
    if not np.isfinite(scores).all():  # argmax of NaN is silently channel of the NaN: refuse instead
        raise InputError(f"scores hold {int((~np.isfinite(scores)).sum())} NaN/inf values")
    return scores


def _check_labels(labels) -> np.ndarray:
    if not isinstance(labels, np.ndarray):
        raise InputError(f"labels must be a numpy integer array, got {type(labels).__name__}")
    if labels.ndim not in (2, 3):
        raise InputError(f"labels must be 2D (y, x) or 3D (z, y, x), got shape {labels.shape}")
    if labels.dtype.kind not in "uib":
        raise InputError(f"labels must be an integer (or bool) array, got {labels.dtype.name}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputError(f"labels must be >= 0 (0 is background), got minimum {labels.min()}")
    return labels


def _boxes(labels: np.ndarray) -> list:
    """Bounding box of each label value 1..max (None where absent); bool maps are viewed as uint8, not copied."""
    return ndimage.find_objects(labels.view(np.uint8) if labels.dtype == bool else labels)


def _label_dtype(n_labels: int) -> np.dtype:
    return np.dtype(np.uint8 if n_labels < 256 else np.uint16 if n_labels < 65536 else np.int32)


# --- scores -> probabilities / labels -----------------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0, keepdims=True))  # shift by the max: no overflow for large logits
    e /= e.sum(axis=0, keepdims=True)
    return e


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 0.5 * (1 + tanh(x / 2)) is sigmoid without exp overflow for large |x|
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False)


def probabilities(scores: np.ndarray, *, kind: str = "logits") -> np.ndarray:
    """Per-channel probabilities ``(K, *S)`` float32: softmax/sigmoid of logits, the input itself otherwise."""
    scores = _check_scores(scores, kind, 0.5).astype(np.float32, copy=False)
    if kind == "logits":
        return _softmax(scores) if scores.shape[0] > 1 else _sigmoid(scores)
    if kind == "sigmoid_logits":
        return _sigmoid(scores)
    return scores.copy()


def to_labels(scores: np.ndarray, *, kind: str = "logits", threshold: float = 0.5) -> np.ndarray:
    """Integer label map ``(*S)`` (uint8 for up to 255 labels, 0 = background) from scores ``(K, *S)``.

    Exclusive classes (K > 1, kind "logits"/"softmax") take the argmax; ``threshold`` does not apply to them.
    Binary and multi-label maps are thresholded (see the module docstring for the channel-to-label rule).
    """
    scores = _check_scores(scores, kind, threshold)
    k = scores.shape[0]
    if k > 1 and kind in ("logits", "softmax"):
        return scores.argmax(axis=0).astype(_label_dtype(k - 1))
    # logits are compared with logit(threshold): the same decision as sigmoid(x) > threshold, without the sigmoid
    logit_input = kind in ("logits", "sigmoid_logits")
    cut = math.log(threshold / (1.0 - threshold)) if logit_input else threshold
    if k == 1:
        return (scores[0] > cut).astype(np.uint8)
    best = scores.argmax(axis=0)  # the most probable channel, where several pass the threshold
    passed = np.take_along_axis(scores, best[None], axis=0)[0] > cut
    return np.where(passed, best + 1, 0).astype(_label_dtype(k))


# --- clean-up -----------------------------------------------------------------------------------------------------
def _structure(ndim: int, connectivity: int | None):
    c = ndim if connectivity is None else connectivity
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= c <= ndim:
        raise InputError(f"connectivity must be an int in 1..{ndim} (1: faces only, {ndim}: faces, edges and "
                         f"corners) or None for {ndim}, got {connectivity!r}")
    return ndimage.generate_binary_structure(ndim, int(c))


def _which(labels: np.ndarray, label) -> list[int]:
    present = [int(v) for v in np.unique(labels) if v != 0]
    if isinstance(label, str):
        if label != "all":
            raise InputError(f"label must be 'all', None, an int or a list of ints, got {label!r}")
        return present
    wanted = [label] if isinstance(label, (int, np.integer)) else list(label)
    bad = [v for v in wanted if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0]
    if bad:
        raise InputError(f"labels to process must be positive ints (0 is background), got {bad}")
    return [int(v) for v in wanted if int(v) in present]


def _keep_largest(mask: np.ndarray, structure) -> np.ndarray:
    """The largest connected piece of a boolean mask (ties: the first in raster order, so results are stable)."""
    comp, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask
    sizes = np.bincount(comp.ravel())[1:]
    return comp == (int(np.argmax(sizes)) + 1)


def largest_component(labels: np.ndarray, label: int | Sequence[int] | str | None = "all", *,
                      connectivity: int | None = None) -> np.ndarray:
    """Keep the largest connected component of each label; other pieces become background (0). Returns a copy.

    ``label``: "all" (each label separately), an int or list of ints (only those; others untouched), or None (the
    foreground as one mask: the largest foreground piece keeps all its labels, so a tumour touching its organ
    survives while islands go). ``connectivity``: 1 = faces only (6-neighbourhood in 3D, 4 in 2D) ... ndim = faces,
    edges and corners (26 / 8); None = ndim, as MONAI's KeepLargestConnectedComponent.
    """
    labels = _check_labels(labels)
    structure = _structure(labels.ndim, connectivity)
    out = labels.copy()
    if label is None:
        fg = labels != 0
        out[fg & ~_keep_largest(fg, structure)] = 0
        return out
    boxes = _boxes(labels)
    for v in _which(labels, label):
        box = boxes[v - 1]
        mask = labels[box] == v  # only inside the label's bounding box: cheap for small structures in big volumes
        view = out[box]
        view[mask & ~_keep_largest(mask, structure)] = 0
    return out


def fill_holes(labels: np.ndarray, label: int | Sequence[int] | str = "all", *, connectivity: int = 1) -> np.ndarray:
    """Fill background enclosed by a label with that label (voxels of other labels inside stay). Returns a copy.

    A hole is a region not connected to the bounding box's border through non-label voxels (``connectivity`` of
    the background: 1 = faces only, the scipy default). In 3D a hole must be closed in 3D, not per slice.
    """
    labels = _check_labels(labels)
    if label is None:
        raise InputError("fill_holes needs 'all', an int or a list of ints, got None")
    structure = _structure(labels.ndim, connectivity)
    out = labels.copy()
    boxes = _boxes(labels)
    for v in _which(labels, label):
        view = out[boxes[v - 1]]
        filled = ndimage.binary_fill_holes(view == v, structure=structure)
        view[filled & (view == 0)] = v
    return out


# --- measurements -------------------------------------------------------------------------------------------------
def _names_map(names) -> dict[int, str]:
    if names is None:
        return {}
    if isinstance(names, Mapping):
        out = {int(k): str(v) for k, v in names.items()}
    elif isinstance(names, (list, tuple)):
        out = {i: str(n) for i, n in enumerate(names)}  # index = label; names[0] is the background
    else:
        raise InputError(f"names must be a dict label -> name or a list indexed by label, got {type(names).__name__}")
    dup = sorted({n for n in out.values() if list(out.values()).count(n) > 1})
    if dup:
        raise InputError(f"names must be unique (they become report keys), got duplicates {dup}")
    return out


def _voxel_mm3(spacing_mm, ndim: int) -> tuple[float | None, float]:
    """(mm^3 per voxel or None, mm^2 per pixel in 2D); a 2D map is a volume only with a slice thickness."""
    try:
        sp = [float(s) for s in spacing_mm]
    except TypeError:
        raise InputError(f"spacing_mm must be a sequence of {ndim} voxel sizes in mm, got {spacing_mm!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing_mm must be positive and finite, got {sp}")
    if ndim == 3 and len(sp) == 3:
        return math.prod(sp), math.prod(sp[1:])
    if ndim == 2 and len(sp) in (2, 3):  # (row, col) or (row, col, slice thickness)
        return (math.prod(sp) if len(sp) == 3 else None), sp[0] * sp[1]
    want = "3 (z, y, x)" if ndim == 3 else "2 (y, x) or 3 (y, x, slice thickness)"
    raise InputError(f"spacing_mm for a {ndim}D label map needs {want} values, got {len(sp)}: {sp}")


def label_volumes(labels: np.ndarray, spacing_mm: Sequence[float], names=None) -> dict[str, dict]:
    """Voxel count and volume (mL; 1 mL = 1000 mm^3) of every label present and every named label (0 if absent).

    ``names``: {label: name} or a list indexed by label; unnamed labels are called ``label_<n>``; background (0) is
    left out unless named. 2D maps report ``mm2`` too, and ``ml`` only when ``spacing_mm`` gives a slice thickness
    as its third value (else None). Keys are ordered by label.
    """
    labels = _check_labels(labels)
    mm3, mm2 = _voxel_mm3(spacing_mm, labels.ndim)
    named = _names_map(names)
    counts = np.bincount(labels.ravel().astype(np.int64, copy=False)) if labels.size else np.zeros(1, np.int64)
    wanted = sorted({v for v in range(1, len(counts)) if counts[v]} | set(named))
    out: dict[str, dict] = {}
    for v in wanted:
        n = int(counts[v]) if v < len(counts) else 0
        entry = {"label": v, "voxels": n, "ml": None if mm3 is None else n * mm3 / 1000.0}
        if labels.ndim == 2:
            entry["mm2"] = n * mm2
        out[named.get(v, f"label_{v}")] = entry
    return out
