"""NIfTI input and output with the geometry kept: a DICOM volume written here and read back maps every voxel to
the same patient point.

NIfTI stores voxels x-fastest with an (i, j, k) -> RAS affine; ``Volume`` holds (z, y, x) arrays with an
(i, j, k) -> LPS affine. Reading transposes the first three axes and applies ``LPS_TO_RAS`` (its own inverse);
writing does the reverse. Extra NIfTI dimensions (time, channels) stay last: ``(z, y, x, c)``.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from .._atomic import atomic_path
from ..errors import UnreadableFileError
from . import _deps
from .volume import LPS_TO_RAS, Volume, spacing_from_affine

__all__ = ["read_nifti", "write_nifti", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _to_array_order(data: np.ndarray) -> np.ndarray:
    """(x, y[, z], ...) -> (z, y, x, ...) (or (y, x) for 2D)."""
    spatial = min(data.ndim, 3)
    return np.transpose(data, tuple(range(spatial))[::-1] + tuple(range(spatial, data.ndim)))


def read_nifti(path, *, dtype=np.float32) -> Volume:
    """Read .nii/.nii.gz into a Volume (LPS affine, (z, y, x) array); ``dtype=None`` keeps the stored integer type
    when the file has no intensity scaling (masks stay masks), otherwise values are scaled floats of ``dtype``."""
    nib = _deps.nibabel()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UnreadableFileError(path, "no such file")
    try:
        img = _load(nib, path)
        header = img.header
        slope, inter = header.get_slope_inter()
        scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
        want = None if dtype is None else np.dtype(dtype)
        if want is not None and want.kind == "f":
            data = img.get_fdata(dtype=want)
        else:
            data = np.asanyarray(img.dataobj)  # stored type, or float64 when the header scales intensities
            data = data.astype(want if want is not None else np.float32) if want is not None or scaled else data
        affine_ras = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib/gzip errors... on damaged files
        raise UnreadableFileError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:  # (x, y, z, 1): a 3D image saved with a unit time axis
        data = data[..., 0]
    if data.ndim < 2:
        raise UnreadableFileError(path, f"NIfTI data has shape {data.shape}; expected 2D or 3D")
    array = _to_array_order(data)
    affine = LPS_TO_RAS @ affine_ras
    ndim = min(data.ndim, 3)
    meta = {"description": _text(header.get("descrip")), "sform_code": int(header["sform_code"]),
            "qform_code": int(header["qform_code"]), "rescale": (float(slope or 1.0), float(inter or 0.0)),
            "warnings": []}
    if data.ndim > 3:
        meta["channel_axis"] = -1
        if data.ndim > 4:
            raise UnreadableFileError(path, f"NIfTI data has shape {data.shape}; at most one extra dimension "
                                            f"(channels/time) is supported")
    return Volume(array, affine, spacing_from_affine(affine, ndim), "", meta, [path], [])


def _load(nib, path: str):
    """nib.load, which needs a NIfTI suffix; files without one (sniffed as NIfTI) are parsed from their bytes."""
    if path.lower().endswith(NIFTI_SUFFIXES):
        return nib.load(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    klass = nib.Nifti2Image if data[344:348] in (b"n+2\x00", b"ni2\x00") else nib.Nifti1Image
    return klass.from_bytes(data)


def _text(value) -> str:
    raw = value.item() if hasattr(value, "item") else value
    return raw.decode("latin-1").rstrip("\x00") if isinstance(raw, bytes) else str(raw or "")


def _disk_dtype(array: np.ndarray, dtype) -> np.dtype:
    """Integer masks as uint8 (0..255) or int16, other integers as int32, floats as float32, unless told."""
    if dtype is not None:
        return np.dtype(dtype)
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if array.dtype.kind in "iu":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)
        if lo >= -32768 and hi <= 32767:
            return np.dtype(np.int16)
        return np.dtype(np.int32)
    return np.dtype(np.float32)


def write_nifti(array, affine, path, *, dtype=None, description: str = "") -> str:
    """Write ``array`` ((y, x), (z, y, x) or (z, y, x, c)) with its LPS ``affine`` to .nii/.nii.gz, atomically.

    Integer and boolean arrays (masks) are stored as uint8 when they fit, else int16/int32; floats as float32
    (``dtype`` overrides). Both the sform and the qform are set (code 1, scanner), units mm. Returns the path.
    """
    nib = _deps.nibabel()
    path = os.fspath(path)
    if not path.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"NIfTI path must end with .nii or .nii.gz, got {path!r}")
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4 (voxel (i, j, k) -> LPS mm), got shape {affine.shape}")
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"array must be (y, x), (z, y, x) or (z, y, x, c), got shape {array.shape}")
    disk = _disk_dtype(array, dtype)
    data = _to_array_order(array).astype(disk, copy=False)  # (x, y[, z][, c])
    affine_ras = LPS_TO_RAS @ affine
    img = nib.Nifti1Image(data, affine_ras)
    img.header.set_data_dtype(disk)
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    if description:
        img.header["descrip"] = description.encode("latin-1", "replace")[:79]
    payload = img.to_bytes()
    if path.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=1, mtime=0)  # nibabel's level; mtime=0: reproducible
    with atomic_path(path, suffix=".nii.gz" if path.endswith(".gz") else ".nii") as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
    return path
