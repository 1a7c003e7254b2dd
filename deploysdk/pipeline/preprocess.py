"""Preprocessing a model declares about itself, applied in numpy on the clinical host.

Training records how images were prepared (voxel spacing, intensity normalisation, how to read the outputs, label
names) and export embeds it in the ONNX file as ``sdk.preprocessing`` (JSON). The pipeline reads it back with
``Preprocessing.from_metadata(runtime.metadata)`` so a model is run on new studies exactly as it was trained; a model
without it needs the spec passed explicitly.

Intensity modes (``intensity``):
- ``"window"``: a CT window (``window=(center, width)`` in HU) mapped to [0, 1], values outside clipped;
- ``"zscore"``: per-image (x - mean) / std (over ``nonzero`` voxels only when asked, for skull-stripped MR);
- ``"minmax"``: per-image percentiles ``clip_percentiles`` mapped to [0, 1];
- ``"scale"``: (x - offset) / divisor with ``scale=(offset, divisor)``, the same for every image;
- ``"none"``: as is.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import InputError

__all__ = ["Preprocessing", "METADATA_KEY", "normalize_intensity"]

METADATA_KEY = "sdk.preprocessing"
INTENSITY_MODES = ("none", "window", "zscore", "minmax", "scale")
OUTPUT_KINDS = ("softmax", "sigmoid", "logits", "probabilities")


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input and how its output reads (spacing in mm, array axis order)."""

    spacing: tuple[float, ...] | None = None
    intensity: str = "none"
    window: tuple[float, float] | None = None
    scale: tuple[float, float] | None = None
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    nonzero: bool = False
    output: str = "softmax"
    labels: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.intensity not in INTENSITY_MODES:
            raise InputError(f"intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")
        if self.output not in OUTPUT_KINDS:
            raise InputError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if self.intensity == "window" and (self.window is None or len(self.window) != 2 or self.window[1] <= 0):
            raise InputError(f"intensity 'window' needs window=(center, width) with width > 0, got {self.window}")
        if self.intensity == "scale" and (self.scale is None or len(self.scale) != 2 or self.scale[1] == 0):
            raise InputError(f"intensity 'scale' needs scale=(offset, divisor) with divisor != 0, got {self.scale}")
        lo, hi = self.clip_percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles}")
        if self.spacing is not None and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise InputError(f"spacing must be 2 or 3 positive numbers (mm), got {self.spacing}")

    # --- metadata round trip ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown preprocessing fields {sorted(unknown)}; expected some of {sorted(known)}")
        d = dict(d)
        for key in ("spacing", "window", "scale", "clip_percentiles"):
            if d.get(key) is not None:
                d[key] = tuple(float(v) for v in d[key])
        d["labels"] = {int(k): str(v) for k, v in (d.get("labels") or {}).items()}
        return cls(**d)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> "Preprocessing | None":
        """The spec embedded at export (``sdk.preprocessing``), or None if the model has none."""
        raw = metadata.get(METADATA_KEY)
        if raw is None:
            return None
        try:
            return cls.from_dict(json.loads(raw))
        except (ValueError, TypeError) as e:
            raise InputError(f"the model's {METADATA_KEY} metadata is not a valid preprocessing spec: {e}") from e

    def to_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: json.dumps(self.to_dict())}

    # --- application ------------------------------------------------------------------------------------------
    def normalize(self, array: np.ndarray) -> np.ndarray:
        return normalize_intensity(array, self)


def normalize_intensity(array: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Apply ``spec.intensity`` to one image/volume (any shape); returns float32."""
    return _normalize(np.asarray(array, dtype=np.float32), spec).astype(np.float32, copy=False)


def _normalize(x: np.ndarray, spec: Preprocessing) -> np.ndarray:
    if spec.intensity == "window":
        center, width = spec.window
        return np.clip((x - (center - width / 2.0)) / width, 0.0, 1.0)
    if spec.intensity == "scale":
        offset, divisor = spec.scale
        return (x - offset) / divisor
    if spec.intensity == "zscore":
        values = x[x != 0] if spec.nonzero else x
        if values.size == 0:
            return np.zeros_like(x)
        std = float(values.std())
        return (x - float(values.mean())) / (std if std > 0 else 1.0)
    if spec.intensity == "minmax":
        lo, hi = np.percentile(x, spec.clip_percentiles)
        if hi <= lo:
            return np.zeros_like(x)
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return x
