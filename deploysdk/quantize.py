"""Static INT8 quantization in explicit Q/DQ form, with an accuracy gate.

``quantize_int8`` pre-processes the float model (ONNX Runtime's basic rewrites, which fold BatchNorm into Conv so
the folded weights are quantized once, and shape inference), collects activation ranges on calibration data
and inserts QuantizeLinear/DequantizeLinear pairs around the ops that are to run in int8. The file stays a standard
ONNX graph: ONNX Runtime fuses each DQ -> op -> Q group into an int8 kernel at load, TensorRT builds int8 layers from
it (explicit quantization). The settings depend on where the file will run:

target            activations         weights               Q/DQ placement
----------------  ------------------  --------------------  -------------------------------------------------
onnxruntime-cpu   uint8, asymmetric   int8, symmetric,      every op ORT can quantize; weights stored as int8
(U8S8)            (zero point from    per output channel    initializers -> DequantizeLinear (4x smaller
                  the calibrated                            file); Relu/Clip absorbed into the uint8 range
                  range)                                    of the op before them
tensorrt          int8, symmetric     int8, symmetric,      on the inputs of Conv, ConvTranspose, Gemm,
(S8S8)            (zero point 0)      per output channel    MatMul, Add (residuals) and pooling only; outputs
                                                            of weighted ops and Add stay float (the next
                                                            layer's input Q quantizes them); float weights
                                                            with their own Q -> DQ pair; one dedicated pair
                                                            per consumer

Why U8S8 on the CPU: ORT's x86 int8 kernels multiply unsigned activations by signed weights, and only an asymmetric
uint8 range can absorb a Relu, so the whole Conv+Relu runs as one int8 kernel. The issue measured ResNet-18 U8S8 3.2x
faster than FP32 against 1.2x for S8S8 (``benchmarks/bench_int8.py`` measures both). On x86 CPUs without VNNI,
U8S8 products can saturate 16-bit intermediate sums; ORT suggests 7-bit weights there: pass
``target=dataclasses.replace(TARGETS["onnxruntime-cpu"], reduce_range=True)`` and let the accuracy gate judge.

Why the TensorRT settings: TensorRT's explicit quantization accepts only symmetric signed int8 (zero point 0) and
per-channel weight scales on the output-channel axis. It fuses Q/DQ into the layers around them, so pairs sit only
where it runs int8 layers (weighted ops, residual adds, pools) and never on ops it cannot quantize; it quantizes the
float weights itself from the Q scale at build time (a form every TensorRT 8.x/10 release reads), and dedicated
pairs keep one consumer's fusion from blocking another's. ``is_quantized(path)`` tells whether a file carries Q/DQ
nodes; ``deploysdk.tensorrt.build_engine(precision="int8")`` requires them (it sets no INT8 builder flag: TensorRT
takes the precision from the Q/DQ nodes, and TensorRT 11 removed the flag).

The accuracy gate: with ``eval_data``, FP32 and INT8 both run on ORT CPU and the report holds the max/mean abs
difference of the first output; with ``eval_labels`` also the metric of both: top-1 accuracy for (N, K) outputs
(argmax over axis 1), per-pixel accuracy for outputs with spatial dims (argmax over the class axis; mean foreground
Dice is reported beside it, but the gate uses pixel accuracy so ``max_drop`` is in accuracy points for both tasks).
A single output channel counts as one logit: class 1 where it is > 0. If the drop exceeds ``max_drop`` points,
``AccuracyGateError`` and nothing is written at ``onnx_out`` (an existing file there stays as it was).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._atomic import atomic_path
from ._feeds import as_feeds, rebatch
from .errors import DeploySDKError, ExportError, InputError
from .optimize import graph_inputs, load_model, op_counts, save_standard

__all__ = ["quantize_int8", "is_quantized", "QuantizeReport", "QuantSettings", "AccuracyGateError", "TARGETS",
           "METHODS", "QUANT_META_KEY"]

QUANT_META_KEY = "sdk.quantization"
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # -> ORT CalibrationMethod
CALIBRATION_BATCH = 16  # samples per calibration run (models with a dynamic batch dim)
EVAL_BATCH = 32
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TENSORRT_OPS = WEIGHTED_OPS + ("Add", "MaxPool", "AveragePool", "GlobalAveragePool")
_TYPES = ("uint8", "int8")


class AccuracyGateError(DeploySDKError):
    """The INT8 model lost more accuracy than allowed; ``report`` holds the figures. Nothing was written."""

    def __init__(self, message: str, report: "QuantizeReport"):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class QuantSettings:
    """ONNX Runtime quantizer settings for one target; ``TARGETS`` holds the documented ones."""

    name: str
    activation_type: str = "uint8"  # uint8 | int8
    weight_type: str = "int8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool = False  # 7-bit weights (non-VNNI x86 CPUs)
    op_types: tuple[str, ...] | None = None  # ops that get Q/DQ; None: every op ORT can quantize
    exclude_output_quantization: tuple[str, ...] = ()  # op types whose outputs stay float
    qdq_pair_on_weights: bool = False  # float weights + Q -> DQ instead of int8 weights -> DQ
    dedicated_qdq_pair: bool = False  # one Q/DQ pair per consumer instead of a shared one

    def __post_init__(self) -> None:
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in _TYPES:
                raise ValueError(f"QuantSettings.{name} must be one of {list(_TYPES)}, got {getattr(self, name)!r}")

    @property
    def label(self) -> str:
        """"U8S8" (uint8 activations, int8 weights), "S8S8", ..."""
        return "".join("U8" if t == "uint8" else "S8" for t in (self.activation_type, self.weight_type))

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "label": self.label}
        d["op_types"] = list(self.op_types) if self.op_types is not None else None
        d["exclude_output_quantization"] = list(self.exclude_output_quantization)
        return d

    def ort_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``onnxruntime.quantization.quantize_static`` for these settings."""
        from onnxruntime.quantization import QuantType

        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        extra = {"ActivationSymmetric": self.activation_symmetric, "WeightSymmetric": self.weight_symmetric,
                 "AddQDQPairToWeight": self.qdq_pair_on_weights, "DedicatedQDQPair": self.dedicated_qdq_pair,
                 "CalibTensorRangeSymmetric": self.activation_symmetric}
        if self.exclude_output_quantization:
            extra["OpTypesToExcludeOutputQuantization"] = list(self.exclude_output_quantization)
        return dict(activation_type=qtype[self.activation_type], weight_type=qtype[self.weight_type],
                    reduce_range=self.reduce_range, op_types_to_quantize=list(self.op_types or []),
                    extra_options=extra)


