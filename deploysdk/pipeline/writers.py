"""What the pipeline leaves on disk besides the mask: a JSON report, a PNG preview, and a DICOM SEG for PACS.

    write_report("out/report.json", {"inputs": ..., "timings_s": ..., "volumes": label_volumes(...)})
    write_overlay_png(volume, labels, "out/preview.png")           # the slices with the most foreground, side by side
    write_dicom_seg(labels, series_files, "out/seg.dcm", label_names={1: "liver"},
                    algorithm_name="unet3d-liver", algorithm_version="1.2.0")

Every file is written to a temporary name beside its target and renamed (``deploysdk._atomic``), so a PACS router
or a viewer polling the folder never picks up half a file. Pillow draws the preview; highdicom (``pip install
highdicom``) and pydicom encode the SEG, imported only when a SEG is written.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InputError, MissingDependencyError

__all__ = ["write_report", "to_jsonable", "write_overlay_png", "pick_slices", "overlay_rgb", "write_dicom_seg",
           "DEFAULT_COLORS"]

# Patient/study attributes a SEG copies from its source; filled in empty (in memory only) where a source lacks them.
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                "StudyDate", "StudyTime", "ReferringPhysicianName")
# Distinct, colour-blind-friendly hues (Okabe-Ito, then Tableau), for labels 1, 2, ...; cycled beyond.
DEFAULT_COLORS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                  (204, 121, 167), (148, 103, 189), (140, 86, 75), (188, 189, 34))


# --- JSON report --------------------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, tuples, sets, paths, dataclasses and datetimes -> plain JSON types.

    Non-finite floats become None (JSON has no NaN; ``json.dump`` would write an invalid ``NaN`` token), and
    mapping keys become strings (numpy integer keys would make ``json.dump`` fail).
    """
    if isinstance(obj, Mapping):
        return {str(k.item() if isinstance(k, np.generic) else k): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=str)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    raise TypeError(f"cannot write a {type(obj).__name__} to the JSON report: {obj!r:.80}")


def write_report(path: str | os.PathLike, report: Mapping[str, Any]) -> str:
    """Write ``report`` as indented UTF-8 JSON, atomically; returns the path."""
    if not isinstance(report, Mapping):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    text = json.dumps(to_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False)
    path = os.fspath(path)
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return path


