"""TensorRT runner: a serialized engine, checked against its sidecar, run through one context per thread.

    with TensorRTRunner("unet.engine", device="cuda:0") as rt:
        mask = rt.run({"input": x})["output"]

The engine is checked against ``<engine>.json`` before TensorRT sees it: an engine built for another TensorRT version
or GPU raises ``EngineMismatchError`` (``rebuild_from="model.onnx"`` rebuilds it instead, with a logged warning).
Each thread that calls ``run`` gets its own execution context, CUDA stream and device buffers, so one runner can be
shared by a thread pool; TensorRT >= 10 lets contexts share an optimization profile (profile sharing is always on).
``tensorrt`` and the CUDA runtime are imported when a runner is created, never at import.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import BackendUnavailableError, DeploySDKError, EngineMismatchError, InputError, ModelLoadError
from . import _cuda
from ._cuda import device_index
from .base import Runner, TensorSpec, validate_feed

__all__ = ["TensorRTRunner", "ShapeRange", "select_profile", "check_sidecar", "load_sidecar", "sidecar_path",
           "profiles_from_json", "normalize_profiles", "engine_up_to_date", "write_engine", "tensor_json",
           "import_tensorrt", "trt_logger", "device_index", "TRT_NUMPY_DTYPES"]

log = logging.getLogger(__name__)

INSTALL_HINT = ("install NVIDIA TensorRT >= 10 for your CUDA version: `pip install tensorrt` (or tensorrt-cu12 / "
                "tensorrt-cu13); it needs an NVIDIA GPU and driver")
# TensorRT DataType names -> numpy dtype names (BF16, FP8, INT4 have no numpy type).
TRT_NUMPY_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                    "BOOL": "bool", "UINT8": "uint8"}
SIDECAR_KEYS = ("tensorrt_version", "gpu_name", "compute_capability")


# --- TensorRT, lazily ---------------------------------------------------------------------------------------------
def import_tensorrt():
    """``import tensorrt`` on first use: the SDK must import (and run on ONNX Runtime) where TensorRT is absent."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(f"the TensorRT backend needs the 'tensorrt' package ({e}); {INSTALL_HINT}") from e
    if not hasattr(trt, "Builder"):
        raise BackendUnavailableError(f"'tensorrt' resolved to {getattr(trt, '__file__', trt)!r}, which is not "
                                      f"NVIDIA TensorRT; {INSTALL_HINT}")
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is installed; this SDK needs >= 10 (name-based "
                                      f"I/O, execute_async_v3); {INSTALL_HINT}")
    return trt