TARGETS = {
    "onnxruntime-cpu": QuantSettings("onnxruntime-cpu"),
    "tensorrt": QuantSettings("tensorrt", activation_type="int8", weight_type="int8", activation_symmetric=True,
                              weight_symmetric=True, op_types=TENSORRT_OPS,
                              exclude_output_quantization=WEIGHTED_OPS + ("Add",),
                              qdq_pair_on_weights=True, dedicated_qdq_pair=True),
}


@dataclass
class QuantizeReport:
    """What ``quantize_int8`` wrote and measured: settings, Q/DQ counts, sizes, INT8-vs-FP32 differences, accuracy."""

    source: str
    path: str
    target: str
    settings: dict[str, Any]
    method: str
    per_channel: bool
    calibration_samples: int
    nodes_before: int
    nodes_after: int
    quantize_nodes: int
    dequantize_nodes: int
    bytes_before: int
    bytes_after: int
    ops_after: dict[str, int] = field(default_factory=dict)
    eval_on: str = ""  # "eval_data" | "calibration data"
    eval_samples: int = 0
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    metric: str | None = None  # "top-1 accuracy" | "pixel accuracy"
    accuracy_fp32: float | None = None  # in [0, 1]
    accuracy_int8: float | None = None
    dice_fp32: float | None = None  # segmentation: mean foreground Dice, reported beside pixel accuracy
    dice_int8: float | None = None
    max_drop: float | None = None
    seconds: float = 0.0

    @property
    def accuracy_drop(self) -> float | None:
        """FP32 minus INT8 metric in points (percent); positive: INT8 is worse."""
        if self.accuracy_fp32 is None or self.accuracy_int8 is None:
            return None
        return (self.accuracy_fp32 - self.accuracy_int8) * 100.0

    @property
    def passed(self) -> bool | None:
        if self.max_drop is None or self.accuracy_drop is None:
            return None
        return self.accuracy_drop <= self.max_drop

    def summary(self) -> str:
        s = self.settings
        text = (f"{self.path}: INT8 Q/DQ for {self.target} ({s['label']}: "
                f"activations {s['activation_type']}{' symmetric' if s['activation_symmetric'] else ''}, weights "
                f"{s['weight_type']} {'per-channel' if self.per_channel else 'per-tensor'}), {self.method} "
                f"calibration on {self.calibration_samples} samples; {self.nodes_before} -> {self.nodes_after} nodes "
                f"({self.quantize_nodes} Q, {self.dequantize_nodes} DQ), {self.bytes_before / 2**20:.2f} -> "
                f"{self.bytes_after / 2**20:.2f} MiB")
        if self.max_abs_diff is not None:
            text += (f"; vs FP32 on {self.eval_samples} samples of {self.eval_on}: output max abs diff "
                     f"{self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g}")
        if self.accuracy_drop is not None:
            change = round((self.accuracy_int8 - self.accuracy_fp32) * 100.0, 2) + 0.0  # + 0.0: never "-0.00"
            text += (f"; {self.metric} {self.accuracy_fp32:.2%} FP32 -> {self.accuracy_int8:.2%} INT8 "
                     f"({change:+.2f} points)")
        if self.dice_fp32 is not None:
            text += f", mean Dice {self.dice_fp32:.4f} -> {self.dice_int8:.4f}"
        if self.passed is not None:
            text += f"; gate max_drop {self.max_drop:g}: {'passed' if self.passed else 'FAILED'}"
        return text + f"; {self.seconds:.1f} s"