# --- PNG preview --------------------------------------------------------------------------------------------------
def pick_slices(labels: np.ndarray, n: int = 3) -> list[int]:
    """Up to ``n`` z indices with the most foreground, in z order; the middle slice when there is none."""
    if labels.ndim != 3:
        raise InputError(f"pick_slices needs a (z, y, x) label volume, got shape {labels.shape}")
    counts = (labels != 0).reshape(labels.shape[0], -1).sum(axis=1)
    if not counts.any():
        return [labels.shape[0] // 2]
    order = np.argsort(-counts, kind="stable")[:n]  # stable: ties go to the lower z, so the choice is reproducible
    return sorted(int(z) for z in order if counts[z] > 0)


def _to_gray(image: np.ndarray, window) -> np.ndarray:
    """(y, x) float -> uint8 through a (center, width) window, or the 1st..99th percentile without one."""
    image = image.astype(np.float32, copy=False)
    if window is None:
        lo, hi = (np.percentile(image, (1, 99)) if image.size else (0.0, 1.0))
    else:
        try:
            center, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise InputError(f"window must be (center, width), e.g. (40, 400) for CT soft tissue, got {window!r}") \
                from None
        if not width > 0:
            raise InputError(f"window width must be > 0, got {width}")
        lo, hi = center - width / 2, center + width / 2
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((image - lo) * scale, 0, 255).astype(np.uint8)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label with a 4-neighbour of another value (the image border does not count as an edge)."""
    p = np.pad(labels, 1, mode="edge")
    c = p[1:-1, 1:-1]
    edge = (c != p[:-2, 1:-1]) | (c != p[2:, 1:-1]) | (c != p[1:-1, :-2]) | (c != p[1:-1, 2:])
    return edge & (labels != 0)


def _palette(colors, max_label: int) -> np.ndarray:
    """(max_label + 1, 3) uint8 lookup table; row 0 (background) unused."""
    lut = np.zeros((max_label + 1, 3), np.uint8)
    for v in range(1, max_label + 1):
        lut[v] = DEFAULT_COLORS[(v - 1) % len(DEFAULT_COLORS)]
    if colors is None:
        return lut
    if not isinstance(colors, Mapping):
        raise InputError(f"colors must be a dict label -> (r, g, b), got {type(colors).__name__}")
    for v, rgb in colors.items():
        rgb = tuple(int(c) for c in rgb)
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise InputError(f"colors[{v}] must be (r, g, b) with values 0..255, got {rgb}")
        if 0 < int(v) <= max_label:
            lut[int(v)] = rgb
    return lut


def overlay_rgb(gray: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """(y, x) uint8 + labels -> (y, x, 3) uint8: labels filled at ``alpha`` with opaque outlines."""
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)  # (y, x, 3)
    colour = lut[labels].astype(np.float32)
    fg = labels != 0
    rgb[fg] = (1.0 - alpha) * rgb[fg] + alpha * colour[fg]
    edge = _outline(labels)
    rgb[edge] = colour[edge]
    return np.round(rgb).astype(np.uint8)


def _check_overlay_input(image, labels) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(image, np.ndarray) or not isinstance(labels, np.ndarray):
        raise InputError(f"image and labels must be numpy arrays, got {type(image).__name__} and "
                         f"{type(labels).__name__}")
    if image.ndim not in (2, 3) or image.shape != labels.shape:
        raise InputError(f"image and labels must have the same 2D (y, x) or 3D (z, y, x) shape, got {image.shape} "
                         f"and {labels.shape}")
    if labels.dtype.kind not in "uib" or (labels.dtype.kind == "i" and labels.size and labels.min() < 0):
        raise InputError(f"labels must be non-negative integers, got dtype {labels.dtype.name}")
    if image.dtype.kind not in "uif":
        raise InputError(f"image must be numeric, got dtype {image.dtype.name}")
    return image, labels.astype(np.intp, copy=False)


def write_overlay_png(image: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *,
                      slices: str | Sequence[int] = "auto", n_slices: int = 3, window=None, alpha: float = 0.4,
                      colors: Mapping[int, Sequence[int]] | None = None, scale: int | None = None) -> str:
    """A quick-look PNG: grayscale image, labels filled at ``alpha`` with opaque outlines; returns the path.

    ``image``/``labels``: (y, x), or (z, y, x) for a volume, drawn as a strip of axial slices: ``slices="auto"``
    picks the ``n_slices`` with the most foreground (``pick_slices``), or pass z indices. ``window``: (center,
    width) in image units, e.g. (40, 400) for CT soft tissue; default the 1st..99th percentile of the drawn slices.
    ``colors``: {label: (r, g, b)} over the default palette. ``scale``: integer zoom (default: to >= 256 px high).
    """
    image, labels = _check_overlay_input(image, labels)
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if image.ndim == 2:
        image, labels, zs = image[None], labels[None], [0]
    elif isinstance(slices, str):
        if slices != "auto":
            raise InputError(f"slices must be 'auto' or a list of z indices, got {slices!r}")
        zs = pick_slices(labels, n_slices)
    else:
        zs = [int(z) for z in slices]
        bad = [z for z in zs if not 0 <= z < image.shape[0]]
        if not zs or bad:
            raise InputError(f"slices must be z indices in 0..{image.shape[0] - 1}, got {list(slices)}")
    gray = _to_gray(image[zs], window)  # one window over all drawn slices, so they compare
    lut = _palette(colors, int(labels.max()) if labels.size else 0)
    tiles = [overlay_rgb(gray[i], labels[z], lut, float(alpha)) for i, z in enumerate(zs)]
    gap = np.zeros((tiles[0].shape[0], 2, 3), np.uint8)  # (y, 2, 3): a thin black line between slices
    strip = np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1)
    zoom = scale if scale is not None else max(1, 256 // max(1, strip.shape[0]))
    if int(zoom) < 1:
        raise InputError(f"scale must be an integer >= 1, got {scale}")
    strip = np.repeat(np.repeat(strip, int(zoom), axis=0), int(zoom), axis=1)
    from PIL import Image

    path = os.fspath(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    return path


# --- DICOM SEG ----------------------------------------------------------------------------------------------------
def _import_highdicom():
    try:
        import highdicom
        import pydicom
    except ImportError as e:
        raise MissingDependencyError(f"writing a DICOM SEG needs the Python package 'highdicom' (and pydicom), which "
                                     f"is not installed here ({e}): pip install highdicom") from e
    return highdicom, pydicom


def _read_sources(pydicom, source_files: Sequence[str | os.PathLike]) -> list:
    if isinstance(source_files, (str, os.PathLike)) or not len(source_files):
        raise InputError("source_files must be a non-empty list of DICOM paths, one per slice of labels")
    datasets = []
    for f in source_files:
        try:  # the SEG needs the header only; skipping pixel data keeps this fast on large series
            datasets.append(pydicom.dcmread(os.fspath(f), stop_before_pixels=True))
        except Exception as e:
            raise InputError(f"cannot read source DICOM {os.fspath(f)}: {e}") from e
    for ds in datasets:  # Type 2 (present, may be empty) but often missing in exported or anonymised series
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, None)
    series = {getattr(ds, "SeriesInstanceUID", None) for ds in datasets}
    if len(series) != 1 or None in series:
        raise InputError(f"source_files must be one series, got {len(series)} SeriesInstanceUIDs")
    return datasets


def _check_slice_order(datasets: list) -> None:
    """Refuse a file list out of slice order: the mask would land on the wrong slices, silently."""
    if len(datasets) < 3 or not all(hasattr(ds, "ImagePositionPatient") for ds in datasets):
        return
    try:
        row, col = np.array(datasets[0].ImageOrientationPatient, float).reshape(2, 3)
    except (AttributeError, ValueError):
        return
    depth = np.array([np.dot(np.cross(row, col), np.array(ds.ImagePositionPatient, float)) for ds in datasets])
    step = np.diff(depth)
    if not ((step > 0).all() or (step < 0).all()):
        raise InputError("source_files are not in slice order (positions along the slice normal are not monotonic: "
                         f"{np.round(depth, 3).tolist()[:8]}...); pass them in the order of the labels' z axis")


def _code(hd, value, what: str):
    if isinstance(value, (tuple, list)) and len(value) == 3:
        return hd.sr.CodedConcept(*(str(v) for v in value))
    if hasattr(value, "scheme_designator"):
        return value
    raise InputError(f"{what} must be a pydicom Code or (value, scheme, meaning), got {value!r}")


def _segments(hd, labels: np.ndarray, label_names: Mapping[int, str], codes, algorithm) -> tuple[list, np.ndarray]:
    """Segment descriptions numbered 1..N in label order, and the label -> segment number lookup table."""
    if not isinstance(label_names, Mapping) or not label_names:
        raise InputError("label_names must be a non-empty dict {label value: name}")
    names = {int(k): str(v) for k, v in label_names.items()}
    if min(names) < 1:
        raise InputError(f"label_names keys must be labels >= 1 (0 is background), got {sorted(names)}")
    present = {int(v) for v in np.unique(labels) if v != 0}
    unnamed = sorted(present - set(names))
    if unnamed:
        raise InputError(f"labels {unnamed} occur in the mask but have no entry in label_names {names}: every "
                         "segment of a DICOM SEG needs a name")
    tissue = ("85756007", "SCT", "Tissue")
    lut = np.zeros(max(max(names), int(labels.max()) if labels.size else 0) + 1, np.uint16)
    descriptions = []
    for number, value in enumerate(sorted(names), start=1):  # highdicom wants segment numbers 1, 2, ... N
        lut[value] = number
        category, kind = (codes or {}).get(value, (tissue, tissue))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[value][:64],
            segmented_property_category=_code(hd, category, f"segment_codes[{value}] category"),
            segmented_property_type=_code(hd, kind, f"segment_codes[{value}] type"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm))
    return descriptions, lut


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medcnn-sdk")
    except PackageNotFoundError:
        return "0+unknown"


def write_dicom_seg(labels: np.ndarray, source_files: Sequence[str | os.PathLike], path: str | os.PathLike, *,
                    label_names: Mapping[int, str], algorithm_name: str, algorithm_version: str,
                    segment_codes: Mapping[int, tuple] | None = None, series_description: str = "AI segmentation",
                    series_number: int = 100, manufacturer: str = "medcnn-sdk",
                    series_instance_uid: str | None = None, sop_instance_uid: str | None = None) -> str:
    """A BINARY DICOM Segmentation of ``labels`` (z, y, x) referencing the source series; returns the path.

    ``source_files``: the series' DICOM files in the order of the labels' z axis (checked against the slice
    positions). One segment per entry of ``label_names`` ({label value: name}; segments are numbered 1..N in label
    order); a label in the mask without a name is an error. ``segment_codes``: {label: (category, type)} as pydicom
    Codes or (value, scheme, meaning) tuples, default SCT 85756007 "Tissue" for both. Empty frames are left out.
    """
    hd, pydicom = _import_highdicom()
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "uib" or labels.ndim not in (2, 3):
        raise InputError(f"labels must be a (z, y, x) integer numpy array, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}")
    labels = labels[None] if labels.ndim == 2 else labels
    if labels.size and labels.min() < 0:
        raise InputError(f"labels must be >= 0, got minimum {labels.min()}")
    sources = _read_sources(pydicom, source_files)
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in sources}
    if len(sources) != labels.shape[0] or sizes != {tuple(labels.shape[1:])}:
        raise InputError(f"labels {labels.shape} must match the source series: {len(sources)} slices of "
                         f"{' / '.join(f'{r}x{c}' for r, c in sorted(sizes))} (rows x columns)")
    _check_slice_order(sources)
    algorithm = hd.AlgorithmIdentificationSequence(name=str(algorithm_name)[:64], version=str(algorithm_version)[:64],
                                                   family=_code(hd, ("123110", "DCM", "Artificial Intelligence"),
                                                                "family"))
    descriptions, lut = _segments(hd, labels, label_names, segment_codes, algorithm)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=lut[labels].astype(np.uint8 if len(descriptions) < 256 else np.uint16),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(), series_number=int(series_number),
        sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1, manufacturer=manufacturer,
        manufacturer_model_name=str(algorithm_name)[:64], software_versions=f"{algorithm_version} sdk {_version()}",
        device_serial_number="0", series_description=series_description[:64],
        content_description=f"{algorithm_name} {algorithm_version}"[:64], content_label="AUTOSEG")
    path = os.fspath(path)
    with atomic_path(path, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return path