_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def trt_logger():
    """The process-wide ``trt.ILogger`` (TensorRT wants one per process), forwarding to ``logging``.

    It keeps the latest error messages so that a failed build or load can say why instead of pointing at stderr.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            trt = import_tensorrt()

            class _Logger(trt.ILogger):
                def __init__(self):
                    trt.ILogger.__init__(self)
                    self.errors: list[str] = []

                def log(self, severity, msg):
                    level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
                    if level <= 1:
                        self.errors = self.errors[-63:] + [msg]
                        log.error("TensorRT: %s", msg)
                    elif level == 2:
                        log.warning("TensorRT: %s", msg)
                    elif level == 3:
                        log.debug("TensorRT: %s", msg)

            _LOGGER = _Logger()
    return _LOGGER


# --- optimization profiles ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shape of one input in one optimization profile; TensorRT tunes its kernels for ``opt``."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def profiles_from_json(data) -> list[dict[str, ShapeRange]]:
    """The sidecar's ``profiles`` (list of {input: {min, opt, max}}) back into ShapeRanges."""
    return [{name: ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"])) for name, r in prof.items()}
            for prof in data or []]


def _check_static(spec: TensorSpec, shape: Sequence[int], what: str) -> None:
    if len(shape) != len(spec.shape) or any(w is not None and w != s for w, s in zip(spec.shape, shape)):
        raise InputError(f"{what} for input {spec.name!r} is {tuple(shape)}, which does not fit {spec.describe()}")


def _as_range(spec: TensorSpec, value, where: str) -> ShapeRange:
    if isinstance(value, ShapeRange):
        triple = (value.min, value.opt, value.max)
    elif isinstance(value, Mapping) and set(value) >= {"min", "opt", "max"}:
        triple = (value["min"], value["opt"], value["max"])
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3:
        triple = tuple(value)
    else:
        raise InputError(f"{where}: expected (min, opt, max) shapes for input {spec.name!r}, got {value!r}")
    try:
        lo, opt, hi = (tuple(int(d) for d in s) for s in triple)
    except (TypeError, ValueError):
        raise InputError(f"{where}: shapes for input {spec.name!r} must be sequences of ints, got {value!r}") from None
    for label, shape in (("min", lo), ("opt", opt), ("max", hi)):
        if min(shape, default=1) < 1:
            raise InputError(f"{where}: {label} shape {shape} of input {spec.name!r} has a dimension < 1")
        _check_static(spec, shape, f"{where}: {label} shape")
    bad = [axis for axis, (a, b, c) in enumerate(zip(lo, opt, hi)) if not a <= b <= c]
    if bad:
        raise InputError(f"{where}: input {spec.name!r} needs min <= opt <= max in every dimension; dimension "
                         f"{bad[0]} has min {lo[bad[0]]}, opt {opt[bad[0]]}, max {hi[bad[0]]}")
    return ShapeRange(lo, opt, hi)


def normalize_profiles(profiles, input_specs: Sequence[TensorSpec]) -> list[dict[str, ShapeRange]]:
    """Validate explicit profiles ``{input: (min, opt, max)}`` (or a list of them) against the model's inputs."""
    items = [profiles] if isinstance(profiles, Mapping) else list(profiles)
    specs = {s.name: s for s in input_specs}
    dynamic = [s.name for s in input_specs if None in s.shape]
    if not items and dynamic:
        raise InputError(f"profiles is empty but inputs {dynamic} are dynamic and need one")
    out = []
    for i, prof in enumerate(items):
        where = f"profile {i}"
        if not isinstance(prof, Mapping):
            raise InputError(f"{where}: expected a dict of input name -> (min, opt, max), got {type(prof).__name__}")
        unknown, missing = sorted(set(prof) - set(specs)), [n for n in dynamic if n not in prof]
        if unknown or missing:
            raise InputError(f"{where} names {sorted(prof)}; the model's inputs are {sorted(specs)} (unknown "
                             f"{unknown}, dynamic inputs missing {missing})")
        full = {}
        for name, spec in specs.items():
            full[name] = _as_range(spec, prof[name], where) if name in prof else ShapeRange(*(spec.shape,) * 3)
        out.append(full)
    return out


def select_profile(profiles: Sequence[Mapping[str, ShapeRange]], shapes: Mapping[str, Sequence[int]]) -> int:
    """Index of the first profile whose ranges hold every input shape, else ``InputError`` naming input and range.

    TensorRT would reject the shape too, but only with a log line; this names the input, its shape and the range.
    """
    if not profiles:
        return 0  # static engine
    for i, prof in enumerate(profiles):
        if all(prof[n].contains(s) for n, s in shapes.items() if n in prof):
            return i
    reasons = []
    for i, prof in enumerate(profiles):
        name = next(n for n, s in shapes.items() if n in prof and not prof[n].contains(s))
        reasons.append(f"profile {i} takes {name!r} from min {prof[name].min} to max {prof[name].max}")
    name = next(n for n, s in shapes.items() if any(n in p and not p[n].contains(s) for p in profiles))
    raise InputError(f"input {name!r} has shape {tuple(shapes[name])}, outside the engine's optimization profiles "
                     f"({'; '.join(reasons)}): split the batch, resize, or rebuild the engine with wider profiles")


# --- sidecar ------------------------------------------------------------------------------------------------------
def sidecar_path(engine_path: str | os.PathLike) -> str:
    return os.fspath(engine_path) + ".json"


def load_sidecar(engine_path: str | os.PathLike) -> dict:
    """The JSON written next to an engine by ``build_engine``; ``ModelLoadError`` if missing or unreadable."""
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"no sidecar {path} next to engine {os.fspath(engine_path)}: it records the TensorRT "
                             "version and GPU the engine was built for, which must match the ones running it. "
                             "Rebuild the engine with deploysdk.tensorrt.build_engine (or `deploysdk build-engine`), "
                             "or pass check=False to load it unchecked")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"engine sidecar {path} is unreadable ({e}); rebuild the engine") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"engine sidecar {path} holds a {type(data).__name__}, expected a JSON object")
    return data


