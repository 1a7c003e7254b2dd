"""Lazy imports of the optional readers: ``import deploysdk.io`` loads numpy only, and a missing reader is an error
that names the pip package at the point where it is needed (a host that reads only NIfTI never needs pydicom)."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

_PIP = {"pydicom": "pydicom", "nibabel": "nibabel", "PIL": "pillow", "scipy": "scipy"}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the pip package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip = _PIP.get(module.split(".")[0], module)
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{pip}', which is not installed here: pip install {pip}") from exc


def pydicom() -> ModuleType:
    return require("pydicom", "reading or writing DICOM")


def nibabel() -> ModuleType:
    return require("nibabel", "reading or writing NIfTI")


def pil_image() -> ModuleType:
    return require("PIL.Image", "reading PNG/JPEG/TIFF images")


def ndimage() -> ModuleType:
    return require("scipy.ndimage", "resampling")
