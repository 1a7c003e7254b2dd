"""One runtime over every backend. Imports numpy and the engine asked for; never torch (the torch backend imports it
when it is used).

    rt = Runtime("model.onnx", backend="auto", device="cpu")
    print(rt.backend, rt.providers, rt.inputs)
    logits = rt(x)                      # one input, one output
    outs = rt.run({"input": x})         # dict of named outputs

What ``backend="auto"`` picks, by file and device (every step is logged; a skipped candidate logs its reason):

* ``.engine``/``.plan``/``.trt`` (a serialized TensorRT engine): the TensorRT runner, nothing else can run it.
* ``.onnx`` on ``cuda:N``: ONNX Runtime with the TensorRT EP (engine cache on, CUDA EP and CPU behind it for nodes
  TensorRT rejects), then ONNX Runtime with the CUDA EP. Never the CPU alone: when no GPU provider loads, it raises
  ``BackendUnavailableError`` naming each reason -- asking for a GPU and silently getting a CPU hides a 10-100x
  slowdown (and a broken install) in a clinical pipeline.
* ``.onnx`` on ``cpu``: ONNX Runtime's CPU EP only.
* ``.pt``/``.pth``/``.ckpt`` (an SDK checkpoint) or an ``nn.Module``: the torch backend.

A named backend (``"onnxruntime"``, ``"tensorrt"``, ``"torch"``) is the only candidate: if it cannot load here it raises
``BackendUnavailableError``. ``backend="tensorrt"`` with an ``.onnx`` file means ONNX Runtime's TensorRT EP.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, DeploySDKError, InputError, ModelLoadError
from .base import LatencyStats, Runner, TensorSpec, validate_feed, warmup_feed
from .onnxrt import (CUDAOptions, OnnxRuntimeRunner, SessionConfig, TensorRTOptions, parse_device,
                     providers_for_device)

__all__ = ["Runtime", "Runner", "TensorSpec", "LatencyStats", "OnnxRuntimeRunner", "SessionConfig", "CUDAOptions",
           "TensorRTOptions", "Candidate", "plan_candidates", "model_format", "validate_feed", "warmup_feed",
           "providers_for_device", "BACKENDS", "ENGINE_SUFFIXES", "DeploySDKError"]

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def model_format(path: Any) -> str:
    """"engine" | "checkpoint" | "module" | "onnx" (anything else is handed to ONNX Runtime, which says if not)."""
    if not isinstance(path, (str, os.PathLike)):
        return "module"
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    return "checkpoint" if suffix in CHECKPOINT_SUFFIXES else "onnx"


@dataclass(frozen=True)
class Candidate:
    """One way to open the model: a backend, a label for logs and errors, and its runner's extra arguments."""

    backend: str  # onnxruntime | tensorrt | torch
    label: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _fixed(fmt: str, backend: str, device: str) -> list[Candidate]:
    """Engines and checkpoints have exactly one backend that can run them."""
    kind, _ = parse_device(device)
    if fmt == "engine":
        if backend not in ("auto", "tensorrt"):
            raise BackendUnavailableError(f"a TensorRT engine file runs only on backend 'tensorrt', not {backend!r}; "
                                          f"use the .onnx file for other backends")
        if kind == "cpu":
            raise BackendUnavailableError("a TensorRT engine runs on a CUDA device only; pass device='cuda:N' (or "
                                          "the .onnx file on device='cpu')")
        return [Candidate("tensorrt", "tensorrt engine")]
    if backend not in ("auto", "torch"):
        raise BackendUnavailableError(f"backend {backend!r} cannot run a PyTorch {fmt}; use backend='torch' or "
                                      f"export it to ONNX first")
    return [Candidate("torch", "torch eager")]


