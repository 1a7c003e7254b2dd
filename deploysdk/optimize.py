"""Offline graph optimization and FP16 conversion of ONNX files, each verified against its input before it is kept.

``optimize_graph`` runs ONNX Runtime's "basic" graph rewrites once, offline, and saves the result: constant folding,
redundant-node elimination (Identity, Dropout, double Transpose, ...) and folding of BatchNormalization, Add and Mul
into the preceding Conv. These rewrites emit standard ONNX ops only, so the file still runs everywhere, TensorRT
included. ORT's "extended"/"all" levels are not offered: they write ``com.microsoft`` fused ops (FusedConv, NCHWc
layouts) that only ORT's CPU provider runs, and ORT applies them by itself at session creation anyway. The saved
graph is checked for non-standard ops, keeps the input's ``metadata_props`` (the SDK's model metadata) and is
compared with the input on ORT CPU before it appears at ``onnx_out``.

``convert_fp16`` stores weights and computes in float16 while inputs and outputs stay float32 by default, so callers
feed the same arrays as before. It is meant for GPUs (TensorRT, CUDA); ORT's CPU provider runs most float16 ops by
casting back to float32, so it checks numerics here, not speed.

Shared with ``deploysdk.quantize``: reading graph inputs, turning arrays/folders/iterables into feeds, comparing two
models on the same feeds. onnx and onnxruntime are imported inside the functions; nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

from ._atomic import atomic_path
from ._feeds import as_feeds, random_feeds
from .errors import ExportError, InputError, ModelLoadError, ParityError
from .export import OutputError
from .runtime.base import TensorSpec

__all__ = ["optimize_graph", "convert_fp16", "OptimizeReport", "LEVELS", "STANDARD_DOMAINS", "load_model",
           "graph_inputs", "metadata", "set_metadata", "op_counts", "nonstandard_ops", "compare_models",
           "save_standard"]

# level -> ONNX Runtime GraphOptimizationLevel whose rewrites are saved. Only levels that emit standard ops.
LEVELS = {"basic": "ORT_ENABLE_BASIC"}
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
FP16_DEFAULT_TOL = (5e-2, 1e-2)  # (atol, rtol): 11-bit mantissa, rounding compounds over ~20 layers


@dataclass
class OptimizeReport:
    """What ``optimize_graph``/``convert_fp16`` did: op counts before/after, sizes, worst error per output."""

    source: str
    path: str
    kind: str  # "graph" | "fp16"
    level: str  # "basic" for graph optimization; "fp16" or "fp16 (float16 I/O)" for FP16
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    errors: list[OutputError] = field(default_factory=list)
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def op_changes(self) -> dict[str, int]:
        """Op type -> change in count (negative: removed/folded), only types whose count changed."""
        keys = sorted(set(self.ops_before) | set(self.ops_after))
        delta = {k: self.ops_after.get(k, 0) - self.ops_before.get(k, 0) for k in keys}
        return {k: v for k, v in delta.items() if v}

    def summary(self) -> str:
        what = f"graph optimization '{self.level}'" if self.kind == "graph" else self.level
        changes = ", ".join(f"{k} {v:+d}" for k, v in self.op_changes.items()) or "no op changes"
        errs = "; ".join(f"{e.name}: max abs {e.max_abs:.2e} rel {e.max_rel:.2e} (atol {e.atol:g}, rtol {e.rtol:g})"
                         for e in self.errors)
        checked = (f"vs input on {len(self.checked_shapes)} inputs {self.checked_shapes}: {errs}" if self.errors
                   else "not verified")
        return (f"{self.path}: {what} of {self.source}: {self.nodes_before} -> {self.nodes_after} nodes ({changes}), "
                f"{self.bytes_before / 2**20:.2f} -> {self.bytes_after / 2**20:.2f} MiB; {checked}; "
                f"{self.seconds:.1f} s")


# --- ONNX helpers -------------------------------------------------------------------------------------------------
def load_model(path: str | os.PathLike):
    """The ModelProto at ``path``; ``ModelLoadError`` naming the file when it is missing or not ONNX."""
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"ONNX model not found: {path}")
    try:
        return onnx.load(path)
    except Exception as e:
        raise ModelLoadError(f"{path} is not a readable ONNX model: {type(e).__name__}: {e}") from e


def graph_inputs(proto) -> list[TensorSpec]:
    """Real inputs (initializers excluded; older exporters list them as inputs), ``None`` for dynamic dims."""
    from onnx import helper

    weights = {t.name for t in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in weights:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        specs.append(TensorSpec(vi.name, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)), dims))
    return specs


def metadata(proto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def set_metadata(proto, meta: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` with ``meta`` (tools such as ORT's optimizer drop or add their own keys)."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)


def _all_nodes(graph) -> Iterator:
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _op_name(node) -> str:
    return node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"


def op_counts(proto) -> dict[str, int]:
    return dict(sorted(Counter(_op_name(n) for n in _all_nodes(proto.graph)).items()))


def nonstandard_ops(proto) -> list[str]:
    """``domain::op`` of every op outside the standard ONNX domains (ORT contrib ops, custom ops)."""
    return sorted({_op_name(n) for n in _all_nodes(proto.graph) if n.domain not in STANDARD_DOMAINS})


def _prune_opsets(proto) -> None:
    """Drop opset imports no node uses (ORT's optimizer lists every domain it knows, TensorRT needs none of them)."""
    used = {n.domain for n in _all_nodes(proto.graph)} | {""}
    keep = [(o.domain, o.version) for o in proto.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    for domain, version in keep:
        proto.opset_import.add(domain=domain, version=version)


def _verification_feeds(proto, specs, samples, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random feeds plus ``samples``; only the samples when dynamic dims have no known size (no input contract)."""
    given = as_feeds(samples, specs, what="samples")[0] if samples is not None else []
    try:
        return random_feeds(proto, specs, seed) + given
    except InputError:
        if not given:
            raise
        return given


# --- comparison ---------------------------------------------------------------------------------------------------
def _output_error(name: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, what: str) -> OutputError:
    if ref.shape != got.shape:
        raise ParityError(f"output {name!r}: the input model gives shape {ref.shape}, {what} {got.shape}")
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref64), 1e-6)).max()) if diff.size else 0.0
    return OutputError(name, max_abs, max_rel, atol, rtol)


def compare_models(ref_path: str, new_path: str, feeds: Sequence[Mapping[str, np.ndarray]], atol: float,
                   rtol: float, *, what: str = "the new model", optimization: str = "disable") -> list[OutputError]:
    """Worst error per output of ``new_path`` against ``ref_path`` on ORT CPU over ``feeds``.

    ``optimization="disable"`` runs both graphs exactly as written, so the check covers the saved rewrite itself and
    not ORT's own load-time fusions. Feeds are cast to each model's input dtypes (float16 I/O models).
    """
    from .runtime.onnxrt import OnnxRuntimeRunner

    ref = OnnxRuntimeRunner(ref_path, device="cpu", optimization=optimization)
    new = OnnxRuntimeRunner(new_path, device="cpu", optimization=optimization)
    worst: dict[str, OutputError] = {}
    try:
        for feed in feeds:
            a = ref.run({s.name: np.asarray(feed[s.name], s.dtype) for s in ref.inputs})
            b = new.run({s.name: np.asarray(feed[s.name], s.dtype) for s in new.inputs})
            for name, value in a.items():
                if name not in b:
                    raise ParityError(f"output {name!r} of the input model is missing from {what} "
                                      f"(outputs {sorted(b)})")
                err = _output_error(name, value, b[name], atol, rtol, what)
                if name not in worst or err.max_abs > worst[name].max_abs:
                    worst[name] = err
    finally:
        ref.close()
        new.close()
    return list(worst.values())


def _raise_if_bad(errors: Sequence[OutputError], what: str, source: str) -> None:
    bad = [e for e in errors if not e.ok]
    if bad:
        raise ParityError(f"{what} disagrees with {source}: " + "; ".join(
            f"{e.name}: max abs {e.max_abs:.3e} (atol {e.atol}), max rel {e.max_rel:.3e} (rtol {e.rtol})"
            for e in bad))


# --- graph optimization -------------------------------------------------------------------------------------------
def _ort_rewrite(src: str, dst: str, level: str) -> None:
    """Let ONNX Runtime optimize ``src`` at ``level`` and write the optimized graph to ``dst``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    so.optimized_model_filepath = dst
    so.log_severity_level = 3
    try:
        ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelLoadError(f"onnxruntime could not load {src} to optimize it: {str(e).strip()[:500]}") from e


def _toposort(graph) -> None:
    """Reorder nodes so each comes after its producers (the FP16 converter appends its Casts at the end, which ORT
    accepts but the ONNX checker and TensorRT's parser do not). Stable: an already sorted graph keeps its order."""
    known = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""}
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    waiting = [sum(1 for x in set(n.input) if x not in known and x in producer) for n in graph.node]
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(graph.node):
        for x in set(n.input):
            if x not in known and x in producer:
                consumers.setdefault(producer[x], []).append(i)
    ready = sorted(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
        ready.sort()
    if len(order) != len(graph.node):
        raise ExportError(f"the graph has a cycle or a dangling input: {len(graph.node) - len(order)} nodes unsortable")
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_duplicate_nodes(graph) -> None:
    """Remove nodes that repeat an earlier node exactly (same op, inputs, attributes, outputs). ORT's FP16 converter
    writes one Cast per consumer of a float32-only input (e.g. Resize scales shared by two Resizes), all with the
    same output name, which breaks SSA form; the first copy serves every consumer."""
    seen: dict[str, bytes] = {}
    keep = []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        clash = [o for o in node.output if o in seen]
        if clash and all(seen[o] == key for o in node.output if o):
            continue
        if clash:
            raise ExportError(f"the converted graph writes {clash} from two different nodes; expected SSA form")
        seen.update({o: key for o in node.output if o})
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def save_standard(proto, src_proto, path: str, extra_meta: Mapping[str, str] | None = None) -> None:
    """Check ``proto`` holds standard ops only, give it ``src_proto``'s metadata (+ extra), drop unused opsets,
    write it to ``path`` and run onnx.checker on the file."""
    import onnx

    odd = nonstandard_ops(proto)
    if odd:
        raise ExportError(f"the rewritten graph holds non-standard ops {odd}; expected standard ONNX ops only "
                          f"(domains {list(STANDARD_DOMAINS)}) so that TensorRT and other runtimes can load it")
    set_metadata(proto, {**metadata(src_proto), **(extra_meta or {})})
    _prune_opsets(proto)
    _toposort(proto.graph)
    onnx.save_model(proto, path)
    onnx.checker.check_model(path)


def _report(src: str, dst: str, kind: str, level: str, before, after, written: str) -> OptimizeReport:
    ops_before, ops_after = op_counts(before), op_counts(after)
    return OptimizeReport(src, dst, kind, level, sum(ops_before.values()), sum(ops_after.values()), ops_before,
                          ops_after, os.path.getsize(src), os.path.getsize(written))


def _verify_into(report: "OptimizeReport", src: str, tmp: str, feeds, tol: tuple[float, float], what: str) -> None:
    """Compare the rewritten file with its source on ``feeds``; record the errors and raise if out of tolerance."""
    report.errors = compare_models(src, tmp, feeds, tol[0], tol[1], what=what)
    report.checked_shapes = [tuple(next(iter(f.values())).shape) for f in feeds]
    _raise_if_bad(report.errors, what, src)


def optimize_graph(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, *, level: str = "basic",
                   verify: bool = True, samples: Sequence | None = None, atol: float = 1e-4,
                   rtol: float = 1e-3) -> OptimizeReport:
    """Optimize ``onnx_in`` offline and write it to ``onnx_out``; see the module docstring.

    ``verify``: compare with the input on random inputs (dynamic batch at 1 and 2; dynamic spatial dims at the
    ``sdk.input_contract`` default size) plus ``samples``; an output passes when its max abs error <= ``atol`` or its
    max relative error <= ``rtol``, else ``ParityError`` and nothing is written.
    """
    import onnx

    t0 = time.perf_counter()
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r} (ORT's 'extended'/'all' levels write "
                         f"com.microsoft fused ops that only ONNX Runtime runs, and it applies them at load itself)")
    src, dst = os.fspath(onnx_in), os.fspath(onnx_out)
    proto = load_model(src)
    feeds = _verification_feeds(proto, graph_inputs(proto), samples) if verify else []
    with atomic_path(dst, suffix=".onnx") as tmp:
        _ort_rewrite(src, tmp, level)
        new = onnx.load(tmp)
        save_standard(new, proto, tmp)
        report = _report(src, dst, "graph", level, proto, new, tmp)
        if verify:
            _verify_into(report, src, tmp, feeds, (atol, rtol), "the optimized model")
    report.seconds = time.perf_counter() - t0
    return report


# --- FP16 ---------------------------------------------------------------------------------------------------------
def convert_fp16(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, *, keep_io_types: bool = True,
                 verify: bool = True, samples: Sequence | None = None, atol: float = FP16_DEFAULT_TOL[0],
                 rtol: float = FP16_DEFAULT_TOL[1], op_block_list: Sequence[str] | None = None) -> OptimizeReport:
    """Write a float16 copy of ``onnx_in`` to ``onnx_out``: float16 weights and compute, float32 I/O by default.

    ``keep_io_types=False`` makes inputs and outputs float16 too (callers must then feed float16 arrays).
    ``op_block_list``: op types left in float32 (default: ORT's list of ops without float16 kernels). Run
    ``optimize_graph`` first: BatchNorm folded in float32 and rounded once loses less than BatchNorm in float16.
    Verification compares with the float32 input on ORT CPU with the looser FP16 tolerances (the report holds the
    errors); out of tolerance raises ``ParityError`` and nothing is written.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16  # lazy: it extends sys.path on import

    t0 = time.perf_counter()
    src, dst = os.fspath(onnx_in), os.fspath(onnx_out)
    proto = load_model(src)
    specs = graph_inputs(proto)
    if not any(s.dtype == np.float32 for s in specs):
        raise ValueError(f"{src} has no float32 input ({[s.describe() for s in specs]}); expected a float32 model")
    feeds = _verification_feeds(proto, specs, samples) if verify else []
    half = convert_float_to_float16(load_model(src), keep_io_types=keep_io_types,
                                    op_block_list=list(op_block_list) if op_block_list is not None else None)
    _drop_duplicate_nodes(half.graph)
    level = "fp16" if keep_io_types else "fp16 (float16 I/O)"
    with atomic_path(dst, suffix=".onnx") as tmp:
        precision = {"weights": "float16", "io_float32": keep_io_types}
        save_standard(half, proto, tmp, {"sdk.precision": json.dumps(precision)})
        report = _report(src, dst, "fp16", level, proto, half, tmp)
        if verify:
            _verify_into(report, src, tmp, feeds, (atol, rtol), "the FP16 model")
    report.seconds = time.perf_counter() - t0
    return report
