"""What one pipeline run returns: the mask in the study's own geometry, what it measured, and an account of the run.

``Result.report()`` is the JSON report the pipeline writes beside the mask (and the HTTP service returns): the model
(name, file checksum, backend), the input (every file used, every file skipped with its reason), label volumes in
mL, timings per stage and where the outputs went. Only numpy here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io import SkippedFile, Volume

__all__ = ["Result", "ModelInfo", "STAGES"]

#: Stages timed by the pipeline, in order.
STAGES = ("read", "preprocess", "infer", "postprocess", "write")


@dataclass(frozen=True)
class ModelInfo:
    """Which model ran, and on what: enough to reproduce or audit a result."""

    name: str
    path: str
    sha256: str | None
    backend: str
    providers: tuple[str, ...]
    spatial_dims: int
    preprocessing: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "backend": self.backend,
                "providers": list(self.providers), "spatial_dims": self.spatial_dims,
                "preprocessing": self.preprocessing}


@dataclass(eq=False)
class Result:
    """One study through the pipeline.

    ``labels``: integer label map in the SOURCE geometry (the shape of ``volume.spatial_shape``, placed by
    ``volume.affine``). ``probabilities``: ``(K, *source shape)`` float32 when asked for, else None.
    ``volumes``: per label name ``{"label", "voxels", "ml"}`` (``ml`` None for a 2D image without slice thickness).
    ``inputs_used``/``inputs_skipped``: every input file, either used (in slice order) or skipped with the reason.
    ``timings``: seconds per stage (``STAGES``). ``outputs``: kind -> path of each file written.
    """

    labels: np.ndarray
    volume: Volume
    volumes: dict[str, dict]
    model: ModelInfo
    input_kind: str
    source: str
    inputs_used: list[str] = field(default_factory=list)
    inputs_skipped: list[SkippedFile] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    probabilities: np.ndarray | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    model_geometry: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.timings.values()))

    def input_section(self) -> dict[str, Any]:
        v = self.volume
        return {"source": self.source, "kind": self.input_kind, "modality": v.modality,
                "shape": list(v.spatial_shape), "spacing_mm": list(v.spacing), "affine_lps": v.affine.tolist(),
                "series_uid": v.meta.get("series_uid"), "description": v.meta.get("description"),
                "files_used": len(self.inputs_used), "files_skipped": len(self.inputs_skipped)}

    def report(self) -> dict[str, Any]:
        """The JSON-ready report (see the module docstring); the pipeline writes exactly this as report.json."""
        return {"model": self.model.to_dict(), "input": self.input_section(),
                "inputs": {"used": list(self.inputs_used),
                           "skipped": [{"path": p, "reason": r} for p, r in self.inputs_skipped]},
                "labels": self.volumes, "model_geometry": self.model_geometry,
                "timings_s": {k: round(float(t), 6) for k, t in self.timings.items()},
                "total_s": round(self.total_seconds, 6),
                "outputs": {k: os.path.basename(p) for k, p in self.outputs.items()},
                "warnings": list(self.warnings)}

    def summary(self) -> str:
        """A few lines for a terminal: model, input, volumes, skipped files, timings, outputs."""
        m, v = self.model, self.volume
        lines = [f"model:   {m.name} (sha256 {str(m.sha256)[:12]}) on {m.backend} {list(m.providers)}",
                 f"input:   {self.source} ({self.input_kind}, {v.modality or 'no modality'}, shape "
                 f"{v.spatial_shape}, spacing {tuple(round(s, 4) for s in v.spacing)} mm)",
                 f"files:   {len(self.inputs_used)} used, {len(self.inputs_skipped)} skipped"]
        lines += [f"  skipped {p}: {r}" for p, r in self.inputs_skipped[:20]]
        if len(self.inputs_skipped) > 20:
            lines.append(f"  ... and {len(self.inputs_skipped) - 20} more (see the report)")
        for name, entry in self.volumes.items():
            ml = "n/a" if entry.get("ml") is None else f"{entry['ml']:.3f} mL"
            lines.append(f"label:   {name} (={entry['label']}): {entry['voxels']} voxels, {ml}")
        lines.append("timings: " + ", ".join(f"{k} {t * 1e3:.1f} ms" for k, t in self.timings.items()))
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"wrote:   {p}" for p in self.outputs.values()]
        return "\n".join(lines)
