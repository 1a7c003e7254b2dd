"""Segmentation metrics: Dice and IoU per class from label maps, (95 %) Hausdorff distance with voxel spacing.

Conventions (fixed here, so numbers are comparable across runs):

- Dice/IoU of a class absent from both prediction and target ("empty vs empty") is ``empty_value``, 1.0 by
  default (nothing to find, nothing found: perfect agreement); pass ``empty_value=float("nan")`` to leave such
  classes out of a ``nanmean`` instead. A class present in only one of the two scores 0.
- Hausdorff distances are between the surfaces (mask voxels with a 1-connected background neighbour; voxels on the
  image border count as surface) in the units of ``spacing``. Two empty masks give NaN (no surfaces to compare);
  exactly one empty mask gives ``inf`` (no finite distance reaches an absent structure).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ._convert import as_array, as_labels, as_mask, same_shape, spacing_for

__all__ = ["dice_score", "iou_score", "hausdorff_distance", "hausdorff_distance_95", "surface_distances"]

HD_METHODS = ("union", "max")


def _class_counts(pred: Any, target: Any, num_classes: int | None):
    """Per-class |P ∩ T|, |P|, |T| as float arrays ``(K,)``, and whether the inputs were boolean masks."""
    p, t = as_array(pred, "pred"), as_array(target, "target")
    both_bool = p.dtype == bool and t.dtype == bool
    p, t = as_labels(p, "pred"), as_labels(t, "target")
    same_shape(p, t, "pred", "target")
    seen = max(int(p.max(initial=0)), int(t.max(initial=0))) + 1
    if num_classes is None:
        k = max(seen, 2)
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    elif seen > num_classes:
        raise ValueError(f"label {seen - 1} found but num_classes={num_classes} (labels must be in [0, {num_classes}))")
    else:
        k = int(num_classes)
    p, t = p.ravel(), t.ravel()
    inter, psum, tsum = (np.bincount(v, minlength=k).astype(np.float64) for v in (t[p == t], p, t))
    return inter, psum, tsum, both_bool


def _finish(num: np.ndarray, den: np.ndarray, empty_value: float, both_bool: bool):
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(den > 0, num / np.maximum(den, 1e-300), float(empty_value))
    return float(score[1]) if both_bool else score


def dice_score(pred: Any, target: Any, *, num_classes: int | None = None, empty_value: float = 1.0):
    """Dice ``2|P ∩ T| / (|P| + |T|)`` per class of two label maps of equal shape (2D, 3D, any rank).

    Returns an array ``(K,)`` indexed by label (0 = background); ``K`` is ``num_classes`` or the largest label + 1
    (at least 2). Two boolean masks give the foreground Dice as a float. See the module docstring for empty classes.
    """
    inter, psum, tsum, both_bool = _class_counts(pred, target, num_classes)
    return _finish(2.0 * inter, psum + tsum, empty_value, both_bool)


def iou_score(pred: Any, target: Any, *, num_classes: int | None = None, empty_value: float = 1.0):
    """Intersection over union (Jaccard) ``|P ∩ T| / |P ∪ T|`` per class; same conventions as ``dice_score``."""
    inter, psum, tsum, both_bool = _class_counts(pred, target, num_classes)
    return _finish(inter, psum + tsum - inter, empty_value, both_bool)


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their joint bounding box plus one voxel (exact: every surface voxel stays inside)."""
    coords = np.nonzero(a | b)
    box = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    return a[box], b[box]


def surface_distances(pred: Any, target: Any, *, spacing: float | Sequence[float] | None = None):
    """Distances from every surface voxel of ``pred`` to the surface of ``target``, and back, in spacing units.

    Returns ``(d_pred_to_target, d_target_to_pred)``, two 1-D arrays (empty when that mask is empty; ``inf`` when
    the other mask is empty).
    """
    a, b = as_mask(pred, "pred"), as_mask(target, "target")
    same_shape(a, b, "pred", "target")
    if a.ndim < 1:
        raise ValueError("pred and target must be masks with at least one dimension (2D or 3D images)")
    sampling = spacing_for(spacing, a.ndim)
    if not a.any() or not b.any():
        inf_a = np.full(int(_surface(a).sum()), np.inf)
        inf_b = np.full(int(_surface(b).sum()), np.inf)
        return inf_a, inf_b
    a, b = _crop_to_union(a, b)
    sa, sb = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)  # distance of every voxel to b's surface
    to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    return to_b[sa], to_a[sb]


def hausdorff_distance(pred: Any, target: Any, *, spacing: float | Sequence[float] | None = None,
                       percentile: float = 100.0, method: str = "union") -> float:
    """Symmetric (percentile) Hausdorff distance between the surfaces of two binary masks, 2D or 3D.

    ``spacing``: voxel size per axis (e.g. millimetres; one number for isotropic). ``percentile=100`` is the
    classic Hausdorff distance. ``method="union"``: the percentile of the union of both directed distance sets
    (medpy's ``hd95``); ``method="max"``: the larger of the two directed percentiles (MONAI's
    ``compute_hausdorff_distance(percentile=...)``). The two agree at percentile 100.
    """
    if method not in HD_METHODS:
        raise ValueError(f"method must be one of {HD_METHODS}, got {method!r}")
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    d_ab, d_ba = surface_distances(pred, target, spacing=spacing)
    if d_ab.size == 0 and d_ba.size == 0:
        return float("nan")
    if d_ab.size == 0 or d_ba.size == 0:
        return float("inf")
    if method == "union":
        return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def hausdorff_distance_95(pred: Any, target: Any, *, spacing: float | Sequence[float] | None = None,
                          method: str = "union") -> float:
    """The 95th-percentile Hausdorff distance (HD95), robust to a few outlying surface voxels."""
    return hausdorff_distance(pred, target, spacing=spacing, percentile=95.0, method=method)