def _cc(value) -> str:
    if isinstance(value, (tuple, list)):
        return ".".join(str(int(v)) for v in value)
    return str(value).strip()


def check_sidecar(sidecar: Mapping[str, Any], *, trt_version: str, gpu_name: str, compute_capability) -> None:
    """Raise ``EngineMismatchError`` unless the engine was built for this TensorRT version and GPU model.

    Engines hold kernels chosen and compiled for one GPU architecture by one TensorRT release; elsewhere TensorRT
    refuses them or, worse, runs them slowly or wrongly. ``compute_capability``: "8.6" or (8, 6).
    """
    missing = [k for k in SIDECAR_KEYS if k not in sidecar]
    if missing:
        raise ModelLoadError(f"engine sidecar lacks {missing}: it was not written by build_engine; rebuild the engine")
    built = (str(sidecar["tensorrt_version"]), str(sidecar["gpu_name"]), _cc(sidecar["compute_capability"]))
    here = (str(trt_version), str(gpu_name), _cc(compute_capability))
    diffs = [what for what, a, b in zip(("TensorRT version", "GPU", "compute capability"), built, here) if a != b]
    if diffs:
        onnx = sidecar.get("onnx_path") or "model.onnx"
        raise EngineMismatchError(
            f"engine was built for TensorRT {built[0]} on {built[1]} (compute capability {built[2]}); this process "
            f"runs TensorRT {here[0]} on {here[1]} (compute capability {here[2]}): {' and '.join(diffs)} differ. "
            f"Engines run only where they were built. Rebuild it from its ONNX: TensorRTRunner(engine, "
            f"rebuild_from={onnx!r}), or `deploysdk build-engine {onnx} ENGINE`")


def engine_up_to_date(engine_path: str, trt_version: str, device, **expected) -> dict | None:
    """The engine's sidecar if it fits this TensorRT and GPU, holds every ``expected`` value (``onnx_sha256=``,
    ``precision=``, ``profiles=`` as JSON) and the engine file has the recorded size; else None: build it."""
    try:
        old = load_sidecar(engine_path)
        check_sidecar(old, trt_version=trt_version, gpu_name=device.name, compute_capability=device.compute_capability)
    except (ModelLoadError, EngineMismatchError):
        return None
    if any(old.get(key) != value for key, value in expected.items()) or not os.path.isfile(engine_path):
        return None
    return old if os.path.getsize(engine_path) == old.get("engine_bytes") else None


def write_engine(engine_path: str, serialized, sidecar: dict) -> dict:
    """Engine, then sidecar, each atomically; the sidecar gets the engine's size (checked at load) and sha256."""
    blob = memoryview(serialized)
    sidecar.update(engine_bytes=blob.nbytes, engine_sha256=hashlib.sha256(blob).hexdigest())
    with atomic_path(engine_path, suffix=".engine") as tmp, open(tmp, "wb") as f:
        f.write(blob)
    with atomic_path(sidecar_path(engine_path), suffix=".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    return sidecar


def _type_name(trt_dtype) -> str:
    return getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])


def tensor_json(t) -> dict:
    """Name, dtype (numpy's name; TensorRT's where numpy has none) and shape (None: dynamic) of a TensorRT tensor."""
    key = _type_name(t.dtype)
    return {"name": t.name, "dtype": TRT_NUMPY_DTYPES.get(key, key.lower()),
            "shape": [int(d) if d >= 0 else None for d in t.shape]}


# --- the runner ---------------------------------------------------------------------------------------------------
@dataclass
class _ThreadState:
    """What one thread runs with: TensorRT contexts and CUDA streams must not be used by two threads at once."""

    context: Any
    stream: _cuda.Stream
    buffers: dict = field(default_factory=dict)
    profile: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def buffer(self, name: str, nbytes: int) -> int:
        return self.buffers.setdefault(name, _cuda.DeviceBuffer()).reserve(nbytes)

    def free(self) -> None:
        self.context = None
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.stream.free()


def _np_dtype(trt_dtype, name: str) -> np.dtype:
    key = _type_name(trt_dtype)
    if key not in TRT_NUMPY_DTYPES:
        raise ModelLoadError(f"engine tensor {name!r} has TensorRT type {key}, which numpy cannot hold; keep the "
                             "model's inputs and outputs float32/float16 (reduced precision inside is fine)")
    return np.dtype(TRT_NUMPY_DTYPES[key])


