"""ONNX Runtime runner with explicit execution providers.

ONNX Runtime quietly drops a provider whose libraries fail to load; this runner checks the providers the session
really got against the ones asked for and raises ``BackendUnavailableError`` instead of running somewhere else.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, ModelLoadError
from .base import Runner, TensorSpec, validate_feed

__all__ = ["OnnxRuntimeRunner", "providers_for_device", "ORT_DTYPES"]

log = logging.getLogger(__name__)

ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise BackendUnavailableError("the onnxruntime backend needs the 'onnxruntime' (or 'onnxruntime-gpu') "
                                      "package") from e
    return onnxruntime


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"``/``"cuda:N"`` -> ("cuda", N)."""
    if device == "cpu":
        return "cpu", 0
    if device == "cuda":
        return "cuda", 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def providers_for_device(device: str) -> list:
    kind, index = parse_device(device)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _provider_name(p: Any) -> str:
    return p[0] if isinstance(p, (tuple, list)) else p


def _spec(arg) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has type {arg.type}, which this runtime does not handle")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(arg.name, np.dtype(dtype), shape)


def _session_options(ort, threads: int | None, optimization: str):
    so = ort.SessionOptions()
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {list(levels)}, got {optimization!r}")
    so.graph_optimization_level = levels[optimization]
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only; provider failures are checked explicitly below
    return so


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", providers: Sequence | None = None,
                 threads: int | None = None, optimization: str = "all", check_finite: bool = False):
        ort = _import_ort()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelLoadError(f"ONNX model not found: {self.path}")
        requested = list(providers) if providers is not None else providers_for_device(device)
        available = ort.get_available_providers()
        absent = [_provider_name(p) for p in requested if _provider_name(p) not in available]
        if absent:
            raise BackendUnavailableError(f"execution provider(s) {absent} are not in this onnxruntime build "
                                          f"(available: {available})")
        so = _session_options(ort, threads, optimization)
        try:
            self.session = ort.InferenceSession(self.path, sess_options=so, providers=requested)
        except Exception as e:
            raise ModelLoadError(f"onnxruntime could not load {self.path}: {str(e).strip()[:500]}") from e
        self.providers = self.session.get_providers()
        dropped = [_provider_name(p) for p in requested if _provider_name(p) not in self.providers]
        if dropped:
            raise BackendUnavailableError(f"execution provider(s) {dropped} failed to load (their libraries are "
                                          f"missing or incompatible); the session got {self.providers}")
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self.check_finite = check_finite
        log.info("onnxruntime session for %s on %s", self.path, self.providers)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        validate_feed(self.inputs, feed, check_finite=self.check_finite)
        names = list(output_names) if output_names is not None else [s.name for s in self.outputs]
        values = self.session.run(names, dict(feed))
        return dict(zip(names, values))

    def close(self) -> None:
        self.session = None
