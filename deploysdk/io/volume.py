"""The one image type every reader returns: voxels plus the geometry that places them in the patient.

Conventions (the same for DICOM, NIfTI, PNG and NumPy input):

* ``array`` is indexed ``array[k, j, i]`` for a volume, shape ``(z, y, x)``, and ``array[j, i]`` for an image,
  shape ``(y, x)``. Colour images keep their channels last, ``(y, x, 3)`` (``meta["channel_axis"] == -1``).
* ``affine`` is a 4x4 matrix taking the voxel index **in the order (i, j, k, 1) = (x index, y index, z index, 1)**,
  i.e. the *reverse* of the array axis order, to a point in patient coordinates in millimetres in DICOM's **LPS**
  frame (+x towards the patient's Left, +y Posterior, +z Superior/head)::

      [x_mm, y_mm, z_mm, 1] = affine @ [i, j, k, 1]      where the voxel is array[k, j, i]

  Column 0 is the step between neighbouring columns (DICOM row direction x column spacing), column 1 the step
  between rows, column 2 the step between slices, column 3 the centre of voxel (0, 0, 0). For 2D images k is 0.
  NIfTI stores RAS (+x Right, +y Anterior): the NIfTI reader and writer flip the first two rows
  (``LPS_TO_RAS @ affine``) so that geometry survives a DICOM -> NIfTI -> Volume round trip.
* ``spacing`` is in **array axis order**, ``(dz, dy, dx)`` or ``(dy, dx)``, in mm: the lengths of affine columns
  2, 1, 0, so that ``spacing[a]`` belongs to ``array.shape[a]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Volume", "SkippedFile", "LPS_TO_RAS", "affine_from_spacing", "spacing_from_affine"]

#: Multiplying either way converts LPS <-> RAS (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SkippedFile(NamedTuple):
    """A file (or one frame of it, named ``file[frame N]``) that was left out of a volume, and why."""

    path: str
    reason: str


@dataclass(eq=False)  # identity comparison: field-wise == on numpy arrays has no single truth value
class Volume:
    """Voxels (float32 after any rescale) + geometry + where they came from and what was left out.

    ``meta`` holds what readers found: ``series_uid``, ``description``, ``patient_id``, ``study_uid``,
    ``window`` (centre, width), ``rescale`` (slope, intercept), ``warnings`` (list of str) and reader-specific keys.
    ``sources`` lists the files used, in slice order; ``skipped`` lists every file that was not, with the reason.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    modality: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.array, np.ndarray):
            raise TypeError(f"Volume.array must be a numpy array, got {type(self.array).__name__}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {self.affine.shape}")
        if self.spatial_ndim not in (2, 3):
            raise ValueError(f"Volume.array must be (y, x) or (z, y, x) (channels last with meta['channel_axis']=-1),"
                             f" got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != self.spatial_ndim:
            raise ValueError(f"Volume.spacing must have one value per spatial axis of {self.spatial_shape}, "
                             f"got {self.spacing}")

    @property
    def channel_axis(self) -> int | None:
        return self.meta.get("channel_axis")

    @property
    def spatial_ndim(self) -> int:
        return self.array.ndim - (self.channel_axis is not None)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[:self.spatial_ndim])

    @property
    def warnings(self) -> list[str]:
        return self.meta.setdefault("warnings", [])

    def voxel_to_patient(self, index) -> np.ndarray:
        """Patient LPS mm of array index/indices given in ARRAY order ((k, j, i) or (j, i)); shape (..., 3)."""
        idx = np.asarray(index, dtype=np.float64)[..., ::-1]  # array order -> (i, j[, k])
        ijk = np.zeros(idx.shape[:-1] + (4,))
        ijk[..., :idx.shape[-1]] = idx
        ijk[..., 3] = 1.0
        return (ijk @ self.affine.T)[..., :3]

    def patient_to_voxel(self, point) -> np.ndarray:
        """Continuous array index (array order) of patient LPS mm point(s); inverse of ``voxel_to_patient``."""
        p = np.asarray(point, dtype=np.float64)
        hom = np.concatenate([p, np.ones(p.shape[:-1] + (1,))], axis=-1)
        ijk = hom @ np.linalg.inv(self.affine).T
        return ijk[..., :self.spatial_ndim][..., ::-1]


def affine_from_spacing(spacing, origin=(0.0, 0.0, 0.0), directions=None) -> np.ndarray:
    """Affine for ``spacing`` in array order and unit ``directions`` (3x3, columns for i, j, k; default identity)."""
    sp = [float(s) for s in spacing][::-1] + [1.0] * (3 - len(spacing))  # (dx, dy[, dz])
    d = np.eye(3) if directions is None else np.asarray(directions, dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = d * np.asarray(sp)[None, :]
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return aff


def spacing_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Voxel spacing in array order from the lengths of the affine's columns."""
    lengths = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)  # (dx, dy, dz)
    return tuple(float(v) for v in lengths[:ndim][::-1])
