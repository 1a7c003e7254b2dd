"""A study in, a mask and a report out, in the study's own geometry: the clinical pipeline, on numpy + an engine.

    pipe = Pipeline.from_model("liver.onnx", backend="auto", device="cpu")   # preprocessing from the model
    result = pipe("study/DICOM/", output_dir="out/")      # or a NIfTI/PNG/DICOM file, an array, a Volume
    result.labels            # (z, y, x) uint8 on the source voxels
    result.volumes           # {"liver": {"label": 1, "voxels": 81234, "ml": 995.1}}
    result.inputs_skipped    # every file that was not used, with the reason

Stages (each timed): read (DICOM series by ``series_rule``, NIfTI, image, array) -> preprocess (resample to the
model's spacing, intensity normalisation, channels) -> infer (tiled: ``TiledInferer``; a 2D model on a 3D volume
runs slice by slice; ``tile=None`` runs each image whole) -> postprocess (labels, largest component, hole filling,
nearest-neighbour resampling back to the source grid, volumes in mL) -> write (NIfTI mask with the source affine,
DICOM SEG for a DICOM series, PNG overlay, JSON report).

What the model declares about itself is used: ``sdk.preprocessing`` (spacing, intensity, output kind, label names)
and ``sdk.input_contract`` (window size of a dynamic-size model, accepted sizes, valid-conv border). A model without
``sdk.preprocessing`` needs ``preprocessing=`` (a clear error otherwise).

Thread-safe: a call keeps its state in locals; the runtime (ONNX Runtime sessions are) and the tiler (its only
shared state is a read-only weight cache) are shared. Outputs are written into a hidden staging folder inside
``output_dir`` and moved into place only when all of them are complete, the report last; a failed run leaves no
output files. No torch import here (the torch backend imports it only when asked for).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .._atomic import sha256_file
from ..errors import DeploySDKError, InputError, SeriesError
from ..io import (SeriesRule, SkippedFile, Volume, read_dicom_series, read_image, resample_to_reference,
                  resample_to_spacing, scan_dicom, write_nifti)
from ..runtime import Runtime
from ..runtime.base import input_contract
from . import postprocess as post
from .preprocess import METADATA_KEY, Preprocessing, normalize_intensity
from .result import ModelInfo, Result
from .tiling import TileConfig, TiledInferer
from .writers import write_dicom_seg, write_overlay_png, write_report

__all__ = ["Pipeline", "PostprocessConfig", "DEFAULT_TILE"]

DEFAULT_TILE = TileConfig()
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class PostprocessConfig:
    """Clean-up of the label map: ``threshold`` for sigmoid outputs, the largest connected piece of each label,
    holes filled; ``connectivity`` as in ``postprocess.largest_component`` (None: faces, edges and corners)."""

    largest_component: bool = False
    fill_holes: bool = False
    threshold: float = 0.5
    connectivity: int | None = None

    def __post_init__(self):
        if not 0.0 < float(self.threshold) < 1.0:
            raise InputError(f"threshold is a probability and must be in (0, 1), got {self.threshold}")


def _score_kind(output: str, channels: int) -> str:
    """The model's declared output (``Preprocessing.output``) as a ``postprocess`` kind: "softmax" and "logits"
    models return raw scores (softmax/argmax over K > 1 classes, sigmoid for one channel), "sigmoid" models
    independent per-channel logits, "probabilities" models values already in [0, 1]."""
    if output == "sigmoid":
        return "sigmoid_logits"
    if output == "probabilities":
        return "softmax" if channels > 1 else "sigmoid"
    return "logits"


def _accepted(size: int, step: int, offset: int, minimum: int) -> int:
    """The smallest ``step * k + offset`` that is >= max(size, minimum)."""
    need = max(size, minimum)
    return step * max(0, -(-(need - offset) // step)) + offset


def _array_volume(array: np.ndarray) -> Volume:
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise InputError(f"an array input must be a numeric (y, x) image or (z, y, x) volume, got {array.dtype} "
                         f"{array.shape}")
    return Volume(array.astype(np.float32), np.eye(4), (1.0,) * array.ndim, "", {"spacing_known": False,
                                                                                  "warnings": []})


def _walk(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files)]
    return out


class Pipeline:
    """Runs one segmentation model on studies; see the module docstring. Build with ``from_model`` (or hand it an
    open ``Runtime``); call it with a path, an array or a ``Volume``."""

    def __init__(self, runtime: Runtime, preprocessing: Preprocessing | Mapping | None = None, *,
                 tile: TileConfig | None = DEFAULT_TILE, postprocess: PostprocessConfig | None = None,
                 series_rule: SeriesRule | None = None, sha256: str | None = None):
        self.runtime = runtime
        self.preprocessing = self._spec(runtime, preprocessing)
        self.postprocess = postprocess or PostprocessConfig()
        if series_rule is not None and not isinstance(series_rule, SeriesRule):
            raise TypeError(f"series_rule must be a deploysdk.io.SeriesRule, got {type(series_rule).__name__}")
        self.series_rule = series_rule
        self.contract = input_contract(runtime.metadata) or {}
        self.spatial_dims, self.channels, self.fixed_size = self._io_geometry()
        self.tile = self._tile_config(tile)
        self._inferer = TiledInferer(runtime, self.tile) if self.tile is not None else None
        path = getattr(runtime, "path", "<model>")
        if sha256 is None and os.path.isfile(path):
            sha256 = sha256_file(path)
        name = runtime.metadata.get("sdk.model_name") or os.path.splitext(os.path.basename(path))[0]
        self.model = ModelInfo(name, path, sha256, runtime.backend, tuple(runtime.providers), self.spatial_dims,
                               self.preprocessing.to_dict())

    @classmethod
    def from_model(cls, path, *, backend: str = "auto", device: str = "cpu",
                   preprocessing: Preprocessing | Mapping | None = None, tile: TileConfig | None = DEFAULT_TILE,
                   largest_component: bool = False, fill_holes: bool = False, threshold: float = 0.5,
                   connectivity: int | None = None, series_rule: SeriesRule | None = None,
                   threads: int | None = None, **runtime_kwargs) -> "Pipeline":
        """Open ``path`` (.onnx, TensorRT engine, or an SDK checkpoint with ``backend="torch"``) on ``backend`` and
        ``device``; the other arguments are those of ``Pipeline`` (postprocessing options spelled out)."""
        post_cfg = PostprocessConfig(largest_component, fill_holes, threshold, connectivity)
        runtime = Runtime(path, backend=backend, device=device or "cpu", threads=threads, **runtime_kwargs)
        try:
            return cls(runtime, preprocessing, tile=tile, postprocess=post_cfg, series_rule=series_rule)
        except BaseException:
            runtime.close()
            raise

    # --- set-up -------------------------------------------------------------------------------------------------
    @staticmethod
    def _spec(runtime, preprocessing) -> Preprocessing:
        if isinstance(preprocessing, Preprocessing):
            return preprocessing
        if isinstance(preprocessing, Mapping):
            return Preprocessing.from_dict(preprocessing)
        if preprocessing is not None:
            raise TypeError(f"preprocessing must be a Preprocessing, a dict or None, got "
                            f"{type(preprocessing).__name__}")
        spec = Preprocessing.from_metadata(runtime.metadata)
        if spec is None:
            raise InputError(f"{getattr(runtime, 'path', 'the model')} carries no '{METADATA_KEY}' metadata (how its "
                             f"input is prepared: spacing, intensity normalisation, output kind); pass "
                             f"preprocessing=Preprocessing(...) or export the model with it")
        return spec

    def _io_geometry(self) -> tuple[int, int, tuple[int, ...] | None]:
        rt = self.runtime
        if len(rt.inputs) != 1 or len(rt.outputs) != 1:
            raise InputError(f"the pipeline runs models with one input and one output; this one has inputs "
                             f"{[s.name for s in rt.inputs]} and outputs {[s.name for s in rt.outputs]}")
        spec_in, spec_out = rt.inputs[0], rt.outputs[0]
        if len(spec_in.shape) not in (4, 5):
            raise InputError(f"the pipeline runs segmentation models taking (N, C, H, W) or (N, C, D, H, W); this "
                             f"one takes {spec_in.describe()}")
        if len(spec_out.shape) != len(spec_in.shape):
            raise InputError(f"the model's output {spec_out.describe()} is not a class map over its input "
                             f"{spec_in.describe()} (a classifier?); the pipeline needs (N, K, *spatial)")
        channels = spec_in.shape[1] or self.contract.get("channels") or 1
        spatial = tuple(spec_in.shape[2:])
        return len(spatial), int(channels), (spatial if None not in spatial else None)

    def _size_rule(self) -> tuple[int, int, int]:
        """(step, offset, minimum) of the spatial sizes the model accepts, from its input contract."""
        c = self.contract
        step = int(c.get("size_step") or c.get("multiple") or 1)
        return step, int(c.get("size_offset") or 0), int(c.get("min_size") or 1)

    def _tile_config(self, tile: TileConfig | None) -> TileConfig | None:
        """Fill what the model's metadata knows: window size of a dynamic model, accepted sizes, output border."""
        if tile is None:
            return None
        if not isinstance(tile, TileConfig):
            raise TypeError(f"tile must be a TileConfig or None (whole images), got {type(tile).__name__}")
        changes = {}
        if tile.roi_size is None and self.fixed_size is None:
            default = self.contract.get("default_size")
            if not default or len(default) != self.spatial_dims:
                raise InputError("the model's input size is dynamic and its metadata holds no sdk.input_contract "
                                 "default_size: pass tile=TileConfig(roi_size=...)")
            changes["roi_size"] = tuple(int(d) for d in default)
        if tile.border == "auto" and self.contract.get("output_border") is not None:
            changes["border"] = int(self.contract["output_border"])
        if tile.max_roi_size is not None and (tile.roi_step, tile.roi_offset) == (1, 0):
            step, offset, _ = self._size_rule()
            changes.update(roi_step=step, roi_offset=offset)
        return dataclasses.replace(tile, **changes) if changes else tile

    # --- the run --------------------------------------------------------------------------------------------------
    def __call__(self, source, output_dir=None, *, probabilities: bool = False) -> Result:
        """Segment ``source`` (DICOM folder or file list, NIfTI/PNG/NumPy/DICOM file, numpy array, ``Volume``);
        with ``output_dir`` also write the outputs there. ``probabilities``: keep per-class probabilities."""
        timings, warnings_ = {}, []
        t = time.perf_counter()
        volume, kind, label, used, skipped = self._read(source)
        timings["read"], t = time.perf_counter() - t, time.perf_counter()
        work, image = self._preprocess(volume, warnings_)
        timings["preprocess"], t = time.perf_counter() - t, time.perf_counter()
        scores = self._infer(image)  # (K, *model grid)
        timings["infer"], t = time.perf_counter() - t, time.perf_counter()
        labels, probs = self._postprocess(scores, work, volume, probabilities)
        names = {k: v for k, v in self.preprocessing.labels.items() if k != 0} or None
        volumes = post.label_volumes(labels, volume.spacing, names)
        timings["postprocess"] = time.perf_counter() - t
        geometry = {"shape": list(work.spatial_shape), "spacing_mm": list(work.spacing),
                    "resampled": work is not volume, "window": list(self._window(image.shape[1:]))}
        warnings_ = list(volume.meta.get("warnings") or []) + warnings_
        result = Result(labels, volume, volumes, self.model, kind, label, used, skipped, timings, probs,
                        warnings=warnings_, model_geometry=geometry)
        if output_dir is not None:
            self._write(result, os.fspath(output_dir))
        return result

    def _read(self, source):
        """(volume, input kind, source label, files used, files skipped with reasons)."""
        if isinstance(source, Volume):
            return source, "volume", "<Volume>", list(source.sources), list(source.skipped)
        if isinstance(source, np.ndarray):
            return _array_volume(source), "array", f"<array {source.shape}>", [], []
        if not isinstance(source, (str, os.PathLike, list, tuple)):
            raise TypeError(f"source must be a path, a list of DICOM files, a numpy array or a Volume, got "
                            f"{type(source).__name__}")
        if isinstance(source, (list, tuple)) or os.path.isdir(os.fspath(source)):
            return self._read_dicom(source)
        path = os.fspath(source)
        volume = read_image(path)
        low = path.lower()
        kind = ("nifti" if low.endswith((".nii", ".nii.gz")) else "numpy" if low.endswith((".npy", ".npz"))
                else "dicom-file" if volume.modality or volume.meta.get("series_uid") else "image")
        return volume, kind, path, [path], []

    def _read_dicom(self, source):
        """One series by ``series_rule``; every other file is accounted for: another series (and why it was not
        chosen), unreadable (the reader's reason), or hidden (not read). An unusable series raises SeriesError
        listing every file."""
        scan = scan_dicom(source)
        items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        every = [f for item in map(os.fspath, items) for f in (_walk(item) if os.path.isdir(item) else [item])]
        try:
            volume = read_dicom_series(scan, self.series_rule)
        except SeriesError as e:
            if not e.problems or not all(os.path.exists(p) for p, _ in e.problems):
                raise  # no series matched: the problems are per series, already complete
            raise SeriesError(e.message, e.problems + self._others(scan, None, every, {p for p, _ in e.problems})) \
                from None
        used = list(dict.fromkeys(s.split("[frame ")[0] for s in volume.sources))
        skipped = list(volume.skipped)
        skipped += self._others(scan, volume.meta.get("series_uid"), every, set(used) | {p for p, _ in skipped})
        label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"{len(items)} files"
        return volume, "dicom-series", label, used, skipped

    def _others(self, scan, selected_uid, every: list[str], seen: set) -> list[SkippedFile]:
        """Files of the series not read (with why the rule passed them over) and files no reader looked at."""
        rule, out, seen = self.series_rule or SeriesRule(), [], set(seen)
        for info in scan:
            if info.series_uid == selected_uid or all(f in seen for f in info.files):
                continue
            why = rule.mismatch(info) or "the rule picks the matching series with the most slices"
            problems = {p: f"; the file itself: {r}" for p, r in info.problems}
            out += [SkippedFile(f, f"in another series, {info.label()}: {why}{problems.get(f, '')}")
                    for f in info.files if f not in seen]
            seen.update(info.files)
        return out + [SkippedFile(f, "hidden file or folder (name starts with '.'), not read") for f in every
                      if f not in seen]

    def _target_spacing(self, volume: Volume) -> tuple[float, ...] | None:
        spacing = self.preprocessing.spacing
        if spacing is None:
            return None
        nd = volume.spatial_ndim
        if nd == len(spacing):
            return tuple(spacing)
        return (volume.spacing[0],) + tuple(spacing) if nd == 3 else tuple(spacing[1:])  # 2D spec on a volume: in-plane

    def _preprocess(self, volume: Volume, warnings_: list[str]) -> tuple[Volume, np.ndarray]:
        """(volume on the model's grid, normalised image (C, *S) float32)."""
        work, target = volume, self._target_spacing(volume)
        if target is not None and not np.allclose(target, volume.spacing, rtol=1e-4, atol=1e-6):
            if volume.meta.get("spacing_known") is False:
                warnings_.append(f"the input's voxel spacing is unknown; not resampled to the model's spacing "
                                 f"{target} mm")
            else:
                work = resample_to_spacing(volume, target)
        image = normalize_intensity(self._channels_first(work), self.preprocessing)
        if not np.isfinite(image).all():
            raise InputError("the preprocessed image holds NaN/inf values; check the input's intensities")
        return work, image

    def _channels_first(self, volume: Volume) -> np.ndarray:
        arr, want = volume.array, self.channels
        if volume.channel_axis is not None:
            have = arr.shape[-1]
            if have == want:
                return np.moveaxis(arr, -1, 0)
            if want == 1 and have in (3, 4):
                return (arr[..., :3] @ _LUMA)[None]  # colour image into a grayscale model: luminance
            raise InputError(f"the image has {have} channels; the model takes {want}")
        if want == 1:
            return arr[None]
        if want == 3:
            return np.repeat(arr[None], 3, axis=0)  # grayscale into an RGB model
        raise InputError(f"the image has one channel; the model takes {want}")

    def _window(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The network input size used for an image of this size (2D slices of a volume for a 2D model)."""
        spatial = tuple(spatial[-self.spatial_dims:])
        if self._inferer is not None:
            return self._inferer.window_for(spatial, self.channels)[0]
        return self._whole_window(spatial)[0]

    def _whole_window(self, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        if self.fixed_size is not None:
            raise InputError(f"the model takes only {self.fixed_size} inputs: whole-image inference (tile=None) "
                             f"needs dynamic spatial dims; use tile=TileConfig()")
        border = int(self.contract.get("output_border") or 0)
        step, offset, minimum = self._size_rule()
        return tuple(_accepted(s + 2 * border, step, offset, minimum) for s in spatial), border

    def _infer(self, image: np.ndarray) -> np.ndarray:
        nd = image.ndim - 1
        if nd == self.spatial_dims:
            return self._infer_one(image)
        if nd == 3 and self.spatial_dims == 2:  # a 2D model on a volume: slice by slice along z
            return np.stack([self._infer_one(image[:, z]) for z in range(image.shape[1])], axis=1)
        raise InputError(f"a {self.spatial_dims}D model cannot run on a {nd}D image of shape {image.shape[1:]}")

    def _infer_one(self, image: np.ndarray) -> np.ndarray:
        inferer = self._inferer
        if inferer is None:
            window, border = self._whole_window(image.shape[1:])
            inferer = TiledInferer(self.runtime, TileConfig(roi_size=window, border=border, overlap=0.0,
                                                            blend="constant", batch_size=1))
        return inferer(image)

    def _postprocess(self, scores, work: Volume, volume: Volume, want_probs: bool):
        kind, cfg = _score_kind(self.preprocessing.output, scores.shape[0]), self.postprocess
        labels = post.to_labels(scores, kind=kind, threshold=cfg.threshold)
        if cfg.largest_component:
            labels = post.largest_component(labels, connectivity=cfg.connectivity)
        if cfg.fill_holes:
            labels = post.fill_holes(labels)
        probs = post.probabilities(scores, kind=kind) if want_probs else None
        if work is not volume:  # back onto the source voxels: nearest for labels, linear for probabilities
            shape = volume.spatial_shape
            labels = resample_to_reference(labels, work.affine, shape, volume.affine, label=True)
            if probs is not None:
                moved = resample_to_reference(np.moveaxis(probs, 0, -1), work.affine, shape, volume.affine,
                                              channel_axis=-1)
                probs = np.ascontiguousarray(np.moveaxis(moved, -1, 0))
        return labels, probs

    # --- outputs ----------------------------------------------------------------------------------------------
    def _write(self, result: Result, out: str) -> None:
        t = time.perf_counter()
        created = not os.path.isdir(out)
        os.makedirs(out, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=".deploysdk-run-", dir=out)
        try:
            files = self._write_files(result, stage)
            final = {k: os.path.join(out, os.path.basename(p)) for k, p in files.items()}
            result.outputs = {**final, "report": os.path.join(out, "report.json")}
            result.timings["write"] = time.perf_counter() - t
            staged_report = write_report(os.path.join(stage, "report.json"), result.report())
            for k, p in files.items():
                os.replace(p, final[k])
            os.replace(staged_report, result.outputs["report"])  # last: a report means the run completed
        except BaseException:
            result.outputs = {}
            shutil.rmtree(stage, ignore_errors=True)
            if created and not os.listdir(out):
                os.rmdir(out)
            raise
        shutil.rmtree(stage, ignore_errors=True)
        result.timings["write"] = time.perf_counter() - t

    def _write_files(self, result: Result, stage: str) -> dict[str, str]:
        v, files = result.volume, {}
        description = f"{self.model.name} labels"[:79]
        files["mask"] = write_nifti(result.labels, v.affine, os.path.join(stage, "mask.nii.gz"),
                                    description=description)
        if result.probabilities is not None:
            files["probabilities"] = write_nifti(np.moveaxis(result.probabilities, 0, -1), v.affine,
                                                 os.path.join(stage, "probabilities.nii.gz"))
        gray = v.array[..., :3] @ _LUMA if v.channel_axis is not None else v.array
        files["overlay"] = write_overlay_png(gray, result.labels, os.path.join(stage, "overlay.png"),
                                             window=self._display_window(v))
        if result.input_kind == "dicom-series" and v.spatial_ndim == 3 and len(result.inputs_used) == \
                result.labels.shape[0] and all("[frame " not in s for s in v.sources):
            try:
                files["seg"] = write_dicom_seg(result.labels, result.inputs_used, os.path.join(stage, "seg.dcm"),
                                               label_names=self._seg_names(result.labels),
                                               algorithm_name=self.model.name,
                                               algorithm_version=(self.model.sha256 or "unknown")[:16])
            except (DeploySDKError, ValueError, ImportError) as e:
                result.warnings.append(f"DICOM SEG not written: {e}")
        return files

    @staticmethod
    def _display_window(volume: Volume):
        window = volume.meta.get("window")
        try:
            center, width = (float(x) for x in window)
        except (TypeError, ValueError):
            return None
        return (center, width) if width > 0 else None

    def _seg_names(self, labels: np.ndarray) -> dict[int, str]:
        declared = {k: v for k, v in self.preprocessing.labels.items() if k != 0}
        present = [int(x) for x in np.unique(labels) if x != 0]
        names = {v: declared.get(v, f"label_{v}") for v in sorted(set(present) | set(declared))}
        return names or {1: "label_1"}

    # --- lifetime ---------------------------------------------------------------------------------------------
    def describe(self) -> str:
        tile = "whole images" if self.tile is None else f"tiles {self.tile.roi_size or self.fixed_size}"
        return f"{self.model.name} ({self.spatial_dims}D) on {self.runtime.describe()}, {tile}"

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipeline({self.describe()})"
