"""Data for the recipes: a built-in dataset by name (``load_builtin``) or any map-style Dataset, split into
train / validation / test, with what a checkpoint must record about it (class names, spacing, intensity scale).

Splits are stratified (by class, or by "has a lesion" for phantoms) and fixed by the seed, so two recipes with the
same data arguments and seed train and test on the same images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ...data import ArrayDataset, DigitsSplit, LesionSet, PhantomSet, load_builtin, split_indices
from ...data.registry import BUILTIN_DATASETS

__all__ = ["DataSplits", "resolve_data", "stratified_subset"]

TASKS = ("classification", "segmentation")


@dataclass
class DataSplits:
    """Train / validation (or None) / test datasets of ``(image (C, *spatial), target)`` pairs and their facts."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int
    in_channels: int
    spatial_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    spacing: tuple[float, ...] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)  # Preprocessing fields the images were made with
    source: str = "dataset"


def stratified_subset(strata: np.ndarray | None, size: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly ``n`` of ``size`` items: classes taken in turn (balanced), fixed by ``seed``.

    Without strata a plain random subset. Used for "fine-tune on 50 samples" and small-training-set experiments.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"train_samples must be a positive integer, got {n!r}")
    if n > size:
        raise ValueError(f"train_samples={n} but the training split has only {size} samples")
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.sort(rng.permutation(size)[:n])
    pools = [list(rng.permutation(np.flatnonzero(strata == s))) for s in np.unique(strata)]
    picked: list[int] = []
    while len(picked) < n:  # round-robin over classes; a class that runs out drops out of the turn
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked, dtype=np.int64))


def _arrays_for(obj: Any, name: str, task: str, test_fraction: float, seed: int) -> dict[str, Any]:
    """Train/test arrays and facts from what ``load_builtin`` returned."""
    if isinstance(obj, DigitsSplit):
        if task != "classification":
            raise ValueError(f"dataset {name!r} has class labels only: use it with the classify recipe")
        # raw digits are 0..16; the split scales by 1/16 and standardizes: x = (p - 16 mean) / (16 std)
        pre = {"intensity": "scale", "scale": [16.0 * obj.mean, 16.0 * obj.std]}
        return dict(x_train=obj.x_train, y_train=obj.y_train, x_test=obj.x_test, y_test=obj.y_test,
                    strata=obj.y_train.numpy(), classes=tuple(str(i) for i in range(10)), spacing=None, pre=pre)
    if isinstance(obj, LesionSet):
        train, test = obj.split(test_fraction, seed)
        if task == "classification":
            return dict(x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels,
                        strata=train.labels, classes=tuple(obj.class_names), spacing=None, pre={})
        return dict(x_train=train.images, y_train=train.lesion_masks, x_test=test.images, y_test=test.lesion_masks,
                    strata=train.labels, classes=("background", "lesion"), spacing=None, pre={})
    if isinstance(obj, PhantomSet):
        if task != "segmentation":
            raise ValueError(f"dataset {name!r} holds label masks: use it with the segment recipe")
        train, test = obj.split(test_fraction, seed)
        return dict(x_train=train.images, y_train=train.masks, x_test=test.images, y_test=test.masks,
                    strata=train.lesion_counts > 0, classes=tuple(obj.class_names), spacing=tuple(obj.spacing),
                    pre={})
    raise TypeError(f"built-in dataset {name!r} returned a {type(obj).__name__}; the recipes know DigitsSplit, "
                    f"LesionSet and PhantomSet")


def _builtin(name: str, kwargs: Mapping[str, Any], task: str, test_fraction: float, seed: int) -> dict[str, Any]:
    entry = BUILTIN_DATASETS.get(name)
    if entry is not None and entry.task != task and not (name == "lesions" and task == "segmentation"):
        raise ValueError(f"dataset {name!r} is a {entry.task} dataset, not {task}")
    kwargs = dict(kwargs)
    if name == "phantoms" and isinstance(kwargs.get("size"), int) and "ndim" not in kwargs:
        kwargs["ndim"] = 2  # ``--data-arg size=64`` means 64x64; 3D volumes say ndim=3
    arrays = _arrays_for(load_builtin(name, **kwargs), name, task, test_fraction, seed)
    as_t = {k: torch.as_tensor(np.asarray(arrays[k])) for k in ("x_train", "y_train", "x_test", "y_test")}
    arrays.update({k: v.long() if k.startswith("y") else v.float() for k, v in as_t.items()})
    return arrays


