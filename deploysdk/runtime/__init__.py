"""One runtime over every backend. Imports numpy and the engine asked for; never torch.

    rt = Runtime("model.onnx", backend="onnxruntime", device="cpu")
    print(rt.backend, rt.providers, rt.inputs)
    logits = rt(x)                      # one input, one output
    outs = rt.run({"input": x})         # dict of named outputs
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, DeploySDKError
from .base import LatencyStats, Runner, TensorSpec, validate_feed
from .onnxrt import OnnxRuntimeRunner, parse_device

__all__ = ["Runtime", "Runner", "TensorSpec", "LatencyStats", "OnnxRuntimeRunner", "validate_feed", "BACKENDS"]

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime")


def _auto_candidates(device: str) -> list[tuple[str, dict]]:
    kind, _ = parse_device(device)
    if kind == "cpu":
        return [("onnxruntime", {})]
    return [("onnxruntime", {})]  # TensorRT joins this list when the TensorRT backend lands


class Runtime:
    """Facade that opens a model on one backend and says which one runs (``.backend``, ``.providers``).

    ``backend="auto"`` tries the candidates for ``device`` in order and logs each attempt; a named backend that
    cannot load raises ``BackendUnavailableError``.
    """

    def __init__(self, path: str | os.PathLike, *, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None, providers: Sequence | None = None, check_finite: bool = False,
                 warmup: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        parse_device(device)  # validates the string
        self.path, self.device = os.fspath(path), device
        kwargs = dict(device=device, threads=threads, providers=providers, check_finite=check_finite)
        candidates = _auto_candidates(device) if backend == "auto" else [(backend, {})]
        self.runner = self._open(candidates, kwargs, explicit=backend != "auto")
        self._warmup(warmup)

    def _open(self, candidates, kwargs, explicit: bool) -> Runner:
        errors = []
        for name, extra in candidates:
            try:
                runner = OnnxRuntimeRunner(self.path, **kwargs, **extra)
                log.info("Runtime: %s backend on %s", name, getattr(runner, "providers", self.device))
                return runner
            except BackendUnavailableError as e:
                if explicit:
                    raise
                log.warning("Runtime: %s backend unavailable (%s); trying the next one", name, e)
                errors.append(f"{name}: {e}")
        raise BackendUnavailableError(f"no backend could run {self.path} on {self.device}: {errors}")

    def _warmup(self, iterations: int) -> None:
        if iterations <= 0 or any(None in s.shape for s in self.inputs):
            return  # dynamic inputs: no shape to warm up with until the first real call
        feed = {s.name: np.zeros(s.shape, dtype=s.dtype) for s in self.inputs}
        for _ in range(iterations):
            self.runner.run(feed)

    backend = property(lambda self: self.runner.backend)
    providers = property(lambda self: list(getattr(self.runner, "providers", [])))
    inputs = property(lambda self: self.runner.inputs)
    outputs = property(lambda self: self.runner.outputs)
    metadata = property(lambda self: getattr(self.runner, "metadata", {}))

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return self.runner.run(feed, output_names)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return self.runner(array)

    def benchmark(self, feed: Mapping[str, np.ndarray], **kw) -> LatencyStats:
        return self.runner.benchmark(feed, **kw)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Runtime({self.path!r}, backend={self.backend!r}, providers={self.providers})"


__all__ += ["DeploySDKError"]
