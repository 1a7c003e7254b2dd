"""Built-in datasets by name, for ``trainsdk train --data NAME`` and scripts: ``load_builtin("phantoms", n=32)``."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

from .digits import load_digits
from .lesions import make_lesion_classification
from .phantoms import make_phantoms

__all__ = ["BuiltinDataset", "BUILTIN_DATASETS", "UnknownDatasetError", "list_builtin", "load_builtin"]


class UnknownDatasetError(KeyError):
    """A built-in dataset name that does not exist; the message lists the close matches and all names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    loader: Callable
    task: str  # "classification" | "segmentation"
    description: str


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    entry.name: entry for entry in (
        BuiltinDataset("digits", load_digits, "classification",
                       "scikit-learn's handwritten digits (1,797 8x8 images, 10 classes), resized; a DigitsSplit"),
        BuiltinDataset("lesions", make_lesion_classification, "classification",
                       "synthetic cyst / metastasis / hemangioma images with lesion and organ masks; a LesionSet"),
        BuiltinDataset("phantoms", make_phantoms, "segmentation",
                       "synthetic body/organ/lesion phantoms with label masks, 2D or 3D; a PhantomSet"),
    )
}


def list_builtin() -> list[str]:
    return sorted(BUILTIN_DATASETS)


def load_builtin(name: str, **kwargs):
    """Generate (or load) the built-in dataset ``name`` with the loader's keyword arguments.

    An unknown name raises ``UnknownDatasetError`` (a KeyError) with the close matches; an unknown keyword
    ``TypeError`` with the accepted ones, so a CLI can pass user options straight through.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    if name not in BUILTIN_DATASETS:
        close = difflib.get_close_matches(name, list(BUILTIN_DATASETS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownDatasetError(f"unknown built-in dataset {name!r}{hint} (available: {', '.join(list_builtin())})")
    entry = BUILTIN_DATASETS[name]
    accepted = list(inspect.signature(entry.loader).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"load_builtin({name!r}) got unexpected argument(s) {unknown}; accepted: {accepted}")
    return entry.loader(**kwargs)
