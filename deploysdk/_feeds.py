"""Arrays in the forms users hold them -> checked feeds for ONNX models; random feeds honouring dynamic dims.

Calibration data, evaluation data and verification samples all arrive as one array (N, C, H, W), one sample, a dict
input name -> array, a ``.npy`` file or folder, or any iterable of those. ``as_feeds`` turns each into batches checked
against the model's inputs, with an ``InputError`` naming the item, what came and what was expected; ``rebatch``
regroups them to the batch size a session wants. Only numpy here.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import InputError
from .runtime.base import TensorSpec, concrete_shape, input_contract

__all__ = ["as_feeds", "rebatch", "random_feeds"]


def _layout(spec: TensorSpec) -> str:
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d)) for i, d in enumerate(spec.shape)) + ")"


def _items(data, what: str) -> Iterator:
    """The arrays/dicts held by ``data``: one array, one dict, a .npy file, a folder of .npy files, an iterable."""
    if data is None:
        raise InputError(f"{what}: got None; expected an array (N, C, H, W), a list of arrays, a folder of .npy "
                         f"files or an iterable of arrays or of dicts input name -> array")
    if isinstance(data, (str, os.PathLike)):
        yield from _npy_items(os.fspath(data), what)
    elif isinstance(data, (np.ndarray, Mapping)) or hasattr(data, "__array__"):
        yield data
    elif isinstance(data, Iterable) and not isinstance(data, (bytes, bytearray)):
        yield from data
    else:
        raise InputError(f"{what}: expected an array, a list of arrays, a folder of .npy files or an iterable of "
                         f"arrays or dicts, got {type(data).__name__}")


def _npy_items(path: str, what: str) -> Iterator[np.ndarray]:
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if not files:
            raise InputError(f"{what}: folder {path} holds no .npy files")
        paths = [os.path.join(path, f) for f in files]
    elif os.path.isfile(path) and path.endswith(".npy"):
        paths = [path]
    else:
        raise InputError(f"{what}: {path} is neither a folder of .npy files nor a .npy file")
    for p in paths:
        try:
            yield np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{what}: cannot read {p} as a numpy array: {e}") from e


def _check_array(value, spec: TensorSpec, label: str) -> np.ndarray:
    """``value`` as a batch for ``spec``: floating point, right rank (one sample gets a batch axis), fixed dims."""
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise InputError(f"{label}: expected a numpy array, got {type(value).__name__} ({e})") from e
    if arr.dtype.kind != "f":
        raise InputError(f"{label}: expected floating-point values preprocessed as in training, got dtype "
                         f"{arr.dtype} (shape {arr.shape})")
    given, one = arr.shape, arr.ndim == len(spec.shape) - 1
    if one:
        arr = arr[None]  # one sample
    if arr.ndim != len(spec.shape):
        raise InputError(f"{label}: expected a batch shaped {_layout(spec)} or one sample without the batch axis "
                         f"for input {spec.describe()}, got shape {given}")
    for axis in range(1, arr.ndim):
        want = spec.shape[axis]
        if (want is not None and arr.shape[axis] != want) or arr.shape[axis] == 0:
            raise InputError(f"{label}: dimension {axis} must be {want if want else '>= 1'} for input "
                             f"{spec.describe()}, got shape {given}" + (" (read as one sample)" if one else ""))
    if not np.isfinite(arr).all():
        raise InputError(f"{label}: holds {int((~np.isfinite(arr)).sum())} NaN/inf values")
    return np.ascontiguousarray(arr, dtype=spec.dtype)


def _as_feed(item, specs: Sequence[TensorSpec], label: str) -> dict[str, np.ndarray]:
    if isinstance(item, Mapping):
        names = {s.name for s in specs}
        if set(item) != names:
            raise InputError(f"{label}: dict keys {sorted(item)} do not match the model inputs {sorted(names)}")
        feed = {s.name: _check_array(item[s.name], s, f"{label}[{s.name!r}]") for s in specs}
    elif len(specs) != 1:
        raise InputError(f"{label}: the model has {len(specs)} inputs {[s.name for s in specs]}: give dicts of "
                         f"input name -> array, got {type(item).__name__}")
    else:
        feed = {specs[0].name: _check_array(item, specs[0], label)}
    sizes = {v.shape[0] for v in feed.values()}
    if len(sizes) != 1:
        raise InputError(f"{label}: inputs differ in batch size: { {k: v.shape for k, v in feed.items()} }")
    return feed


def as_feeds(data, specs: Sequence[TensorSpec], *, what: str = "data",
             limit: int | None = None) -> tuple[list[dict[str, np.ndarray]], int]:
    """``data`` in any accepted form -> (feeds, number of samples), each feed one batch checked against ``specs``.

    Accepted: an array (N, C, H, W) or one sample (C, H, W); a dict input name -> array; a ``.npy`` file or a folder
    of them (sorted by name); a list or any iterable of those. ``limit`` keeps the first ``limit`` samples. Errors
    are ``InputError`` naming the item, what came and what was expected.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"the sample limit must be a positive integer or None, got {limit!r}")
    feeds, count = [], 0
    for i, item in enumerate(_items(data, what)):
        feed = _as_feed(item, specs, f"{what}[{i}]" if not isinstance(data, (np.ndarray, Mapping)) else what)
        n = next(iter(feed.values())).shape[0]
        if limit is not None and count + n > limit:
            n = limit - count
            feed = {k: v[:n] for k, v in feed.items()}
        if n:
            feeds.append(feed)
            count += n
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise InputError(f"{what} holds no samples; expected at least one array shaped "
                         f"{', '.join(s.describe() for s in specs)}")
    return feeds, count


