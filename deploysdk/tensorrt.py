"""Build TensorRT engines from the SDK's ONNX files, with a sidecar that says what each engine was built for.

    report = build_engine("unet.onnx", "unet.engine", precision="fp16", example_shapes={"input": (4, 1, 256, 256)})
    print(report.summary())

An engine runs only on the TensorRT version and GPU model it was built with, so each gets ``<engine>.json`` (TensorRT
version, GPU and compute capability, ONNX sha256, precision, profiles, I/O, the ONNX metadata) that ``TensorRTRunner``
checks. Every decision (precision, profiles, workspace, sidecar checks) is a pure function testable without TensorRT,
which is imported only when an engine is built or loaded.

Precision (``plan_precision``):
  * "fp32": FP32 everywhere, TF32 off (TensorRT's default TF32 costs ~1e-3 relative error in convolutions).
  * "fp16"/"bf16": TensorRT 10 may run any layer in that type (builder flag). TensorRT 11 dropped those flags: the
    reduced types must already be in the ONNX graph (ModelOpt AutoCast).
  * "int8": explicit Q/DQ only (``deploysdk.quantize.quantize_int8(..., target="tensorrt")``), no calibrators. Built
    strongly typed: layers inside Q/DQ pairs run in INT8, all others in the graph's FP32. Deliberately no FP16
    fallback: the quantizer's accuracy gate measured INT8 with FP32 around it, and FP16 on top would add error
    nobody measured; where FP16 is wanted for the rest, it belongs in the graph (AutoCast) before quantizing.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ._atomic import atomic_path, sha256_file
from .errors import BackendUnavailableError, InputError, ModelLoadError
from .runtime import _cuda
from .runtime.base import TensorSpec, input_contract
from .runtime.trt import (ShapeRange, _cc, _check_static, check_sidecar, engine_up_to_date, import_tensorrt,
                          load_sidecar, normalize_profiles, select_profile, sidecar_path, tensor_json, trt_logger,
                          write_engine)

__all__ = ["build_engine", "BuildReport", "PrecisionPlan", "OnnxInfo", "PRECISIONS", "derive_profiles",
           "plan_precision", "check_precision", "parse_workspace", "read_onnx", "count_qdq", "asymmetric_qdq",
           # from runtime.trt, which loads engines without importing the builder (or onnx)
           "ShapeRange", "normalize_profiles", "select_profile", "check_sidecar", "load_sidecar", "sidecar_path"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEFAULT_MAX_BATCH = 32
SIDECAR_FORMAT = 1
Profile = dict  # input name -> ShapeRange


# --- workspace ----------------------------------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


def parse_workspace(value) -> int | None:
    """None (TensorRT's default: the whole device), bytes as an int, or a string such as "4GiB", "512MiB", "1.5GB".

    K/M/G and KiB/MiB/GiB are powers of 1024, KB/MB/GB powers of 1000, as on the drive labels they come from.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"workspace must be bytes (int) or a string like '4GiB', got {type(value).__name__}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"workspace {value!r} is not a size: use bytes or a number with B, KiB, MiB, GiB, TiB "
                             "(powers of 1024) or KB, MB, GB, TB (powers of 1000), e.g. '4GiB'")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"workspace must be a positive number of bytes, got {value}")
    return value


