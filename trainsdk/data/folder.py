"""A folder of medical images as a torch Dataset, with labels from a CSV or masks from a second folder.

Formats: PNG/JPEG/TIFF/BMP, .npy/.npz, NIfTI (.nii/.nii.gz) and single-file DICOM (.dcm, or no suffix), all read by
``deploysdk.io.read_image`` (one reader for training and deployment, so a model sees the same arrays in both).

Nothing is dropped silently: every file that cannot be used (corrupt, wrong shape, no label row, a label row or a
mask without an image, an unsupported type) is recorded in ``dataset.problems`` as ``(path, reason)``. By default
construction then raises ``DataError`` listing all of them; ``on_error="skip"`` builds the dataset from the good
files and warns once with the count.
"""
from __future__ import annotations

import fnmatch
import os
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from deploysdk.errors import UnreadableFileError
from deploysdk.io import IMAGE_SUFFIXES, read_image

from ._labels_csv import file_key, index_labels, read_label_csv
from .errors import DataError

__all__ = ["FolderDataset", "split_suffix"]

DEFAULT_IGNORE = (".*", "*.csv", "*.tsv", "*.txt", "*.json", "*.md", "*.yaml", "*.yml")


def split_suffix(name: str) -> tuple[str, str]:
    """("scan", ".nii.gz") for "scan.nii.gz": the stem masks are matched by, and the lower-case suffix."""
    low = name.lower()
    for double in (".nii.gz",):
        if low.endswith(double):
            return name[: -len(double)], double
    stem, suffix = os.path.splitext(name)
    return stem, suffix.lower()


