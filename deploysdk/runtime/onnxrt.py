"""ONNX Runtime runner with explicit execution providers, provider options and optional I/O binding.

ONNX Runtime quietly drops a provider whose libraries fail to load (and its Python wrapper retries on the CPU when a
provider errors); this runner disables that fallback, checks the providers the session really got against the ones
asked for and raises ``BackendUnavailableError``, with the missing library named, instead of running somewhere else.

Provider options are built by pure functions (``cuda_provider``, ``tensorrt_provider``, ``providers_for_device``) from
dataclass configs, so what would be sent to a GPU provider can be tested on a machine without one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, ModelLoadError
from .base import Runner, TensorSpec, validate_feed

__all__ = ["OnnxRuntimeRunner", "IOBinder", "SessionConfig", "CUDAOptions", "TensorRTOptions", "parse_device",
           "providers_for_device", "cuda_provider", "tensorrt_provider", "session_options", "default_trt_cache",
           "ORT_DTYPES", "CPU_EP", "CUDA_EP", "TRT_EP"]

log = logging.getLogger(__name__)

CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


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
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


# --- configs ------------------------------------------------------------------------------------------------------
def _as_config(cls, value):
    """A dataclass config from None, an instance or a dict; unknown keys name the accepted ones."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{cls.__name__}: expected a {cls.__name__} or a dict, got {type(value).__name__}")
    accepted = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(accepted))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; accepted: {accepted} (raw onnxruntime "
                         f"provider options go in 'extra')")
    return cls(**value)


def _ort_value(v: Any) -> str:
    """ONNX Runtime parses every provider option from a string; bools as "True"/"False"."""
    return str(v) if not isinstance(v, bool) else ("True" if v else "False")


@dataclass(frozen=True)
class SessionConfig:
    """Session-wide settings. ``threads`` is the intra-op pool (None = ONNX Runtime's default, one per core).

    ``spinning=False`` makes idle pool threads sleep at once: slightly slower on a dedicated machine, much faster
    where other processes share the cores (a spinning worker holds a core that a descheduled one needs)."""

    threads: int | None = None
    inter_op_threads: int | None = None
    optimization: str = "all"  # disable | basic | extended | all
    log_severity: int = 4  # fatal only: provider failures are diagnosed and raised by this runner instead
    spinning: bool | None = None  # idle intra-op threads busy-wait (ORT's default); off on oversubscribed hosts

    def __post_init__(self) -> None:
        for name in ("threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {list(OPTIMIZATION_LEVELS)}, got {self.optimization!r}")


@dataclass(frozen=True)
class CUDAOptions:
    """CUDA execution provider options; None leaves ONNX Runtime's default. ``extra`` takes raw option names."""

    cudnn_conv_algo_search: str | None = None  # EXHAUSTIVE (ORT default) | HEURISTIC | DEFAULT
    gpu_mem_limit: int | None = None  # bytes
    arena_extend_strategy: str | None = None  # kNextPowerOfTwo | kSameAsRequested
    use_tf32: bool | None = None  # ORT's default is on; off gives fp32 results closer to the CPU
    enable_cuda_graph: bool | None = None  # needs fixed input shapes and I/O binding
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        algos = (None, "EXHAUSTIVE", "HEURISTIC", "DEFAULT")
        if self.cudnn_conv_algo_search not in algos:
            raise ValueError(f"cudnn_conv_algo_search must be one of {list(algos)}, got "
                             f"{self.cudnn_conv_algo_search!r}")