# --- optimization profiles ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _SizeRule:
    """Spatial sizes a model accepts (its ``sdk.input_contract``): ``s >= min_size``, ``(s - offset) % step == 0``."""

    min_size: int = 1
    step: int = 1
    offset: int = 0

    @classmethod
    def from_contract(cls, contract: Mapping[str, Any] | None) -> "_SizeRule":
        c = contract or {}  # size_step/size_offset: sizes of the form step*k + offset (the valid-padding U-Net)
        step, offset = (c["size_step"], c.get("size_offset", 0)) if c.get("size_step") else (c.get("multiple") or 1, 0)
        return cls(int(c.get("min_size") or 1), int(step), int(offset))

    def valid(self, s: int) -> bool:
        return s >= self.min_size and (s - self.offset) % self.step == 0

    def up(self, n: int) -> int:
        return math.ceil((max(n, self.min_size) - self.offset) / self.step) * self.step + self.offset

    def down(self, n: int) -> int | None:
        s = math.floor((n - self.offset) / self.step) * self.step + self.offset
        return s if s >= self.min_size else None

    def describe(self) -> str:
        form = f"of the form {self.step}k{self.offset:+d}" if self.offset else f"a multiple of {self.step}"
        return f">= {self.min_size}" + (f", {form}" if self.step > 1 else "")


def _example_map(specs: Sequence[TensorSpec], example_shapes) -> dict[str, tuple[int, ...]]:
    if example_shapes is None:
        return {}
    if not isinstance(example_shapes, Mapping):
        if len(specs) != 1:
            raise InputError(f"example_shapes must be a dict of input name -> shape for a model with inputs "
                             f"{[s.name for s in specs]}, got {example_shapes!r}")
        example_shapes = {specs[0].name: example_shapes}
    unknown = sorted(set(example_shapes) - {s.name for s in specs})
    if unknown:
        raise InputError(f"example_shapes name {unknown}, which are not model inputs {[s.name for s in specs]}")
    return {k: tuple(int(d) for d in v) for k, v in example_shapes.items()}


def _spatial_range(spec, axis, example, spatial_range, contract) -> tuple[int, int, int]:
    rule = _SizeRule.from_contract(contract)
    defaults = (contract or {}).get("default_size") or []
    if example is not None:
        opt = example[axis]
    elif axis - 2 < len(defaults):
        opt = int(defaults[axis - 2])
    else:
        raise InputError(f"input {spec.name!r} has a dynamic dimension {axis} and no size to tune for: pass "
                         f"example_shapes={{'{spec.name}': (...)}} or explicit profiles")
    if not rule.valid(opt):
        raise InputError(f"input {spec.name!r}: size {opt} in dimension {axis} is not one the model accepts "
                         f"({rule.describe()}; nearest valid above: {rule.up(opt)})")
    if spatial_range is not None:
        lo, hi = rule.up(spatial_range[0]), rule.down(spatial_range[1])
    elif contract and not contract.get("fixed_size"):
        lo, hi = rule.up(rule.min_size), rule.down(2 * opt)  # 2x the example: headroom without huge workspaces
    else:
        lo = hi = opt  # without the SDK's contract we cannot know which other sizes the network takes
    if hi is None or not lo <= opt <= hi:
        raise InputError(f"input {spec.name!r} dimension {axis}: spatial_range {spatial_range} gives valid sizes "
                         f"{lo}..{hi} ({rule.describe()}), which must include the example size {opt}")
    return lo, opt, hi


def _derive_range(spec: TensorSpec, example, max_batch, spatial_range, contract) -> ShapeRange:
    if example is not None:
        _check_static(spec, example, "example shape")
    rank_ok = contract and len(spec.shape) == 2 + int(contract.get("spatial_dims", len(spec.shape) - 2))
    lo, opt, hi = [], [], []
    for axis, dim in enumerate(spec.shape):
        if dim is not None:
            triple = (dim, dim, dim)
        elif axis == 0:
            b = example[0] if example is not None else 1
            top = max_batch if max_batch is not None else max(DEFAULT_MAX_BATCH, b)
            if top < b:
                raise InputError(f"max_batch={max_batch} is below the example batch {b} of input {spec.name!r}")
            triple = (1, b, top)
        elif axis >= 2 and (rank_ok or not contract):
            triple = _spatial_range(spec, axis, example, spatial_range, contract if rank_ok else None)
        elif example is not None:
            triple = (example[axis],) * 3  # a dynamic non-spatial dim: fixed at the example
        else:
            raise InputError(f"input {spec.name!r} has a dynamic dimension {axis} that is neither batch nor spatial: "
                             f"pass example_shapes or explicit profiles")
        for out, v in zip((lo, opt, hi), triple):
            out.append(int(v))
    return ShapeRange(tuple(lo), tuple(opt), tuple(hi))