# --- helpers ------------------------------------------------------------------------------------------------------
def _has_qdq(proto) -> bool:
    return any(op.split("::")[-1] in ("QuantizeLinear", "DequantizeLinear") for op in op_counts(proto))


def is_quantized(path: str | os.PathLike) -> bool:
    """True when the file holds explicit QuantizeLinear/DequantizeLinear nodes (a Q/DQ-quantized model).

    TensorRT builds such files in int8 from the Q/DQ nodes alone (explicit quantization: the scales come from the
    graph, no calibrator); ONNX Runtime fuses them into int8 kernels by itself.
    """
    return _has_qdq(load_model(path))


def _resolve(target, method: str) -> tuple[QuantSettings, str]:
    if isinstance(target, QuantSettings):
        settings = target
    elif target in TARGETS:
        settings = TARGETS[target]
    else:
        raise ValueError(f"target must be one of {list(TARGETS)} or a QuantSettings, got {target!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return settings, METHODS[method]


def _check_gate_args(eval_data, eval_labels, max_drop) -> None:
    if eval_labels is not None and eval_data is None:
        raise ValueError("eval_labels were given without eval_data: pass the images they label as eval_data")
    if max_drop is None:
        return
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise ValueError(f"max_drop must be a number of accuracy points >= 0 (e.g. 1.0), got {max_drop!r}")
    if eval_data is None or eval_labels is None:
        raise ValueError("max_drop needs eval_data and eval_labels: the gate compares FP32 and INT8 accuracy on them")


def _labels(eval_labels, count: int) -> np.ndarray:
    try:
        y = np.asarray(eval_labels)
    except Exception as e:
        raise InputError(f"eval_labels: expected an array of class indices, got {type(eval_labels).__name__}") from e
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise InputError(f"eval_labels: expected integer class indices, got dtype {y.dtype}")
    if y.ndim == 0 or len(y) != count:
        raise InputError(f"eval_labels: expected one label (or label map) per eval sample ({count}), got shape "
                         f"{y.shape}")
    return y.astype(np.int64, copy=False)


def _eval_set(eval_data, eval_labels, specs, fixed: int | None):
    """(batches, labels aligned to them or None, what they are) for the comparison, or None without eval_data."""
    if eval_data is None:
        return None
    feeds, count = as_feeds(eval_data, specs, what="eval_data")
    labels = _labels(eval_labels, count) if eval_labels is not None else None
    batches, kept = rebatch(feeds, fixed or EVAL_BATCH, exact=fixed is not None)
    if not batches:
        raise InputError(f"eval_data: {count} samples do not fill one batch of the model's fixed batch size {fixed}")
    return batches, (labels[kept] if labels is not None else None), "eval_data"


# --- quantization -------------------------------------------------------------------------------------------------
def _reader(batches):
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

        def __len__(self):
            return len(batches)

    return _Batches()


def _preprocess(src: str, dst: str) -> None:
    """ORT's quantization pre-processing: basic rewrites (BatchNorm folded into Conv) and ONNX shape inference.

    Its optional symbolic shape inference is skipped: ONNX's own inference already types every tensor of these CNN
    graphs, while the symbolic one gives up on U-Net's dynamic skip connections and then dumps
    ``sym_shape_infer_temp.onnx`` plus a weights file into the current working directory.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(src, dst, skip_symbolic_shape=True)


def _quantize(src: str, work: str, batches, settings: QuantSettings, method: str, per_channel: bool) -> str:
    """Pre-process ``src`` into ``work``, calibrate on ``batches``, write the Q/DQ model there; returns its path."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    pre, out = os.path.join(work, "preprocessed.onnx"), os.path.join(work, "int8.onnx")
    kwargs = settings.ort_arguments()  # not CalibMaxIntermediateOutputs: ORT 1.31 drops the batches it bounds
    try:
        _preprocess(src, pre)
        quantize_static(pre, out, _reader(batches), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        calibrate_method=getattr(CalibrationMethod, method), **kwargs)
    except Exception as e:
        raise ExportError(f"onnxruntime's quantizer failed on {src}: {type(e).__name__}: {str(e)[:500]}") from e
    return out


# --- evaluation ---------------------------------------------------------------------------------------------------
def _predict(out: np.ndarray) -> np.ndarray:
    """Class per sample (N, K) or per pixel (N, K, *S); one channel counts as a logit (class 1 where > 0)."""
    return (out[:, 0] > 0).astype(np.int64) if out.shape[1] == 1 else out.argmax(1)


@dataclass
class _Tally:
    """Running figures over the evaluation batches (segmentation batches may differ in size)."""

    max_abs: float = 0.0
    abs_sum: float = 0.0
    values: int = 0
    correct: list = field(default_factory=lambda: [0, 0])  # fp32, int8
    total: int = 0
    inter: list = field(default_factory=lambda: [None, None])  # per class, for Dice
    denom: list = field(default_factory=lambda: [None, None])

    def add(self, a: np.ndarray, b: np.ndarray, y: np.ndarray | None) -> None:
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        self.max_abs = max(self.max_abs, float(diff.max()) if diff.size else 0.0)
        self.abs_sum += float(diff.sum())
        self.values += diff.size
        if y is None:
            return
        for i, out in enumerate((a, b)):
            pred = _predict(out)
            if pred.shape != y.shape:
                raise InputError(f"eval_labels: a batch of labels has shape {y.shape}, the model's predictions "
                                 f"{pred.shape} (output {out.shape}); expected one label per sample or per pixel")
            self.correct[i] += int((pred == y).sum())
            if out.ndim > 2:
                self._dice(i, pred, y, max(out.shape[1], 2))
        self.total += y.size

    def _dice(self, i: int, pred: np.ndarray, y: np.ndarray, classes: int) -> None:
        inter = np.array([np.sum((pred == c) & (y == c)) for c in range(1, classes)], dtype=np.float64)
        denom = np.array([np.sum(pred == c) + np.sum(y == c) for c in range(1, classes)], dtype=np.float64)
        self.inter[i] = inter if self.inter[i] is None else self.inter[i] + inter
        self.denom[i] = denom if self.denom[i] is None else self.denom[i] + denom

    def dice(self, i: int) -> float | None:
        if self.denom[i] is None or not (self.denom[i] > 0).any():
            return None
        present = self.denom[i] > 0
        return float(np.mean(2 * self.inter[i][present] / self.denom[i][present]))


def _evaluate(report: QuantizeReport, src: str, int8_path: str, batches, labels) -> None:
    """Run FP32 (``src``) and INT8 on ORT CPU over ``batches`` and put the figures into ``report``."""
    from .runtime.onnxrt import OnnxRuntimeRunner

    fp32, int8 = OnnxRuntimeRunner(src, device="cpu"), OnnxRuntimeRunner(int8_path, device="cpu")
    name = fp32.outputs[0].name
    tally, offset = _Tally(), 0
    try:
        for feed in batches:
            a, b = fp32.run(feed, [name])[name], int8.run(feed, [name])[name]
            y = labels[offset:offset + len(a)] if labels is not None else None
            tally.add(a, b, y)
            offset += len(a)
    finally:
        fp32.close()
        int8.close()
    report.eval_samples = offset
    report.max_abs_diff, report.mean_abs_diff = tally.max_abs, tally.abs_sum / max(tally.values, 1)
    if labels is not None and tally.total:
        report.metric = "pixel accuracy" if tally.inter[0] is not None else "top-1 accuracy"
        report.accuracy_fp32, report.accuracy_int8 = (c / tally.total for c in tally.correct)
        report.dice_fp32, report.dice_int8 = tally.dice(0), tally.dice(1)


def _gate(report: QuantizeReport, dst: str) -> None:
    if report.passed is False:
        raise AccuracyGateError(
            f"the INT8 model fails the accuracy gate: {report.metric} {report.accuracy_fp32:.2%} FP32 -> "
            f"{report.accuracy_int8:.2%} INT8 on {report.eval_samples} samples, a drop of "
            f"{report.accuracy_drop:.2f} points > max_drop {report.max_drop:g}; nothing was written to {dst} "
            f"(try method='entropy' or 'percentile', more calibration data, or per_channel=True)", report)


def _new_report(src, dst, proto, qproto, written, settings, method, per_channel, n_calib) -> QuantizeReport:
    ops = op_counts(qproto)
    return QuantizeReport(src, dst, settings.name, settings.to_dict(), method, per_channel, n_calib,
                          sum(op_counts(proto).values()), sum(ops.values()), ops.get("QuantizeLinear", 0),
                          ops.get("DequantizeLinear", 0), os.path.getsize(src), os.path.getsize(written), ops)


def quantize_int8(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, calibration_data, *,
                  method: str = "minmax", target: str | QuantSettings = "onnxruntime-cpu", per_channel: bool = True,
                  num_calibration: int | None = None, eval_data=None, eval_labels=None,
                  max_drop: float | None = None) -> QuantizeReport:
    """Write a static INT8 Q/DQ model of ``onnx_in`` to ``onnx_out``; see the module docstring for the settings.

    ``calibration_data``: an array (N, C, H, W), a list of arrays, a folder of ``.npy`` files, or any iterable of
    arrays or of dicts input name -> array, preprocessed exactly like inference inputs (a few hundred
    representative samples; ``num_calibration`` keeps the first N). ``method``: "minmax" (calibrated min/max),
    "entropy" (KL-divergence thresholds) or "percentile" (99.999th percentile). ``target`` (table in the module
    docstring, values in ``TARGETS``): "onnxruntime-cpu" = U8S8: uint8 asymmetric activations, int8 symmetric
    weights stored as int8, Q/DQ on every op ORT can quantize (fastest on ORT's CPU kernels); "tensorrt" = S8S8:
    int8 symmetric activations and weights (zero point 0), Q/DQ only on the inputs of Conv/ConvTranspose/Gemm/
    MatMul/Add/pools, float weights with a Q -> DQ pair each, one dedicated pair per consumer; or a
    ``QuantSettings`` of your own. ``per_channel``: one weight scale per output channel.
    ``eval_data``/``eval_labels``/``max_drop``: the accuracy gate (module docstring); ``max_drop`` is in accuracy
    points, not a fraction (1.0 lets 99.2% fall to 98.2%). Without eval_data the report compares outputs on the
    first calibration batches. The file keeps the input's metadata and adds
    ``sdk.quantization`` (JSON of these settings).
    """
    import onnxruntime

    t0 = time.perf_counter()
    settings, ort_method = _resolve(target, method)
    _check_gate_args(eval_data, eval_labels, max_drop)
    src, dst = os.fspath(onnx_in), os.fspath(onnx_out)
    proto = load_model(src)
    if _has_qdq(proto):
        raise ValueError(f"{src} already holds QuantizeLinear/DequantizeLinear nodes; quantize the float model")
    specs = graph_inputs(proto)
    fixed = specs[0].shape[0] if specs and specs[0].shape else None
    feeds, _ = as_feeds(calibration_data, specs, what="calibration_data", limit=num_calibration)
    calib, kept = rebatch(feeds, fixed or CALIBRATION_BATCH, exact=fixed is not None)
    if not calib:
        raise InputError(f"calibration_data: too few samples for one batch of the model's fixed batch size {fixed}")
    evaluation = _eval_set(eval_data, eval_labels, specs, fixed) or (calib[:2], None, "calibration data")
    record = {"format": "QDQ", "target": settings.name, "method": method,
              "per_channel": per_channel, "calibration_samples": len(kept), "onnxruntime": onnxruntime.__version__,
              **{k: v for k, v in settings.to_dict().items() if k != "name"}}
    with tempfile.TemporaryDirectory(prefix="deploysdk-int8-") as work, atomic_path(dst, suffix=".onnx") as tmp:
        qproto = load_model(_quantize(src, work, calib, settings, ort_method, per_channel))
        save_standard(qproto, proto, tmp, {QUANT_META_KEY: json.dumps(record)})
        report = _new_report(src, dst, proto, qproto, tmp, settings, method, per_channel, len(kept))
        report.eval_on, report.max_drop = evaluation[2], max_drop
        _evaluate(report, src, tmp, evaluation[0], evaluation[1])
        report.seconds = time.perf_counter() - t0
        _gate(report, dst)
    return report
