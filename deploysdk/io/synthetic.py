"""Write a valid multi-file DICOM series from a numpy volume: the demo and the tests make their studies with it.

Stored values are int16 with RescaleSlope/Intercept, so values on the grid ``intercept + slope * n`` (whole HU with
the defaults) survive the round trip exactly. Geometry follows ``deploysdk.io.volume``: ``array[k]`` is written at
``origin + k * dz * normal`` with ``normal = row x column`` of ``orientation``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._atomic import atomic_path
from . import _deps

__all__ = ["write_dicom_series", "SOP_CLASSES"]

#: Storage SOP class per modality; anything else is written as Secondary Capture.
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "PT": "1.2.840.10008.5.1.4.1.1.128"}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class _Ids:
    study: str
    series: str
    frame_of_reference: str


def _validated(volume_array, spacing, origin, orientation):
    arr = np.asarray(volume_array, dtype=np.float64)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"volume_array must be (z, y, x) with at least one slice, got shape {arr.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be (dz, dy, dx) in mm, all > 0, got {spacing}")
    origin = np.asarray(origin, dtype=np.float64)
    ori = np.asarray(orientation, dtype=np.float64)
    if origin.shape != (3,) or ori.shape != (6,):
        raise ValueError(f"origin must have 3 values and orientation 6 (row cosines, column cosines), "
                         f"got {origin.shape} and {ori.shape}")
    row, col = ori[:3], ori[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-4 or abs(np.linalg.norm(col) - 1) > 1e-4 or abs(row @ col) > 1e-4:
        raise ValueError(f"orientation must be two orthonormal direction cosines, got {tuple(ori)}")
    return arr, spacing, origin, row, col


def _stored(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    raw = np.rint((arr - intercept) / slope)
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    if raw.min() < lo or raw.max() > hi:
        raise ValueError(f"values {arr.min():g}..{arr.max():g} do not fit int16 with slope {slope:g} and intercept "
                         f"{intercept:g}; choose another rescale_slope/rescale_intercept")
    return raw.astype(np.int16)


def _base_dataset(ids: _Ids, modality, description, patient_id, series_number, window):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES.get(modality.upper(), _SECONDARY_CAPTURE)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ids.study, ids.series
    ds.FrameOfReferenceUID = ids.frame_of_reference
    ds.PatientName, ds.PatientID = "SYNTHETIC^PHANTOM", patient_id
    ds.StudyID, ds.StudyDate, ds.StudyTime = "1", "20000101", "120000"
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality.upper(), description, int(series_number)
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    return ds


def _slice_dataset(base, k, position, raw2d, spacing, geometry, uid_entropy):
    import copy

    from pydicom.uid import generate_uid

    ds = copy.deepcopy(base)
    row, col, slope, intercept, instance = geometry
    ds.SOPInstanceUID = generate_uid(entropy_srcs=None if uid_entropy is None else [uid_entropy, "sop", str(k)])
    ds.InstanceNumber = int(instance)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
    ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[2]:g}"]  # (row spacing = dy, column spacing = dx)
    ds.SliceThickness = f"{spacing[0]:g}"
    ds.SliceLocation = f"{float(position @ np.cross(row, col)):.6f}"
    ds.Rows, ds.Columns = raw2d.shape
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if ds.Modality == "CT":
        ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(raw2d, dtype="<i2").tobytes()
    return ds


def _save(pydicom, ds, path: str, transfer_syntax: str, raw2d: np.ndarray) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, RLELossless

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    legacy = int(pydicom.__version__.split(".")[0]) < 3
    if legacy:  # pydicom 2.x writes the encoding these say; 3.x takes it from the transfer syntax
        ds.is_little_endian, ds.is_implicit_VR = True, False
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, raw2d)
    elif transfer_syntax != ExplicitVRLittleEndian:
        raise ValueError(f"transfer_syntax must be Explicit VR Little Endian ({ExplicitVRLittleEndian}) or RLE "
                         f"Lossless ({RLELossless}), got {transfer_syntax}")
    with atomic_path(path, suffix=".dcm") as tmp:
        if legacy:
            ds.save_as(tmp, write_like_original=False)
        else:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)


def write_dicom_series(volume_array, folder, *, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                       orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), modality: str = "CT",
                       rescale_slope: float = 1.0, rescale_intercept: float = -1024.0,
                       series_description: str = "synthetic", series_number: int = 1, patient_id: str = "SYNTH0001",
                       study_uid: str | None = None, series_uid: str | None = None, window=(40.0, 400.0),
                       reverse: bool = False, prefix: str = "IM", transfer_syntax: str | None = None,
                       uid_seed: str | None = None) -> list[str]:
    """Write ``volume_array`` (z, y, x) as one DICOM file per slice in ``folder``; return the paths in slice order.

    ``spacing`` is (dz, dy, dx) mm, ``origin`` the LPS centre of voxel (0, 0, 0), ``orientation`` the six
    ImageOrientationPatient cosines (row direction, column direction). ``reverse`` numbers the files (InstanceNumber
    and name) from the last slice to the first, as head-first scanners often do. ``transfer_syntax`` is Explicit VR
    Little Endian (default) or RLE Lossless. ``uid_seed`` makes every UID a deterministic function of it (else random,
    as in practice); pass ``study_uid`` to put several series in one study.
    """
    pydicom = _deps.pydicom()
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr, spacing, origin, row, col = _validated(volume_array, spacing, origin, orientation)
    slope, intercept = float(rescale_slope), float(rescale_intercept)
    if slope == 0:
        raise ValueError("rescale_slope must be non-zero")
    raw = _stored(arr, slope, intercept)  # (z, y, x) int16

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=None if uid_seed is None else [uid_seed, tag])

    ids = _Ids(study_uid or uid("study"), series_uid or uid("series"), uid("frame-of-reference"))
    base = _base_dataset(ids, modality, series_description, patient_id, series_number, window)
    normal, n = np.cross(row, col), raw.shape[0]
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(n):
        instance = n - k if reverse else k + 1
        position = origin + k * spacing[0] * normal
        ds = _slice_dataset(base, k, position, raw[k], spacing, (row, col, slope, intercept, instance),
                            None if uid_seed is None else f"{uid_seed}/{ids.series}")
        path = os.path.join(os.fspath(folder), f"{prefix}{instance:04d}.dcm")
        _save(pydicom, ds, path, transfer_syntax or ExplicitVRLittleEndian, raw[k])
        paths.append(path)
    return paths