def _targets_max(ds: Dataset) -> int:
    targets = getattr(ds, "targets", None)
    if isinstance(targets, torch.Tensor):
        return int(targets.max())
    return max(int(torch.as_tensor(ds[i][1]).max()) for i in range(len(ds)))


def _dataset_splits(data: Dataset, test_data: Dataset | None, task: str, test_fraction: float,
                    seed: int, num_classes: int | None) -> dict[str, Any]:
    if not isinstance(data, Dataset) or not hasattr(data, "__len__") or len(data) == 0:
        raise TypeError(f"data must be a built-in dataset name or a non-empty map-style Dataset, got "
                        f"{type(data).__name__}")
    targets = getattr(data, "targets", None)
    labels = targets if task == "classification" and isinstance(targets, torch.Tensor) and targets.dim() == 1 \
        else None
    strata = None if labels is None else labels.numpy()
    if test_data is None:
        order = np.random.default_rng(seed).permutation(len(data))
        n_test = max(1, int(round(len(data) * test_fraction)))
        test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        test_data, data = Subset(data, test_idx.tolist()), Subset(data, train_idx.tolist())
        strata = None if strata is None else strata[train_idx]
    image = torch.as_tensor(data[0][0])
    k = max(num_classes or max(_targets_max(data), _targets_max(test_data)) + 1, 2)
    return dict(train_ds=data, test_ds=test_data, strata=strata, classes=tuple(str(i) for i in range(k)),
                spacing=None, pre={}, in_channels=int(image.shape[0]), spatial=tuple(image.shape[1:]))


def _holdout(train: Dataset, strata: np.ndarray | None, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    if not fraction:
        return train, None
    if strata is None:
        strata = np.zeros(len(train), dtype=np.int64)
    keep, val = split_indices(strata, fraction, seed + 1)  # seed + 1: not the train/test split's draw
    return Subset(train, keep.tolist()), Subset(train, val.tolist())


def _check_fraction(name: str, value: float, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (0.0 <= value < 1.0) if allow_zero else (0.0 < value < 1.0)):
        raise ValueError(f"{name} must be a number in {'[0, 1)' if allow_zero else '(0, 1)'}, got {value!r}")


def resolve_data(data: str | Dataset, data_kwargs: Mapping[str, Any] | None, task: str, *,
                 test_data: Dataset | None = None, test_fraction: float = 0.2, val_fraction: float = 0.0,
                 train_samples: int | None = None, seed: int = 0, num_classes: int | None = None) -> DataSplits:
    """The splits a recipe trains, validates and tests on.

    ``data``: a built-in name (``trainsdk.data.list_builtin()``) with ``data_kwargs`` for its loader, or a Dataset
    of ``(image, target)`` (then ``test_data``, or ``test_fraction`` of it held out at random). ``train_samples``
    keeps that many training images (class-balanced); ``val_fraction`` of the remaining training set validates.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    _check_fraction("test_fraction", test_fraction, allow_zero=False)
    _check_fraction("val_fraction", val_fraction, allow_zero=True)
    if isinstance(data, str):
        a = _builtin(data, data_kwargs or {}, task, test_fraction, seed)
        train_ds, test_ds = ArrayDataset(a["x_train"], a["y_train"]), ArrayDataset(a["x_test"], a["y_test"])
        in_channels, spatial = int(a["x_train"].shape[1]), tuple(a["x_train"].shape[2:])
        source = data
    else:
        if data_kwargs:
            raise ValueError(f"data_kwargs {sorted(data_kwargs)} apply to built-in datasets only; got a Dataset")
        a = _dataset_splits(data, test_data, task, test_fraction, seed, num_classes)
        train_ds, test_ds, in_channels, spatial = a["train_ds"], a["test_ds"], a["in_channels"], a["spatial"]
        source = type(data).__name__
    strata = a["strata"]
    if train_samples is not None:
        idx = stratified_subset(None if strata is None else np.asarray(strata), len(train_ds), train_samples, seed)
        train_ds = Subset(train_ds, idx.tolist())
        strata = None if strata is None else np.asarray(strata)[idx]
    train_ds, val_ds = _holdout(train_ds, None if strata is None else np.asarray(strata), val_fraction, seed)
    classes: Sequence[str] = a["classes"]
    return DataSplits(train_ds, val_ds, test_ds, len(classes), in_channels, spatial, tuple(classes),
                      a["spacing"], dict(a["pre"]), source)