def derive_profiles(input_specs: Sequence[TensorSpec], example_shapes=None, *, max_batch: int | None = None,
                    spatial_range: tuple[int, int] | None = None,
                    contract: Mapping[str, Any] | None = None) -> list[Profile]:
    """One optimization profile covering every dynamic input; ``[]`` when all inputs are static.

    Batch: min 1, opt the example's batch (else 1), max ``max_batch`` (default max(32, opt)). Spatial dims: opt the
    example size (else the contract's ``default_size``); min the smallest size the model's ``sdk.input_contract``
    allows, max twice opt, both snapped to sizes it accepts (``min_size``, ``multiple`` or ``size_step``/
    ``size_offset``); ``spatial_range=(lo, hi)`` overrides both. Without a contract the profile is the example only.
    """
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    if spatial_range is not None and (len(spatial_range) != 2 or not 1 <= spatial_range[0] <= spatial_range[1]):
        raise ValueError(f"spatial_range must be (smallest, largest) with 1 <= smallest <= largest, got "
                         f"{spatial_range!r}")
    examples = _example_map(input_specs, example_shapes)
    ranges = {s.name: _derive_range(s, examples.get(s.name), max_batch, spatial_range, contract) for s in input_specs}
    return [ranges] if any(None in s.shape for s in input_specs) else []


# --- the ONNX side ------------------------------------------------------------------------------------------------
@dataclass
class OnnxInfo:
    """What the builder needs to know about an ONNX file before TensorRT sees it."""

    path: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    low_precision: frozenset = frozenset()  # {"float16", "bfloat16"} found in the graph
    contract: dict | None = None
    asymmetric: list = field(default_factory=list)  # Q/DQ nodes with uint8 or non-zero zero points

    @property
    def has_qdq(self) -> bool:
        return self.quantize_nodes > 0 and self.dequantize_nodes > 0


def count_qdq(model) -> tuple[int, int]:
    """(QuantizeLinear, DequantizeLinear) nodes in the graph, its subgraphs and its local functions."""
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}

    def walk(nodes):
        for node in nodes:
            if node.op_type in counts:
                counts[node.op_type] += 1
            for attr in node.attribute:
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(g.node)

    walk([*model.graph.node, *(node for fn in model.functions for node in fn.node)])
    return counts["QuantizeLinear"], counts["DequantizeLinear"]