def _walk(folder: str, recursive: bool, ignore: Sequence[str], exclude: set[str]) -> list[str]:
    """Sorted relative paths ('/'-separated) of the files in ``folder``, minus ignored names and excluded paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if recursive and os.path.abspath(os.path.join(dirpath, d))
                             not in exclude and not any(fnmatch.fnmatch(d, p) for p in ignore))
        for name in filenames:
            full = os.path.abspath(os.path.join(dirpath, name))
            if full in exclude or any(fnmatch.fnmatch(name, p) for p in ignore):
                continue
            found.append(file_key(os.path.relpath(full, folder)))
    return sorted(found)


def _supported(key: str) -> bool:
    suffix = split_suffix(key.rsplit("/", 1)[-1])[1]
    return suffix in IMAGE_SUFFIXES or suffix == ""  # no suffix: DICOM files often have none; the reader sniffs


class FolderDataset(Dataset):
    """``dataset[i] -> (image, target)``: image float32 (C, *spatial), target an int64 class index (labels CSV) or
    an int64 (*spatial) mask (masks folder); the image alone when neither is given.

    ``labels_csv``: rows of (file name relative to ``root``, label); a header is recognized by its column names
    (``filename_column``/``label_column`` pick others). Label names map to indices in sorted order unless
    ``classes`` fixes the order; integer labels keep their values. ``class_names``/``class_to_index`` keep the
    mapping. ``masks_dir``: one mask per image, matched by relative path without suffix (``stem + mask_suffix``).

    ``ndim`` spatial axes are expected (2: (y, x) images, 3: (z, y, x) volumes), ``shape`` optionally fixes them.
    Files are taken from ``root`` itself; subfolders only with ``recursive``. ``ignore`` (name patterns, default:
    hidden files and text/CSV/JSON/YAML) are left out by design; every other file is used or reported.
    ``gray`` turns colour images into one luminance channel. ``validate`` reads every file at construction (the
    only way to find corrupt ones up front); ``cache`` keeps what was read. ``transform(image, target)`` returns the
    transformed pair.
    """

    def __init__(self, root, labels_csv=None, masks_dir=None, *, classes: Sequence[str] | None = None,
                 mask_suffix: str = "", ndim: int = 2, shape: Sequence[int] | None = None, gray: bool = True,
                 recursive: bool = False, ignore: Sequence[str] = DEFAULT_IGNORE, on_error: str = "raise",
                 validate: bool = True, cache: bool = False, transform: Callable | None = None,
                 filename_column: str | None = None, label_column: str | None = None):
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise DataError(f"dataset root {self.root} is not a folder")
        if labels_csv is not None and masks_dir is not None:
            raise ValueError("give labels_csv (classification) or masks_dir (segmentation), not both")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 (images) or 3 (volumes), got {ndim!r}")
        if shape is not None and len(tuple(shape)) != ndim:
            raise ValueError(f"shape must have {ndim} values (ndim={ndim}), got {tuple(shape)}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.ndim, self.shape, self.gray = ndim, None if shape is None else tuple(int(s) for s in shape), gray
        self.transform, self.cache = transform, cache
        self.masks_dir = None if masks_dir is None else os.path.abspath(os.fspath(masks_dir))
        self.mask_suffix = mask_suffix
        self.labels_csv = None if labels_csv is None else os.path.abspath(os.fspath(labels_csv))
        self.class_names: tuple[str, ...] = ()
        self.class_to_index: dict[str, int] = {}
        self.problems: list[tuple[str, str]] = []
        self._cache: dict[int, tuple] = {}

        exclude = {p for p in (self.labels_csv, self.masks_dir) if p is not None}
        keys = []
        for key in _walk(self.root, recursive, ignore, exclude):
            if _supported(key):
                keys.append(key)
            else:
                self._problem(key, f"unsupported file type; expected one of {sorted(IMAGE_SUFFIXES)}")
        items = self._pair(keys, recursive, ignore, classes, filename_column, label_column)
        self.files = [k for k, _ in items]  # relative to root
        self.targets = [t for _, t in items]  # class index, mask path relative to masks_dir, or None
        self.spacings: list[tuple[float, ...] | None] = [None] * len(self.files)
        if validate:
            self._validate()
        self._finish(on_error)

    # -- construction -------------------------------------------------------------------------------------------
    def _problem(self, key: str, reason: str) -> None:
        self.problems.append((os.path.join(self.root, key), reason))

    def _pair(self, keys, recursive, ignore, classes, filename_column, label_column) -> list[tuple[str, object]]:
        if self.labels_csv is not None:
            return self._pair_labels(keys, classes, filename_column, label_column)
        if self.masks_dir is not None:
            return self._pair_masks(keys, recursive, ignore)
        return [(k, None) for k in keys]

    def _pair_labels(self, keys, classes, filename_column, label_column):
        table = read_label_csv(self.labels_csv, filename_column, label_column)
        indices, self.class_names, self.class_to_index, label_problems = index_labels(table, classes)
        for where, reason in table.problems + label_problems:
            self.problems.append((where, reason))
        bad_rows = {k for k, (_, where) in table.rows.items() if k not in indices}
        present = set(keys)
        for key, (_, where) in table.rows.items():
            if key not in present and key not in bad_rows:
                self.problems.append((where, f"label row for {key!r}, but no such image file in {self.root}"))
        items = []
        for key in keys:
            if key in indices:
                items.append((key, indices[key]))
            elif key not in bad_rows:
                self._problem(key, f"no label row in {self.labels_csv}")
        return items

    def _stems(self, keys, where: str) -> dict[str, str]:
        """relative stem -> key; two files with one stem are ambiguous and both reported."""
        by_stem: dict[str, list[str]] = {}
        for key in keys:
            folder, _, name = key.rpartition("/")
            stem = (folder + "/" if folder else "") + split_suffix(name)[0]
            by_stem.setdefault(stem, []).append(key)
        out = {}
        for stem, group in by_stem.items():
            if len(group) > 1:
                for key in group:
                    self.problems.append((os.path.join(where, key), f"ambiguous: {group} share the stem {stem!r}"))
            else:
                out[stem] = group[0]
        return out

    def _pair_masks(self, keys, recursive, ignore):
        if not os.path.isdir(self.masks_dir):
            raise DataError(f"masks_dir {self.masks_dir} is not a folder")
        images = self._stems(keys, self.root)
        mask_keys = [k for k in _walk(self.masks_dir, recursive, ignore, set()) if _supported(k)]
        masks = self._stems(mask_keys, self.masks_dir)
        suffix = self.mask_suffix
        wanted = {stem + suffix: stem for stem in images}
        for mstem, mkey in masks.items():
            if mstem not in wanted:
                self.problems.append((os.path.join(self.masks_dir, mkey), f"mask without an image in {self.root}"))
        items = []
        for stem, key in images.items():
            if stem + suffix in masks:
                items.append((key, masks[stem + suffix]))
            else:
                self._problem(key, f"no mask named {stem + suffix}.* in {self.masks_dir}")
        return sorted(items)

    def _validate(self) -> None:
        keep = []
        for i in range(len(self.files)):
            try:
                loaded = self._read(i)
            except UnreadableFileError as exc:
                self.problems.append((exc.path, exc.reason))
                continue
            self.spacings[i] = loaded[2]
            if self.cache:
                self._cache[len(keep)] = loaded
            keep.append(i)
        self.files = [self.files[i] for i in keep]
        self.targets = [self.targets[i] for i in keep]
        self.spacings = [self.spacings[i] for i in keep]

    def _finish(self, on_error: str) -> None:
        if not self.problems:
            return
        if on_error == "raise":
            raise DataError(f"{len(self.problems)} problem(s) in the dataset at {self.root} (on_error='skip' builds it "
                            f"from the {len(self.files)} usable file(s) and keeps this list in .problems):",
                            self.problems)
        warnings.warn(f"FolderDataset {self.root}: left out {len(self.problems)} unusable file(s)/row(s); "
                      f"{len(self.files)} usable. See dataset.problems for each path and reason.", stacklevel=3)

    # -- reading ------------------------------------------------------------------------------------------------
    def _read_array(self, path: str, gray: bool):
        volume = read_image(path, gray=gray)
        arr = volume.array
        arr = np.moveaxis(arr, -1, 0) if volume.channel_axis is not None else arr[None]  # (C, *spatial)
        spatial = arr.shape[1:]
        if len(spatial) != self.ndim:
            hint = " (pass ndim=3 for volumes)" if len(spatial) == 3 else ""
            raise UnreadableFileError(path, f"wrong shape {volume.array.shape}: {len(spatial)} spatial axes, "
                                            f"expected {self.ndim}{hint}")
        if self.shape is not None and tuple(spatial) != self.shape:
            raise UnreadableFileError(path, f"wrong shape: spatial shape {tuple(spatial)}, expected {self.shape}")
        if not np.isfinite(arr).all():
            raise UnreadableFileError(path, "contains NaN or infinite values")
        return np.ascontiguousarray(arr, dtype=np.float32), volume.spacing

    def _read_mask(self, path: str, image_shape: tuple[int, ...]) -> np.ndarray:
        mask, _ = self._read_array(path, gray=False)
        if mask.shape[0] != 1:
            raise UnreadableFileError(path, f"mask has {mask.shape[0]} channels; expected one label per pixel")
        if tuple(mask.shape[1:]) != image_shape:
            raise UnreadableFileError(path, f"wrong shape: mask {tuple(mask.shape[1:])} does not match its image "
                                            f"{image_shape}")
        if (mask < 0).any() or (mask != np.rint(mask)).any():
            raise UnreadableFileError(path, "mask values must be non-negative integers (class labels)")
        return mask[0].astype(np.int64)

    def _read(self, i: int) -> tuple:
        image, spacing = self._read_array(os.path.join(self.root, self.files[i]), self.gray)
        target = self.targets[i]
        if isinstance(target, str):
            target = self._read_mask(os.path.join(self.masks_dir, target), tuple(image.shape[1:]))
        return image, target, spacing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        try:
            image, target, _ = self._cache[index] if index in self._cache else self._read(index)
        except UnreadableFileError as exc:  # changed on disk since construction, or validate=False
            raise DataError(f"cannot read item {index} of {self.root}", [(exc.path, exc.reason)]) from None
        image = torch.from_numpy(image)
        if target is None:
            return image if self.transform is None else self.transform(image, None)[0]
        target = torch.from_numpy(target) if isinstance(target, np.ndarray) else torch.tensor(target, dtype=torch.int64)
        return (image, target) if self.transform is None else self.transform(image, target)

    @property
    def num_classes(self) -> int:
        """Largest class index + 1 (integer labels keep their values, so some indices may be unused)."""
        return max(self.class_to_index.values(), default=-1) + 1

    def __repr__(self) -> str:
        kind = "labels" if self.labels_csv else "masks" if self.masks_dir else "images only"
        return f"FolderDataset({self.root!r}, {len(self)} items, {kind}, {len(self.problems)} problem(s))"