def default_trt_cache() -> str:
    """Where the TensorRT EP keeps built engines: ``$DEPLOYSDK_TRT_CACHE`` or ``~/.cache/deploysdk/ort-trt``.

    Building an engine takes seconds to minutes; the cache makes the second load of the same model fast. ONNX
    Runtime names each cached engine after the model's hash, so one folder serves every model."""
    return os.environ.get("DEPLOYSDK_TRT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "deploysdk",
                                                                 "ort-trt")


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT execution provider options. ``profiles``: input name -> (min, opt, max) shapes, for dynamic dims."""

    fp16: bool = False
    int8: bool = False
    engine_cache: bool = True
    engine_cache_path: str | None = None  # None: default_trt_cache()
    timing_cache: bool = True
    workspace_bytes: int | None = None
    builder_optimization_level: int | None = None  # 0..5, ORT default 3
    profiles: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def cuda_provider(device_id: int = 0, options: CUDAOptions | Mapping | None = None) -> tuple[str, dict[str, str]]:
    """``("CUDAExecutionProvider", {...})`` with every value a string, as ONNX Runtime reads them."""
    opts = _as_config(CUDAOptions, options)
    out = {"device_id": device_id}
    for f in dataclasses.fields(CUDAOptions):
        value = getattr(opts, f.name)
        if f.name != "extra" and value is not None:
            out[f.name] = value
    out.update(opts.extra)
    return CUDA_EP, {k: _ort_value(v) for k, v in out.items()}


def _shape_list(profiles: Mapping, which: int) -> str:
    """``{"input": (min, opt, max)}`` -> ``"input:1x1x224x224"`` for one of min/opt/max, comma-joined."""
    parts = []
    for name, shapes in profiles.items():
        if len(shapes) != 3:
            raise ValueError(f"TensorRT profile for {name!r} must be (min, opt, max) shapes, got {shapes!r}")
        parts.append(f"{name}:" + "x".join(str(int(d)) for d in shapes[which]))
    return ",".join(parts)


def tensorrt_provider(device_id: int = 0, options: TensorRTOptions | Mapping | None = None
                      ) -> tuple[str, dict[str, str]]:
    """``("TensorrtExecutionProvider", {...})``: engine cache, timing cache, precision and shape profiles."""
    opts = _as_config(TensorRTOptions, options)
    cache = opts.engine_cache_path or default_trt_cache()
    out: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": opts.fp16, "trt_int8_enable": opts.int8,
                           "trt_engine_cache_enable": opts.engine_cache}
    if opts.engine_cache:
        out["trt_engine_cache_path"] = cache
    if opts.timing_cache:
        out.update(trt_timing_cache_enable=True, trt_timing_cache_path=cache)
    if opts.workspace_bytes is not None:
        out["trt_max_workspace_size"] = int(opts.workspace_bytes)
    if opts.builder_optimization_level is not None:
        out["trt_builder_optimization_level"] = int(opts.builder_optimization_level)
    if opts.profiles:
        for which, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            out[key] = _shape_list(opts.profiles, which)
    out.update(opts.extra)
    return TRT_EP, {k: _ort_value(v) for k, v in out.items()}


def providers_for_device(device: str, *, tensorrt: bool = False, cuda_options=None, tensorrt_options=None) -> list:
    """Provider list for a device. On CUDA the CPU provider stays last: ONNX Runtime places there only the nodes the
    GPU providers have no kernel for (and says so in its verbose log); the session as a whole still needs the
    GPU providers to load, which ``OnnxRuntimeRunner`` checks."""
    kind, index = parse_device(device)
    if kind == "cpu":
        if tensorrt:
            raise BackendUnavailableError("the TensorRT execution provider needs a CUDA device, got device 'cpu'")
        return [CPU_EP]
    gpu = [tensorrt_provider(index, tensorrt_options)] if tensorrt else []
    return gpu + [cuda_provider(index, cuda_options), CPU_EP]


def session_options(ort, config: SessionConfig):
    so = ort.SessionOptions()
    levels = dict(zip(OPTIMIZATION_LEVELS, (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                            ort.GraphOptimizationLevel.ORT_ENABLE_ALL)))
    so.graph_optimization_level = levels[config.optimization]
    if config.threads is not None:
        so.intra_op_num_threads = config.threads
    if config.inter_op_threads is not None:
        so.inter_op_num_threads = config.inter_op_threads
    so.log_severity_level = config.log_severity
    if config.spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spinning else "0")
    return so


# --- helpers ------------------------------------------------------------------------------------------------------
def _provider_name(p: Any) -> str:
    return p[0] if isinstance(p, (tuple, list)) else p


def _spec(arg) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has type {arg.type}, which this runtime does not handle")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(arg.name, np.dtype(dtype), shape)


_PROVIDER_LIBS = {CUDA_EP: "libonnxruntime_providers_cuda.so", TRT_EP: "libonnxruntime_providers_tensorrt.so"}


def _why_not_loaded(ort, name: str) -> str:
    """The loader's reason a provider library failed (e.g. 'libcublasLt.so.13: cannot open shared object file')."""
    lib = _PROVIDER_LIBS.get(name)
    if lib is None:
        return "see onnxruntime's log"
    path = os.path.join(os.path.dirname(ort.__file__), "capi", lib)
    if not os.path.exists(path):
        return f"{lib} is not part of this onnxruntime build"
    try:
        import ctypes

        ctypes.CDLL(path)
    except OSError as e:
        return str(e).replace(path + ": ", "")
    return "its libraries load, but no usable GPU/driver was found"