def asymmetric_qdq(model) -> list[str]:
    """Q/DQ nodes TensorRT cannot build: its explicit quantization is symmetric int8 (zero point 0) only."""
    from onnx import TensorProto, numpy_helper

    inits, bad = {t.name: t for t in model.graph.initializer}, []
    for node in (n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and (zp.data_type == TensorProto.UINT8 or numpy_helper.to_array(zp).any()):
            bad.append(node.name or node.output[0])
    return bad


def _low_precision(model) -> frozenset:
    from onnx import TensorProto

    g, names = model.graph, {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
    found = {t.data_type for t in g.initializer}
    found |= {v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    found |= {a.i for n in g.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    return frozenset(names[t] for t in found if t in names)


def _tensor_spec(value) -> TensorSpec:
    from onnx import helper

    tt = value.type.tensor_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = np.dtype(np.float32)  # types numpy lacks (bfloat16, fp8) only matter to TensorRT, not to profiles
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
    return TensorSpec(value.name, dtype, shape)


def read_onnx(path: str | os.PathLike) -> OnnxInfo:
    """Inputs, outputs, metadata, Q/DQ counts and reduced-precision types of an ONNX file (weights not loaded)."""
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"could not read ONNX model {path}: {str(e).strip()[:300]}") from e
    inits = {t.name for t in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    q, dq = count_qdq(model)
    return OnnxInfo(path, [_tensor_spec(v) for v in model.graph.input if v.name not in inits],
                    [_tensor_spec(v) for v in model.graph.output], meta, q, dq, _low_precision(model),
                    input_contract(meta), asymmetric_qdq(model))


# --- precision ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision request becomes TensorRT settings: network typing and ``trt.BuilderFlag`` member names."""

    precision: str
    strongly_typed: bool = False
    flags: tuple[str, ...] = ()
    cleared_flags: tuple[str, ...] = ()
    note: str = ""


def check_precision(precision: str, *, has_qdq: bool, asymmetric: Sequence[str] = ()) -> None:
    """The request must match the graph: Q/DQ nodes mean int8, and int8 needs them (TensorRT has no calibrators),
    symmetric (``asymmetric``: names of Q/DQ nodes with uint8 or non-zero zero points)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and asymmetric:
        raise ValueError(f"{len(asymmetric)} Q/DQ nodes (first: {asymmetric[0]!r}) have uint8 or non-zero zero points, "
                         "the ONNX Runtime CPU form (U8S8); TensorRT takes only symmetric int8. Quantize for it: "
                         "deploysdk.quantize.quantize_int8(..., target='tensorrt')")
    if precision == "int8" and not has_qdq:
        raise ValueError("precision='int8' needs an explicitly quantized ONNX (QuantizeLinear/DequantizeLinear nodes) "
                         "and this graph has none: TensorRT >= 10 takes INT8 only from Q/DQ nodes. Quantize it first "
                         "with deploysdk.quantize.quantize_int8 (calibration data -> a Q/DQ ONNX) and build that file")
    if has_qdq and precision != "int8":
        raise ValueError(f"this ONNX is quantized (it holds Q/DQ nodes) but precision={precision!r} was asked for: "
                         f"build it with precision='int8', or build the unquantized ONNX for {precision}")


def plan_precision(precision: str, *, trt_major: int = 10, graph_types=frozenset(),
                   compute_capability=None) -> PrecisionPlan:
    """TensorRT settings for ``precision`` (see the module docstring for the choices and why).

    ``graph_types``: reduced float types already in the ONNX ({"float16", "bfloat16"}), which is how TensorRT 11 gets
    FP16/BF16 since it dropped the builder flags.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    cc = tuple(map(int, _cc(compute_capability).split("."))) if compute_capability is not None else None
    if precision == "bf16" and cc is not None and cc < (8, 0):
        raise BackendUnavailableError(f"bf16 needs a GPU of compute capability >= 8.0 (Ampere or newer); this one is "
                                      f"{compute_capability}: use fp16")
    if precision == "fp32":
        return PrecisionPlan("fp32", cleared_flags=("TF32",), note="FP32 everywhere, TF32 off")
    if precision == "int8":
        return PrecisionPlan("int8", strongly_typed=True, cleared_flags=("TF32",),
                             note="Q/DQ layers in INT8, the rest in the graph's own types (FP32); no FP16 fallback")
    low = {"fp16": "float16", "bf16": "bfloat16"}[precision]
    if trt_major >= 11:
        if low not in graph_types:
            raise BackendUnavailableError(
                f"TensorRT {trt_major} removed the {precision.upper()} builder flag: reduced precision must be in the "
                f"ONNX graph itself. Convert it with ModelOpt AutoCast (modelopt.onnx.autocast."
                f"convert_to_mixed_precision(onnx_path=..., low_precision_type='{precision}', keep_io_types=True)), "
                f"save and build that file with precision='{precision}', or use TensorRT 10")
        return PrecisionPlan(precision, strongly_typed=True, note=f"{precision} where the graph says (strong typing)")
    return PrecisionPlan(precision, flags=(precision.upper(),),
                         note=f"TensorRT may run any layer in {precision}; FP32 where faster or needed")


# --- building -----------------------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What ``build_engine`` produced (or found up to date): the sidecar's key facts plus timing."""

    engine_path: str
    onnx_path: str
    precision: str
    profiles: list[Profile]
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    seconds: float
    reused: bool = False
    engine_bytes: int = 0
    note: str = ""
    sidecar: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_sidecar(cls, sidecar: dict, engine_path: str, profiles, seconds: float, reused: bool) -> "BuildReport":
        return cls(engine_path, sidecar["onnx_path"], sidecar["precision"], list(profiles), sidecar["tensorrt_version"],
                   sidecar["gpu_name"], sidecar["compute_capability"], seconds, reused,
                   int(sidecar.get("engine_bytes", 0)), sidecar.get("precision_note", ""), sidecar)

    def summary(self) -> str:
        how = "up to date, reused" if self.reused else f"built in {self.seconds:.1f} s"
        prof = " | ".join(", ".join(f"{n} {r.min}..{r.max} opt {r.opt}" for n, r in p.items() if r.min != r.max)
                          for p in self.profiles) or "static shapes"
        return (f"{self.engine_path}: {how}; {self.precision} ({self.note}), {self.engine_bytes / 2**20:.1f} MiB, "
                f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute capability {self.compute_capability}) "
                f"from {self.onnx_path}; profiles: {prof}")


def _profiles_json(profiles: Sequence[Profile]) -> list[dict]:
    return [{name: r.to_json() for name, r in prof.items()} for prof in profiles]


def _resolve_profiles(info: OnnxInfo, profiles, example_shapes, max_batch, spatial_range) -> list[Profile]:
    if profiles is None:
        return derive_profiles(info.inputs, example_shapes, max_batch=max_batch, spatial_range=spatial_range,
                               contract=info.contract)
    out = normalize_profiles(profiles, info.inputs)
    if example_shapes is not None and out:
        select_profile(out, _example_map(info.inputs, example_shapes))  # the examples must fit some profile
    return out


def _parser_error(err) -> str:
    where = {attr[5:]: getattr(err, attr)() for attr in ("node_name", "node_operator") if hasattr(err, attr)}
    return ", ".join([str(err.desc())] + [f"{key} {value}" for key, value in where.items() if value])


def _configure(trt, builder, config, plan: PrecisionPlan, info: OnnxInfo, profiles, workspace) -> None:
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    for name in plan.flags:  # only FP16/BF16, and only planned for TensorRT 10, which has them
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        if hasattr(trt.BuilderFlag, name):  # TF32: gone where a TensorRT release drops it
            config.clear_flag(getattr(trt.BuilderFlag, name))
    dynamic = [s.name for s in info.inputs if None in s.shape]
    for prof in profiles if dynamic else []:  # static inputs need no profile: TensorRT makes the default one
        p = builder.create_optimization_profile()
        for name in dynamic:
            p.set_shape(name, prof[name].min, prof[name].opt, prof[name].max)
        config.add_optimization_profile(p)


def _attach_timing_cache(config, path: str | None) -> None:
    """Reuse tactic timings across builds (minutes saved on big nets); a cache from elsewhere is replaced, not used."""
    if not path:
        return
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    try:
        ok = config.set_timing_cache(config.create_timing_cache(data), False)
    except Exception:  # not a timing cache at all
        ok = False
    if data and not ok:
        log.warning("timing cache %s is unreadable or from another TensorRT/GPU; starting a fresh one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _build(trt, info: OnnxInfo, plan: PrecisionPlan, profiles, workspace, cache_path):
    """Parse, configure, build. Returns (serialized engine, (inputs, outputs) as JSON-ready dicts)."""
    logger = trt_logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(info.path):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(f"TensorRT's ONNX parser rejected {info.path} ({len(errors)} error(s)): "
                             + " | ".join(errors))
    config = builder.create_builder_config()
    _configure(trt, builder, config, plan, info, profiles, workspace)
    _attach_timing_cache(config, os.fspath(cache_path) if cache_path else None)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT could not build a {plan.precision} engine from {info.path}: "
                             f"{'; '.join(logger.errors[-5:]) or 'see the TensorRT log'}")
    if cache_path:
        with atomic_path(cache_path) as tmp, open(tmp, "wb") as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
    io = ([tensor_json(network.get_input(i)) for i in range(network.num_inputs)],
          [tensor_json(network.get_output(i)) for i in range(network.num_outputs)])
    return serialized, io


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, precision: str = "fp32",
                 profiles=None, example_shapes=None, workspace: int | str | None = None,
                 timing_cache: str | os.PathLike | None = None, device: int | str = 0, rebuild: bool = False,
                 max_batch: int | None = None, spatial_range: tuple[int, int] | None = None) -> BuildReport:
    """Build ``engine_path`` (+ ``<engine_path>.json``) from an ONNX file; see the module docstring.

    ``profiles``: {input: (min, opt, max)} or a list of them; default derived from the ONNX inputs, its input
    contract and ``example_shapes`` (``derive_profiles``: ``max_batch``, ``spatial_range``). ``workspace``: bytes or
    "4GiB". ``timing_cache``: a file read before and written after the build. ``rebuild=False`` returns at once when
    the engine there was built from the same ONNX, precision and profiles for this TensorRT and GPU.
    """
    t0 = time.perf_counter()
    onnx_path, engine_path = os.fspath(onnx_path), os.fspath(engine_path)
    if os.path.abspath(onnx_path) == os.path.abspath(engine_path):
        raise ValueError(f"engine_path must differ from onnx_path, got {engine_path!r} for both")
    ws, index = parse_workspace(workspace), _cuda.device_index(device)
    info = read_onnx(onnx_path)
    check_precision(precision, has_qdq=info.has_qdq, asymmetric=info.asymmetric)
    profs = _resolve_profiles(info, profiles, example_shapes, max_batch, spatial_range)
    trt = import_tensorrt()
    dev = _cuda.device_info(index)  # also makes it the current device, the one TensorRT builds for
    plan = plan_precision(precision, trt_major=int(trt.__version__.split(".")[0]), graph_types=info.low_precision,
                          compute_capability=dev.compute_capability)
    onnx_sha = sha256_file(onnx_path)
    old = None if rebuild else engine_up_to_date(engine_path, trt.__version__, dev, onnx_sha256=onnx_sha,
                                                 precision=precision, profiles=_profiles_json(profs))
    if old is not None:
        log.info("%s is up to date (same ONNX, precision, profiles, TensorRT and GPU); not rebuilt", engine_path)
        return BuildReport.from_sidecar(old, engine_path, profs, time.perf_counter() - t0, reused=True)
    serialized, (inputs, outputs) = _build(trt, info, plan, profs, ws, timing_cache)
    from .export import _sdk_version

    sidecar = write_engine(engine_path, serialized, {
        "format": SIDECAR_FORMAT, "tensorrt_version": trt.__version__, "gpu_name": dev.name,
        "compute_capability": dev.compute_capability, "cuda_runtime": dev.cuda_runtime,
        "cuda_driver": dev.cuda_driver, "onnx_path": os.path.abspath(onnx_path), "onnx_sha256": onnx_sha,
        "precision": precision, "precision_note": plan.note, "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.flags), "profiles": _profiles_json(profs), "inputs": inputs, "outputs": outputs,
        "workspace_bytes": ws, "build_seconds": round(time.perf_counter() - t0, 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sdk_version": _sdk_version(), "metadata": info.metadata})
    report = BuildReport.from_sidecar(sidecar, engine_path, profs, time.perf_counter() - t0, reused=False)
    log.info("%s", report.summary())
    return report