def rebatch(feeds: Sequence[Mapping[str, np.ndarray]], size: int,
            exact: bool = False) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """Regroup the samples of ``feeds`` into batches of up to ``size`` consecutive samples of equal shape.

    ``exact``: only full batches (a model with a fixed batch dim); a short group is dropped. Returns the batches and
    the indices of the samples they hold, so labels can follow.
    """
    groups: list[list[tuple[int, dict]]] = []
    index = 0
    for feed in feeds:
        for i in range(next(iter(feed.values())).shape[0]):
            sample = {k: v[i:i + 1] for k, v in feed.items()}
            last = groups[-1] if groups else None
            if last and len(last) < size and all(last[0][1][k].shape == v.shape for k, v in sample.items()):
                last.append((index, sample))
            else:
                groups.append([(index, sample)])
            index += 1
    kept = [g for g in groups if not exact or len(g) == size]
    batches = [{k: np.concatenate([s[k] for _, s in g]) for k in g[0][1]} for g in kept]
    return batches, [i for g in kept for i, _ in g]


def _concrete_shape(spec: TensorSpec, batch: int, contract: Mapping[str, Any] | None) -> tuple[int, ...]:
    shape = concrete_shape(spec, contract, batch)
    if shape is None:
        axes = [i for i, d in enumerate(spec.shape) if d is None and i > 0]
        raise InputError(f"input {spec.describe()} has dynamic dim {axes[0]} and the file holds no "
                         f"'sdk.input_contract' metadata to size it: pass samples=[array]")
    return shape


def random_feeds(proto, specs: Sequence[TensorSpec], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Standard-normal inputs: batch 1 and 2 when the batch dim is dynamic (proves it stays dynamic), else one."""
    rng = np.random.default_rng(seed)
    contract = input_contract({p.key: p.value for p in proto.metadata_props})
    batches = (1, 2) if any(s.shape and s.shape[0] is None for s in specs) else (1,)
    feeds = []
    for b in batches:
        feed = {}
        for s in specs:
            shape = _concrete_shape(s, b, contract)
            feed[s.name] = (rng.standard_normal(shape).astype(s.dtype) if s.dtype.kind == "f"
                            else np.zeros(shape, s.dtype))
        feeds.append(feed)
    return feeds