def _clean(message: str) -> str:
    """Drop the C++ source location ONNX Runtime puts before its messages; keep the first 500 characters."""
    text = re.sub(r"^\S+\.(cc|cpp|h):\d+ [^()]*\([^()]*\) ", "", " ".join(message.split()))
    return text[:500]


def _is_provider_error(message: str) -> bool:
    return any(key in message for key in ("ExecutionProvider", "TensorRT", "CUDA", "cuDNN", "cudnn"))


# --- I/O binding --------------------------------------------------------------------------------------------------
class IOBinder:
    """Runs a session through ``IOBinding``: inputs bound from host arrays, outputs preallocated on the device.

    ``session.run`` allocates every output on each call and, on CUDA, copies inputs and outputs through pageable
    host memory with a sync per tensor. With a binding the outputs live on the device in buffers allocated once per
    input shape (``OrtValue.ortvalue_from_shape_and_type``) and reused, and each comes back with one copy. The first
    call for a shape lets ONNX Runtime allocate (so no output shape has to be guessed) and records the shapes.
    Bindings and buffers are per thread: one runner shared by many threads never writes into another's outputs.
    The logic is device-agnostic, so it runs, and is tested, on the CPU as well.
    """

    def __init__(self, session, device: str = "cpu", device_id: int = 0, outputs: Sequence[TensorSpec] = ()):
        self.session, self.device, self.device_id = session, device, device_id
        self.dtypes = {s.name: np.dtype(s.dtype) for s in outputs}
        self._local = threading.local()

    @staticmethod
    def shape_key(feed: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple:
        """Preallocated outputs are valid for one set of input shapes and requested outputs."""
        return tuple((k, tuple(feed[k].shape)) for k in sorted(feed)), tuple(names)

    def _state(self):
        st = self._local
        if not hasattr(st, "binding"):
            st.binding, st.key, st.buffers = self.session.io_binding(), None, None
        return st

    def _preallocate(self, names: Sequence[str], shapes: Sequence[tuple]) -> list:
        from onnxruntime import OrtValue

        return [OrtValue.ortvalue_from_shape_and_type(list(shape), self.dtypes.get(n, np.float32), self.device,
                                                      self.device_id) for n, shape in zip(names, shapes)]

    def run(self, feed: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        st = self._state()
        binding = st.binding
        binding.clear_binding_inputs()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        key = self.shape_key(feed, names)
        if st.key != key:  # new shapes: let ONNX Runtime allocate once, then keep buffers of those shapes
            binding.clear_binding_outputs()
            for name in names:
                binding.bind_output(name, self.device, self.device_id)
            self.session.run_with_iobinding(binding)
            values = binding.get_outputs()
            st.buffers, st.key = self._preallocate(names, [tuple(v.shape()) for v in values]), key
            binding.clear_binding_outputs()
            for name, buf in zip(names, st.buffers):
                binding.bind_ortvalue_output(name, buf)
            return {n: self._host(v) for n, v in zip(names, values)}
        self.session.run_with_iobinding(binding)
        return {n: self._host(b) for n, b in zip(names, st.buffers)}

    def _host(self, value) -> np.ndarray:
        """``.numpy()`` copies device memory to the host; on the CPU it is a view of a reused buffer: copy it."""
        array = value.numpy()
        return array.copy() if self.device == "cpu" else array


class OnnxRuntimeRunner(Runner):
    """One ``InferenceSession`` on the providers asked for (or the default ones for ``device``).

    ``io_binding``: None = on when the session runs on CUDA (inputs copied once, outputs preallocated on the
    device); True/False forces it (True works on the CPU too, which is how it is tested).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", providers: Sequence | None = None,
                 threads: int | None = None, optimization: str = "all", check_finite: bool = False,
                 io_binding: bool | None = None, tensorrt: bool = False, cuda_options=None, tensorrt_options=None,
                 session_config: SessionConfig | None = None):
        ort = _import_ort()
        self.path, self.device = os.fspath(path), device
        if not os.path.isfile(self.path):
            raise ModelLoadError(f"ONNX model not found: {self.path}")
        config = session_config or SessionConfig(threads=threads, optimization=optimization)
        requested = list(providers) if providers is not None else providers_for_device(
            device, tensorrt=tensorrt, cuda_options=cuda_options, tensorrt_options=tensorrt_options)
        self.session = self._create(ort, requested, config)
        self.providers = self.session.get_providers()
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self._output_names = [s.name for s in self.outputs]
        self.check_finite = check_finite
        on_gpu = self.providers[0] in (CUDA_EP, TRT_EP)
        use_binding = on_gpu if io_binding is None else bool(io_binding)
        index = int(self.session.get_provider_options().get(self.providers[0], {}).get("device_id", 0))
        self._binder = IOBinder(self.session, "cuda" if on_gpu else "cpu", index if on_gpu else 0,
                                self.outputs) if use_binding else None
        log.info("onnxruntime session for %s on %s%s", self.path, self.providers,
                 " with I/O binding" if use_binding else "")

    def _create(self, ort, requested: list, config: SessionConfig):
        available = ort.get_available_providers()
        absent = [_provider_name(p) for p in requested if _provider_name(p) not in available]
        if absent:
            raise BackendUnavailableError(f"execution provider(s) {absent} are not in this onnxruntime build "
                                          f"(available: {available})")
        for name, opts in (p for p in requested if isinstance(p, (tuple, list))):
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):  # the EP expects the folders to exist
                if name == TRT_EP and opts.get(key):
                    os.makedirs(opts[key], exist_ok=True)
        try:  # enable_fallback=0: never let the wrapper retry on the CPU behind our back
            session = ort.InferenceSession(self.path, sess_options=session_options(ort, config),
                                           providers=requested, enable_fallback=0)
        except Exception as e:
            msg = _clean(str(e))
            gpu = [_provider_name(p) for p in requested if _provider_name(p) != CPU_EP]
            if gpu and _is_provider_error(msg):
                reasons = "; ".join(f"{n}: {_why_not_loaded(ort, n)}" for n in gpu)
                raise BackendUnavailableError(f"execution provider(s) {gpu} could not start for {self.path}: {msg} "
                                              f"({reasons})") from e
            raise ModelLoadError(f"onnxruntime could not load {self.path}: {msg}") from e
        got = session.get_providers()
        dropped = [_provider_name(p) for p in requested if _provider_name(p) not in got]
        if dropped:
            reasons = "; ".join(f"{n}: {_why_not_loaded(ort, n)}" for n in dropped)
            raise BackendUnavailableError(f"execution provider(s) {dropped} failed to load ({reasons}); the session "
                                          f"would have run on {got} instead")
        return session

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def io_binding(self) -> bool:
        return self._binder is not None

    def provider_options(self) -> dict[str, dict[str, str]]:
        """What each provider of the live session was configured with (ONNX Runtime's own report)."""
        return self.session.get_provider_options()

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        validate_feed(self.inputs, feed, check_finite=self.check_finite)
        names = list(output_names) if output_names is not None else self._output_names
        if self._binder is not None:
            return self._binder.run(feed, names)
        return dict(zip(names, self.session.run(names, feed if type(feed) is dict else dict(feed))))

    def close(self) -> None:
        self.session = None
        self._binder = None
