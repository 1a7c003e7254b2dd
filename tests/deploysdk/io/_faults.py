"""Ways to damage a synthetic DICOM study, as real studies arrive damaged (used by the DICOM tests)."""
from __future__ import annotations

import os

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid


def save(ds, path) -> str:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return str(path)


def truncate(path, keep_fraction: float = 0.5, *, drop_bytes: int | None = None) -> None:
    """Cut the end of the file (inside the pixel data unless ``keep_fraction`` is small)."""
    data = open(path, "rb").read()
    keep = len(data) - drop_bytes if drop_bytes is not None else int(len(data) * keep_fraction)
    with open(path, "wb") as f:
        f.write(data[:keep])


def garbage(path, n: int = 700, seed: int = 0) -> None:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(seed).bytes(n))


def duplicate(path, new_path, instance: int) -> str:
    """Same position and pixels, another SOP instance (a re-sent slice)."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = instance
    return save(ds, new_path)


def remove_tag(path, keyword: str) -> None:
    ds = pydicom.dcmread(path)
    delattr(ds, keyword)
    save(ds, path)


def compressed_garbage(path, transfer_syntax: str) -> None:
    """Mark the pixel data as compressed with ``transfer_syntax`` and store bytes no decoder can make sense of."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + os.urandom(64) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    save(ds, path)
