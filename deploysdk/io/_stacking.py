"""From a bag of DICOM frames to an ordered stack with one affine: majority checks, sorting along the slice normal,
duplicate removal, slice spacing and its uniformity. Every frame left out gets a reason; nothing is dropped silently."""
from __future__ import annotations

from collections import Counter

import numpy as np

from ._dicom_header import SliceHeader
from .volume import SkippedFile

#: Two slices closer than this along the normal (mm) are the same position.
DUPLICATE_TOL_MM = 1e-3


def _majority(slices, key, describe, problems):
    """Keep the slices whose ``key`` is the most common one; record the rest with ``describe(value, majority)``."""
    counts = Counter(key(s) for s in slices)
    if len(counts) <= 1:
        return slices
    best = counts.most_common(1)[0][0]
    keep = []
    for s in slices:
        if key(s) == best:
            keep.append(s)
        else:
            problems.append(SkippedFile(s.name, describe(key(s), best)))
    return keep


def _rounded(values, decimals):
    return None if values is None else tuple(np.round(np.asarray(values, dtype=np.float64), decimals).tolist())


def consistent(slices: list[SliceHeader], problems: list[SkippedFile]) -> list[SliceHeader]:
    """Drop frames whose size, samples, orientation or pixel spacing differ from the series majority."""
    slices = _majority(slices, lambda s: (s.rows, s.cols),
                       lambda v, m: f"Rows x Columns = {v[0]} x {v[1]} differs from the series majority "
                                    f"{m[0]} x {m[1]}",
                       problems)
    slices = _majority(slices, lambda s: s.samples,
                       lambda v, m: f"SamplesPerPixel = {v} differs from the series majority {m}", problems)
    with_geometry = [s for s in slices if s.position is not None and s.orientation is not None]
    if with_geometry and 2 * len(with_geometry) >= len(slices):
        for s in slices:
            if s.position is None or s.orientation is None:
                tag = "ImagePositionPatient" if s.position is None else "ImageOrientationPatient"
                problems.append(SkippedFile(s.name, f"missing {tag} (the other slices of the series have it)"))
        slices = with_geometry
        slices = _majority(slices, lambda s: _rounded(s.orientation, 3),
                           lambda v, m: f"ImageOrientationPatient {list(v)} differs from the series majority {list(m)}",
                           problems)
    return _majority(slices, lambda s: _rounded(s.pixel_spacing, 4),
                     lambda v, m: f"PixelSpacing {v} differs from the series majority {m}", problems)


def order(slices: list[SliceHeader], problems: list[SkippedFile], warnings: list[str]):
    """Sort along the normal (or by InstanceNumber when there is no geometry) and drop duplicate positions.

    Returns (sorted slices, positions along the sort axis in mm or None when ordered by InstanceNumber).
    """
    if not slices:
        return [], None
    has_geometry = all(s.position is not None and s.orientation is not None for s in slices)
    if has_geometry:
        normal = slices[0].normal
        keyed = sorted(slices, key=lambda s: (float(s.position @ normal), _instance(s), s.name))
        proj = [float(s.position @ normal) for s in keyed]
        what = "position {:.3f} mm along the slice normal"
    else:
        if len(slices) > 1:
            warnings.append("slices have no ImagePositionPatient/ImageOrientationPatient: ordered by InstanceNumber, "
                            "geometry assumed (axial, origin 0)")
        for s in [s for s in slices if s.instance is None and s.frame is None and len(slices) > 1]:
            problems.append(SkippedFile(s.name, "no ImagePositionPatient and no InstanceNumber: cannot place it"))
        placeable = [s for s in slices if s.instance is not None or s.frame is not None or len(slices) == 1]
        keyed = sorted(placeable, key=lambda s: (_instance(s), s.frame or 0, s.name))
        proj = [float(_instance(s)) + (s.frame or 0) for s in keyed]
        what = "InstanceNumber/frame {:g}"
    kept, kept_proj = [], []
    for s, p in zip(keyed, proj):
        if kept_proj and abs(p - kept_proj[-1]) < DUPLICATE_TOL_MM:
            problems.append(SkippedFile(s.name, f"duplicate {what.format(p)} (same as {kept[-1].name}, kept that one)"))
            continue
        kept.append(s)
        kept_proj.append(p)
    return kept, (np.array(kept_proj) if has_geometry else None)


def _instance(s: SliceHeader) -> float:
    return float(s.instance) if s.instance is not None else float("inf")


def geometry(slices: list[SliceHeader], proj, thickness: float | None, warnings: list[str]):
    """(affine 4x4 LPS, spacing (dz, dy, dx), non-uniformity message or None) of the ordered stack."""
    first = slices[0]
    if first.pixel_spacing is None:
        warnings.append("no PixelSpacing: in-plane spacing assumed 1 mm")
        dy, dx = 1.0, 1.0
    else:
        dy, dx = first.pixel_spacing
    if proj is None:
        row, col, origin = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3)
    else:
        row, col, origin = first.orientation[:3], first.orientation[3:], first.position
    normal = np.cross(row, col)
    message = None
    if proj is not None and len(slices) > 1:
        gaps = np.diff(proj)
        dz = float(np.median(gaps))
        step = (slices[-1].position - first.position) / (len(slices) - 1)
        if np.max(np.abs(gaps - dz)) > 1e-2 * dz + DUPLICATE_TOL_MM:
            worst = int(np.argmax(np.abs(gaps - dz)))
            message = (f"non-uniform slice spacing: gaps {gaps.min():.4g}..{gaps.max():.4g} mm (median {dz:.4g}); "
                       f"the largest deviation is between {slices[worst].name} and {slices[worst + 1].name}")
            step = normal * dz + (step - normal * (step @ normal))  # keep any shear, use the median gap
        tilt = np.degrees(np.arccos(np.clip(step @ normal / np.linalg.norm(step), -1, 1)))
        if tilt > 0.5:
            warnings.append(f"slices are sheared by {tilt:.2f} degrees from the normal (gantry tilt?): "
                            f"the affine keeps the shear")
    else:
        dz = float(thickness) if thickness else 1.0
        step = normal * dz
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = row * dx, col * dy, step, origin
    return affine, (abs(dz), float(dy), float(dx)), message
