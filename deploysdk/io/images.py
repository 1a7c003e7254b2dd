"""Read one image file of any supported kind into a ``Volume``; ``read_any`` also takes a DICOM folder.

Formats, chosen by suffix and, for unknown suffixes, by the file's first bytes:

* PNG/JPEG/TIFF/BMP/GIF (Pillow): grayscale (8/16-bit, float) -> ``(y, x)``. Colour -> ``(y, x, 3)`` RGB with
  ``meta["channel_axis"] = -1``; an alpha channel is dropped (``meta["alpha_dropped"]``); palette images are
  expanded to RGB; an RGB file whose three channels are identical is returned as grayscale ``(y, x)``
  (``meta["collapsed_gray_rgb"]``). ``gray=True`` converts colour to luminance (ITU-R 601-2, Pillow's "L" weights).
  Pixel size is unknown for these formats: spacing 1 and an identity affine (``meta["spacing_known"] = False``).
* .npy/.npz: the array as stored ((y, x) or (z, y, x)); an .npz needs one array, or one named ``image``, and may
  carry ``spacing`` (array order) or ``affine`` (LPS) arrays.
* .nii/.nii.gz: ``read_nifti``. .dcm or a DICOM signature: ``read_dicom_file``.

Every failure raises ``UnreadableFileError(path, reason)``.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import UnreadableFileError
from . import _deps
from .dicom import read_dicom_file, read_dicom_series
from .nifti import NIFTI_SUFFIXES, read_nifti
from .volume import Volume, affine_from_spacing, spacing_from_affine

__all__ = ["read_image", "read_any", "IMAGE_SUFFIXES"]

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
IMAGE_SUFFIXES = PIL_SUFFIXES + (".npy", ".npz", ".dcm", ".dicom") + NIFTI_SUFFIXES
_LUMA = np.array([299, 587, 114], dtype=np.float32) / 1000.0  # ITU-R 601-2, as Pillow's convert("L")


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(352)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8")):
        return "pil"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00") or head.startswith(b"\x1f\x8b"):
        return "nifti"
    return "dicom"  # DICOM files without the preamble exist; the DICOM reader says if it is not one either


def _kind(path: str) -> str:
    low = path.lower()
    if low.endswith(PIL_SUFFIXES):
        return "pil"
    if low.endswith(NIFTI_SUFFIXES):
        return "nifti"
    for suffix, kind in ((".npy", "npy"), (".npz", "npz"), (".dcm", "dicom"), (".dicom", "dicom")):
        if low.endswith(suffix):
            return kind
    return _sniff(path)


def _pil_array(img, gray: bool, meta: dict) -> np.ndarray:
    """(y, x) or (y, x, 3) array of a loaded Pillow image, following the module's channel rules."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        meta["palette_expanded"] = True
    if img.mode in ("RGBA", "LA", "PA"):
        meta["alpha_dropped"] = True
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    if img.mode == "CMYK" or img.mode == "YCbCr":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    arr = arr.astype(np.float32)
    if arr.ndim == 3:
        if gray:
            return arr[..., :3] @ _LUMA
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            meta["collapsed_gray_rgb"] = True
            return arr[..., 0]
        meta["channel_axis"] = -1
    return arr


def _read_pil(path: str, gray: bool) -> Volume:
    Image = _deps.pil_image()
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, inside the try
            meta = {"pil_mode": img.mode, "spacing_known": False, "warnings": []}
            if getattr(img, "n_frames", 1) > 1:
                meta["warnings"].append(f"{img.n_frames} frames in the file; only the first was read")
            arr = _pil_array(img, gray, meta)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow: UnidentifiedImageError is an OSError
        raise UnreadableFileError(path, f"not a readable image ({type(exc).__name__}: {exc})") from None
    return Volume(arr, np.eye(4), (1.0, 1.0), "", meta, [path], [])


def _read_numpy(path: str, kind: str) -> Volume:
    meta = {"spacing_known": False, "warnings": []}
    try:
        loaded = np.load(path, allow_pickle=False)
        if kind == "npz":
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
            images = [k for k in arrays if k not in ("spacing", "affine")]
            key = "image" if "image" in arrays else (images[0] if len(images) == 1 else None)
            if key is None:
                raise ValueError(f"holds arrays {sorted(arrays)}; expected one array, or one named 'image'")
            arr = arrays[key]
        else:
            arr, arrays = loaded, {}
    except (OSError, ValueError, EOFError) as exc:
        raise UnreadableFileError(path, f"not a readable {kind} file ({exc})") from None
    if arr.ndim not in (2, 3) or arr.dtype.kind not in "biuf":
        raise UnreadableFileError(path, f"array of shape {arr.shape} and dtype {arr.dtype}; expected a (y, x) or "
                                        f"(z, y, x) numeric array")
    if "affine" in arrays:
        affine = np.asarray(arrays["affine"], dtype=np.float64)
        if affine.shape != (4, 4):
            raise UnreadableFileError(path, f"'affine' has shape {affine.shape}; expected (4, 4)")
        spacing, meta["spacing_known"] = spacing_from_affine(affine, arr.ndim), True
    elif "spacing" in arrays:
        spacing = tuple(float(s) for s in np.ravel(arrays["spacing"]))
        if len(spacing) != arr.ndim or min(spacing) <= 0:
            raise UnreadableFileError(path, f"'spacing' {spacing} must hold {arr.ndim} positive values (array order)")
        affine, meta["spacing_known"] = affine_from_spacing(spacing), True
    else:
        spacing, affine = (1.0,) * arr.ndim, np.eye(4)
    return Volume(arr.astype(np.float32), affine, spacing, "", meta, [path], [])


def read_image(path, *, gray: bool = False) -> Volume:
    """Read one file (PNG/JPEG/TIFF/BMP, .npy/.npz, NIfTI, single DICOM) into a float32 Volume.

    ``gray=True`` turns colour images into luminance (otherwise they are (y, x, 3)). Raises UnreadableFileError
    naming the file and the reason (missing, empty, corrupt, truncated, wrong kind of array).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UnreadableFileError(path, "is a folder; read_image reads one file (use read_any for a DICOM folder)")
    if not os.path.isfile(path):
        raise UnreadableFileError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise UnreadableFileError(path, "empty file")
    kind = _kind(path)
    if kind == "pil":
        return _read_pil(path, gray)
    if kind in ("npy", "npz"):
        return _read_numpy(path, kind)
    if kind == "nifti":
        return read_nifti(path)
    volume = read_dicom_file(path)
    if gray and volume.channel_axis is not None:
        volume.array = volume.array[..., :3] @ _LUMA
        volume.meta.pop("channel_axis")
    return volume


def read_any(path, **kwargs) -> Volume:
    """A folder or list of files -> ``read_dicom_series(path, **kwargs)``; a file -> ``read_image(path, **kwargs)``."""
    if isinstance(path, (list, tuple)) or os.path.isdir(os.fspath(path)):
        return read_dicom_series(path, **kwargs)
    return read_image(path, **kwargs)
