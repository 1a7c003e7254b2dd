"""Decode DICOM pixel data, saying exactly why not when it cannot: truncated data, or a compressed transfer syntax
that no installed decoder reads (the message names the syntax and the pip packages that would decode it)."""
from __future__ import annotations

import warnings

import numpy as np

from ._dicom_header import FileProblem, has_pixels

# Transfer syntax UID prefix/UID -> pip packages with a decoder (pure-Python or binary wheels).
_LIBJPEG = "pip install pylibjpeg pylibjpeg-libjpeg (or: pip install python-gdcm)"
_OPENJPEG = "pip install pylibjpeg pylibjpeg-openjpeg (or: pip install python-gdcm)"
DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG, "1.2.840.10008.1.2.4.51": _LIBJPEG,
    "1.2.840.10008.1.2.4.57": _LIBJPEG, "1.2.840.10008.1.2.4.70": _LIBJPEG,
    "1.2.840.10008.1.2.4.80": _LIBJPEG + " or pip install pyjpegls",
    "1.2.840.10008.1.2.4.81": _LIBJPEG + " or pip install pyjpegls",
    "1.2.840.10008.1.2.4.90": _OPENJPEG, "1.2.840.10008.1.2.4.91": _OPENJPEG,
    "1.2.840.10008.1.2.4.201": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "numpy (built into pydicom) or pip install pylibjpeg pylibjpeg-rle",
}


def transfer_syntax(ds):
    """The file's TransferSyntaxUID as a pydicom UID (Implicit VR Little Endian when the file meta lacks it)."""
    from pydicom.uid import UID, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(uid) if uid else ImplicitVRLittleEndian


def syntax_label(uid) -> str:
    name = getattr(uid, "name", "") or ""
    return f"'{name}' ({uid})" if name and name != str(uid) else f"{uid}"


def decoder_problem(uid) -> str | None:
    """Why pixel data in ``uid`` cannot be decoded here, or None if a decoder is installed (or it is native)."""
    if not getattr(uid, "is_compressed", False) or str(uid) == "1.2.840.10008.1.2.1.99":  # deflated: zlib
        return None
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.x: no registry to ask; decoding is attempted and its error reported
        return None
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        hint = DECODER_HINTS.get(str(uid), "no known Python decoder")
        return f"unsupported transfer syntax {syntax_label(uid)}: pydicom has no decoder for it ({hint})"
    if decoder.is_available:
        return None
    hint = DECODER_HINTS.get(str(uid)) or "; ".join(decoder.missing_dependencies)
    return (f"pixel data is compressed with transfer syntax {syntax_label(uid)}, which no installed decoder reads: "
            f"{hint}")


def decode(ds, path: str) -> np.ndarray:
    """Stored pixel values as (frames, rows, cols[, samples]); FileProblem with the reason when that fails."""
    if not has_pixels(ds):
        raise FileProblem("no pixel data (PixelData tag missing)")
    uid = transfer_syntax(ds)
    problem = decoder_problem(uid)
    if problem:
        raise FileProblem(problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # decoders raise assorted types for damaged data
        what = "truncated or malformed pixel data" if not getattr(uid, "is_compressed", False) else \
            f"compressed pixel data ({syntax_label(uid)}) could not be decoded"
        raise FileProblem(f"{what}: {type(exc).__name__}: {exc}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[None]
    expected = (frames, int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    if arr.shape != expected:
        raise FileProblem(f"decoded pixel array has shape {arr.shape}, the header says {expected}")
    return arr