class TensorRTRunner(Runner):
    """Run a serialized TensorRT engine; see the module docstring. ``check=False`` skips the sidecar check."""

    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, *, device: str = "cuda:0",
                 rebuild_from: str | os.PathLike | None = None, check: bool = True, check_finite: bool = False):
        self.path = os.fspath(engine_path)
        if self.path.lower().endswith(".onnx"):
            raise ModelLoadError(f"{self.path} is an ONNX model; TensorRTRunner takes a serialized engine. Build one: "
                                 f"deploysdk.tensorrt.build_engine({self.path!r}, 'model.engine')")
        # _check_finite is private on purpose: the Runtime facade checks inputs itself when a runner has no public
        # ``check_finite`` attribute, and it does not pass check_finite to this runner.
        self.device_index, self._check_finite, self.rebuilt = device_index(device), check_finite, None
        trt = import_tensorrt()
        self.device = _cuda.device_info(self.device_index)
        self._local, self._lock, self._states, self._closed = threading.local(), threading.Lock(), [], False
        try:
            self.sidecar, self._runtime, self.engine = self._open(trt, check)
        except (ModelLoadError, EngineMismatchError) as e:
            if rebuild_from is None:
                raise
            self._rebuild(os.fspath(rebuild_from), e)
            self.sidecar, self._runtime, self.engine = self._open(trt, check)
        self.inputs, self.outputs = self._io_specs(trt)
        self.profiles = self._engine_profiles()
        log.info("TensorRT %s engine %s on %s (cuda:%d)", trt.__version__, self.path, self.device.name,
                 self.device_index)

    # --- loading ----------------------------------------------------------------------------------------------
    def _open(self, trt, check: bool):
        if not os.path.isfile(self.path):
            raise ModelLoadError(f"TensorRT engine not found: {self.path} (build it with deploysdk.tensorrt."
                                 "build_engine, or pass rebuild_from='model.onnx')")
        sidecar = None
        if check:
            sidecar = load_sidecar(self.path)
            check_sidecar(sidecar, trt_version=trt.__version__, gpu_name=self.device.name,
                          compute_capability=self.device.compute_capability)
        elif os.path.isfile(sidecar_path(self.path)):
            try:
                sidecar = load_sidecar(self.path)
            except ModelLoadError as e:
                log.warning("ignoring the unreadable sidecar of %s (check=False): %s", self.path, e)
        with open(self.path, "rb") as f:
            data = f.read()
        expected = (sidecar or {}).get("engine_bytes")
        if check and expected is not None and expected != len(data):
            raise ModelLoadError(f"engine {self.path} is {len(data)} bytes, its sidecar says {expected}: the file "
                                 "is truncated or was replaced without its sidecar; rebuild it")
        runtime = trt.Runtime(trt_logger())
        try:
            engine = runtime.deserialize_cuda_engine(data)
        except Exception as e:  # some bindings raise instead of returning None
            engine, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "; ".join(trt_logger().errors[-3:]) or "no reason logged"
        if engine is None:
            raise ModelLoadError(f"TensorRT could not deserialize {self.path} ({len(data)} bytes): the file is "
                                 f"truncated or corrupt, or not an engine for this TensorRT ({why})")
        return sidecar, runtime, engine

    def _rebuild(self, onnx_path: str, reason: Exception) -> None:
        """Explicit opt-in (``rebuild_from``): rebuild with the old engine's precision and profiles, and say so."""
        from ..tensorrt import build_engine

        try:
            old = load_sidecar(self.path)
        except ModelLoadError:
            old = {}
        log.warning("TensorRTRunner: rebuilding %s from %s because: %s", self.path, onnx_path, reason)
        self.rebuilt = build_engine(onnx_path, self.path, precision=old.get("precision", "fp32"),
                                    profiles=profiles_from_json(old.get("profiles")) or None,
                                    workspace=old.get("workspace_bytes"), device=self.device_index, rebuild=True)
        log.warning("TensorRTRunner: %s", self.rebuilt.summary())

    def _io_specs(self, trt) -> tuple[list[TensorSpec], list[TensorSpec]]:
        inputs, outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(int(d) if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            spec = TensorSpec(name, _np_dtype(self.engine.get_tensor_dtype(name), name), shape)
            (inputs if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        return inputs, outputs

    def _engine_profiles(self) -> list[dict[str, ShapeRange]]:
        if all(None not in s.shape for s in self.inputs):
            return []
        profiles = []
        for p in range(self.engine.num_optimization_profiles):
            prof = {}
            for s in self.inputs:
                if None in s.shape:
                    shapes = self.engine.get_tensor_profile_shape(s.name, p)  # [min, opt, max]
                    prof[s.name] = ShapeRange(*(tuple(int(d) for d in dims) for dims in shapes))
                else:
                    prof[s.name] = ShapeRange(s.shape, s.shape, s.shape)
            profiles.append(prof)
        return profiles

    @property
    def providers(self) -> list[str]:
        return ["TensorrtEngine"]

    @property
    def metadata(self) -> dict[str, str]:
        """The ONNX model's metadata (``sdk.*``), copied into the sidecar at build time."""
        return dict((self.sidecar or {}).get("metadata", {}))

    # --- running ----------------------------------------------------------------------------------------------
    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            _cuda.set_device(self.device_index)
            context = self.engine.create_execution_context() if self.engine is not None else None
            if context is None:
                raise ModelLoadError(f"could not create a TensorRT execution context for {self.path} (runner closed, "
                                     f"or out of GPU memory: {'; '.join(trt_logger().errors[-2:])})")
            state = _ThreadState(context, _cuda.Stream())
            with self._lock:
                if self._closed:
                    state.free()
                    raise ModelLoadError(f"TensorRTRunner for {self.path} is closed")
                self._states.append(state)
            self._local.state = state
        return state

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        validate_feed(self.inputs, feed, check_finite=self._check_finite)
        names = list(output_names) if output_names is not None else [s.name for s in self.outputs]
        unknown = sorted(set(names) - {s.name for s in self.outputs})
        if unknown:
            raise InputError(f"output_names {unknown} are not outputs of this engine {[s.name for s in self.outputs]}")
        profile = select_profile(self.profiles, {n: a.shape for n, a in feed.items()})
        state = self._state()
        with state.lock:
            if self._closed:
                raise ModelLoadError(f"TensorRTRunner for {self.path} is closed")
            _cuda.set_device(self.device_index)
            return self._execute(state, feed, names, profile)

    def _execute(self, st: _ThreadState, feed, names: list[str], profile: int) -> dict[str, np.ndarray]:
        ctx, keep = st.context, []
        if profile != st.profile:
            if not ctx.set_optimization_profile_async(profile, st.stream.handle):
                raise InputError(f"TensorRT refused optimization profile {profile} of {self.path}")
            st.profile = profile
        for spec in self.inputs:
            arr = np.ascontiguousarray(feed[spec.name])
            keep.append(arr)  # the async copy reads it until the stream syncs
            if not ctx.set_input_shape(spec.name, arr.shape):
                raise InputError(f"TensorRT rejected shape {arr.shape} for input {spec.name!r} (profile {profile})")
            ptr = st.buffer(spec.name, arr.nbytes)
            ctx.set_tensor_address(spec.name, ptr)
            _cuda.memcpy_htod_async(ptr, arr, st.stream)
        outs = {}
        for spec in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise ModelLoadError(f"output {spec.name!r} has a data-dependent shape {shape}; not supported")
            outs[spec.name] = np.empty(shape, dtype=spec.dtype)
            ctx.set_tensor_address(spec.name, st.buffer(spec.name, outs[spec.name].nbytes))
        if not ctx.execute_async_v3(st.stream.handle):
            st.stream.synchronize()
            raise _cuda.CudaError(f"TensorRT execution of {self.path} failed: {'; '.join(trt_logger().errors[-3:])}")
        for name in names:
            _cuda.memcpy_dtoh_async(outs[name], st.buffers[name].ptr, st.stream)
        st.stream.synchronize()
        return {name: outs[name] for name in names}

    def close(self) -> None:
        """Free every thread's context, stream and buffers, then the engine. Idempotent; waits for running calls."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states, self._states = self._states, []
        for state in states:
            with state.lock:
                with contextlib.suppress(DeploySDKError):  # free what we can even if the device is gone
                    _cuda.set_device(self.device_index)
                state.free()
        self.engine = self._runtime = None