def plan_candidates(fmt: str, backend: str, device: str, *, providers: Sequence | None = None) -> list[Candidate]:
    """The ordered candidates ``Runtime`` tries (see the module docstring). Pure: no engine is touched."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    kind, _ = parse_device(device)
    if fmt in ("engine", "checkpoint", "module"):
        return _fixed(fmt, backend, device)
    if backend == "torch":
        raise BackendUnavailableError("the torch backend runs an nn.Module or an SDK checkpoint (.pt), not an ONNX "
                                      "file; pass the checkpoint the model was exported from")
    if providers is not None:
        return [Candidate("onnxruntime", f"onnxruntime {[p if isinstance(p, str) else p[0] for p in providers]}",
                          {"providers": list(providers)})]
    trt = Candidate("onnxruntime", "onnxruntime TensorRT EP", {"tensorrt": True})
    cuda = Candidate("onnxruntime", "onnxruntime CUDA EP")
    if backend == "tensorrt":
        if kind == "cpu":
            raise BackendUnavailableError("backend 'tensorrt' needs a CUDA device, got device='cpu'")
        return [trt]
    if kind == "cpu":
        return [Candidate("onnxruntime", "onnxruntime CPU EP")]
    return [cuda] if backend == "onnxruntime" else [trt, cuda]


def _open_engine(path: str, device: str, rebuild_from) -> Runner:
    try:
        from .trt import TensorRTRunner
    except ImportError as e:
        raise BackendUnavailableError(f"the TensorRT backend cannot be imported here: {e}") from e
    try:
        return TensorRTRunner(path, device=device, rebuild_from=rebuild_from)
    except ImportError as e:  # the tensorrt package is missing
        raise BackendUnavailableError(f"the TensorRT backend needs the 'tensorrt' package: {e}") from e


class Runtime:
    """Facade that opens a model on one backend and says which one runs (``.backend``, ``.providers``).

    Keyword arguments: ``threads`` (intra-op threads), ``providers`` (explicit ONNX Runtime provider list, bypasses
    auto), ``optimization`` (ONNX Runtime graph level), ``io_binding`` (None = on for CUDA sessions),
    ``cuda_options``/``tensorrt_options`` (``CUDAOptions``/``TensorRTOptions`` or dicts), ``session_config`` (a
    ``SessionConfig``: every ONNX Runtime session setting, in place of ``threads``/``optimization``),
    ``check_finite`` (reject NaN/inf inputs), ``warmup`` (runs at load; dynamic dims take the exported input
    contract's default size), ``rebuild_from`` (ONNX file to rebuild a stale TensorRT engine from),
    ``input_names``/``output_names``/``example_input`` (torch backend).
    """

    def __init__(self, path, *, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                 providers: Sequence | None = None, check_finite: bool = False, warmup: int = 1,
                 optimization: str = "all", io_binding: bool | None = None, cuda_options=None,
                 tensorrt_options=None, session_config: SessionConfig | None = None, rebuild_from=None,
                 **torch_kwargs):
        fmt = model_format(path)
        self.path = os.fspath(path) if fmt != "module" else f"<{type(path).__name__}>"
        self.device, self.requested_backend, self.check_finite = device, backend, check_finite
        candidates = plan_candidates(fmt, backend, device, providers=providers)
        if fmt != "module" and not os.path.isfile(self.path):  # before any backend: the clearest error there is
            raise ModelLoadError(f"model file not found: {self.path}")
        common = dict(device=device, threads=threads, check_finite=check_finite)
        ort = dict(optimization=optimization, io_binding=io_binding, cuda_options=cuda_options,
                   tensorrt_options=tensorrt_options, session_config=session_config)
        self._source, self._kwargs = path, dict(common=common, ort=ort, torch=torch_kwargs, rebuild=rebuild_from)
        if torch_kwargs and candidates[0].backend != "torch":
            raise TypeError(f"unexpected argument(s) {sorted(torch_kwargs)} for backend {candidates[0].backend!r}")
        self.runner = self._open(candidates, explicit=backend != "auto" or providers is not None)
        # a backend that does not flag NaN/inf itself gets the check here (costs a pass over the input)
        self._prevalidate = check_finite and not getattr(self.runner, "check_finite", False)
        self._warmup(warmup)

    def _open_one(self, c: Candidate) -> Runner:
        kw = self._kwargs
        if c.backend == "torch":
            from .torch import TorchRunner

            return TorchRunner(self._source, **kw["common"], **kw["torch"])
        if c.backend == "tensorrt":
            return _open_engine(self.path, self.device, kw["rebuild"])
        return OnnxRuntimeRunner(self.path, **kw["common"], **kw["ort"], **c.options)

    def _open(self, candidates: list[Candidate], explicit: bool) -> Runner:
        errors = []
        for c in candidates:
            log.info("Runtime: trying %s for %s on %s", c.label, self.path, self.device)
            try:
                runner = self._open_one(c)
            except BackendUnavailableError as e:
                if explicit or len(candidates) == 1:
                    raise
                log.warning("Runtime: skipped %s: %s", c.label, e)
                errors.append(f"{c.label}: {e}")
                continue
            log.info("Runtime: %s runs %s on %s", runner.backend, self.path, list(getattr(runner, "providers", [])))
            return runner
        raise BackendUnavailableError(f"no backend could run {self.path} on {self.device} (auto tried "
                                      f"{len(candidates)}): " + " | ".join(errors))

    def _warmup(self, iterations: int) -> None:
        """First runs allocate memory and pick kernels (cuDNN autotuning, TensorRT contexts): do it at load."""
        if iterations <= 0:
            return
        feed = warmup_feed(self.inputs, self.metadata)
        if feed is None:
            log.debug("Runtime: no warm-up for %s: dynamic dims without an exported default size", self.path)
            return
        try:
            for _ in range(iterations):
                self.runner.run(feed)
        except DeploySDKError as e:  # the derived shape may be outside an engine's profile; the load still stands
            log.warning("Runtime: warm-up of %s with %s failed: %s", self.path,
                        {k: v.shape for k, v in feed.items()}, e)

    backend = property(lambda self: self.runner.backend, doc="the backend that runs: onnxruntime | tensorrt | torch")
    providers = property(lambda self: list(getattr(self.runner, "providers", [])),
                         doc="what executes the model within the backend (ONNX Runtime's providers, in order)")
    inputs = property(lambda self: self.runner.inputs)
    outputs = property(lambda self: self.runner.outputs)
    metadata = property(lambda self: dict(getattr(self.runner, "metadata", {}) or {}))
    io_binding = property(lambda self: bool(getattr(self.runner, "io_binding", False)))

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        if self._prevalidate:
            validate_feed(self.inputs, feed, check_finite=True)
        return self.runner.run(feed, output_names)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise InputError(f"calling the runtime with one array needs a model with one input and one output; this "
                             f"one has inputs {[s.name for s in self.inputs]} and outputs "
                             f"{[s.name for s in self.outputs]}: use run(feed)")
        return self.run({self.inputs[0].name: array})[self.outputs[0].name]

    def benchmark(self, feed: Mapping[str, np.ndarray], **kw) -> LatencyStats:
        return self.runner.benchmark(feed, **kw)

    def describe(self) -> str:
        binding = ", I/O binding" if self.io_binding else ""
        return f"{self.backend} on {self.providers}{binding}"

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Runtime({self.path!r}, backend={self.backend!r}, providers={self.providers})"
