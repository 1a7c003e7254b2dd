"""Runner interface shared by every backend: tensor specs, feed validation, context management, latency stats."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["TensorSpec", "Runner", "LatencyStats", "validate_feed", "warmup_feed", "input_contract",
           "concrete_shape"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype and shape of a model input or output; ``None`` marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


def _check_array(spec: TensorSpec, value) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputError(f"input {spec.name!r}: expected a numpy.ndarray, got {type(value).__name__}")
    if value.dtype != spec.dtype:
        raise InputError(f"input {spec.name!r}: expected dtype {np.dtype(spec.dtype).name}, got {value.dtype.name} "
                         f"(convert with .astype(np.{np.dtype(spec.dtype).name}))")
    if value.ndim != len(spec.shape):
        raise InputError(f"input {spec.name!r}: expected rank {len(spec.shape)} {spec.describe()}, got shape "
                         f"{value.shape}")
    for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
        if want is not None and want != got:
            raise InputError(f"input {spec.name!r}: dimension {axis} must be {want} ({spec.describe()}), got shape "
                             f"{value.shape}")
    return value


def _names_error(specs: Sequence[TensorSpec], feed: Mapping) -> InputError:
    names = {s.name for s in specs}
    missing, extra = sorted(names - set(feed)), sorted(set(feed) - names)
    return InputError(f"feed names {sorted(feed)} do not match the model inputs {sorted(names)} "
                      f"(missing {missing}, unexpected {extra})")


def validate_feed(specs: Sequence[TensorSpec], feed: Mapping[str, np.ndarray], *, check_finite: bool = False) -> None:
    """Raise ``InputError`` unless ``feed`` names exactly the inputs and each fits its spec.

    Runs on every call, so the passing case is a few attribute checks (about 1 us for one input); the detailed
    message is built only when something is wrong."""
    if type(feed) is not dict and not isinstance(feed, Mapping):
        raise InputError(f"feed must be a dict of input name -> numpy array, got {type(feed).__name__}")
    if len(feed) != len(specs):
        raise _names_error(specs, feed)
    for spec in specs:
        arr = feed.get(spec.name)
        if arr is None:
            raise _names_error(specs, feed)
        if type(arr) is not np.ndarray or arr.dtype != spec.dtype or arr.ndim != len(spec.shape):
            _check_array(spec, arr)  # raises with the details
        for want, got in zip(spec.shape, arr.shape):
            if want is not None and want != got:
                _check_array(spec, arr)
        if check_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"input {spec.name!r} holds {int((~np.isfinite(arr)).sum())} NaN/inf values")


def input_contract(metadata: Mapping[str, str]) -> dict | None:
    """The model's input contract embedded at export (``sdk.input_contract``), or None if absent or unreadable."""
    raw = metadata.get("sdk.input_contract")
    if not raw:
        return None
    try:
        contract = json.loads(raw)
    except ValueError:
        return None
    return contract if isinstance(contract, dict) else None


def concrete_shape(spec: TensorSpec, contract: dict | None, batch: int = 1) -> tuple[int, ...] | None:
    """Fill dynamic dims: the batch with ``batch``, channels and spatial size from the contract's ``default_size``;
    None when some dim stays unknown."""
    default = list((contract or {}).get("default_size") or [])
    channels = (contract or {}).get("channels")
    dims = list(spec.shape)
    if dims and dims[0] is None:
        dims[0] = batch
    if len(dims) > 1 and dims[1] is None and isinstance(channels, int):
        dims[1] = channels
    spatial = dims[2:]
    if None in spatial and len(default) == len(spatial):
        dims[2:] = [d if d is not None else int(s) for d, s in zip(spatial, default)]
    return None if None in dims else tuple(int(d) for d in dims)


def warmup_feed(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None) -> dict | None:
    """A zero feed that fits every input, or None when some dynamic dim has no known size.

    Dynamic spatial dims take the size the model was designed for (its exported input contract), so models
    exported with dynamic height/width are warmed up too; the batch dim takes 1.
    """
    contract = input_contract(metadata or {})
    feed = {}
    for spec in specs:
        shape = concrete_shape(spec, contract)
        if shape is None:
            log.debug("no warm-up shape for %s: dynamic dims and no sdk.input_contract default_size",
                      spec.describe())
            return None
        feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed


@dataclass(frozen=True)
class LatencyStats:
    """Latency in milliseconds over ``iterations`` runs and throughput in samples per second."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    iterations: int
    batch_size: int

    @classmethod
    def from_times(cls, seconds: Sequence[float], batch_size: int) -> "LatencyStats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), batch_size * 1e3 / float(ms.mean()),
                   len(ms), batch_size)

    def summary(self) -> str:
        return (f"batch {self.batch_size}: p50 {self.p50_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, p99 "
                f"{self.p99_ms:.3f} ms, {self.throughput:.1f} samples/s ({self.iterations} runs)")


class Runner:
    """Base of every backend: ``inputs``/``outputs`` specs, ``run(feed) -> dict``, context manager, ``benchmark``."""

    backend: str = "?"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    providers: Sequence[str] = ()  # what executes the model, in the backend's words
    metadata: Mapping[str, str] = MappingProxyType({})  # sdk.* metadata embedded at export

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources. Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Single-input, single-output shorthand: ``runner(x)`` returns the one output array."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise InputError(f"calling the runner with one array needs a model with one input and one output; this "
                             f"one has inputs {[s.name for s in self.inputs]} and outputs "
                             f"{[s.name for s in self.outputs]}: use run(feed)")
        return self.run({self.inputs[0].name: array})[self.outputs[0].name]

    def benchmark(self, feed: Mapping[str, np.ndarray], *, iterations: int = 100, warmup: int = 10) -> LatencyStats:
        for _ in range(warmup):
            self.run(feed)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            self.run(feed)
            times.append(time.perf_counter() - t0)
        batch = int(next(iter(feed.values())).shape[0]) if feed else 1
        return LatencyStats.from_times(times, batch)
