"""PyTorch -> ONNX export that verifies before it hands over a file.

``export_onnx`` traces with the ``torch.export``-based exporter (the TorchScript exporter is used only as a reported
fallback), embeds metadata (model name, config, input contract, SDK version, weights checksum), runs
``onnx.checker`` and shape inference, then compares PyTorch and ONNX Runtime on several inputs. Out of tolerance
raises ``ParityError`` with the max abs/rel error per output. The file appears at ``path`` only once it passed.
torch is imported inside the functions, so ``import deploysdk`` stays torch-free.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ExportError, ParityError

__all__ = ["export_onnx", "ExportReport", "OutputError", "DEFAULT_OPSET", "weights_checksum"]

DEFAULT_OPSET = 18
META_PREFIX = "sdk."


@dataclass
class OutputError:
    name: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.atol or self.max_rel <= self.rtol


@dataclass
class ExportReport:
    path: str
    opset: int
    exporter: str  # "dynamo" | "torchscript"
    fallback_reason: str | None
    input_names: list[str]
    output_names: list[str]
    dynamic_dims: dict[str, dict[int, str]]
    errors: list[OutputError] = field(default_factory=list)
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        errs = ", ".join(f"{e.name}: max abs {e.max_abs:.2e} rel {e.max_rel:.2e}" for e in self.errors)
        via = self.exporter + (f" (fallback: {self.fallback_reason})" if self.fallback_reason else "")
        return (f"{self.path}: opset {self.opset} via {via}; verified on {len(self.checked_shapes)} inputs "
                f"{self.checked_shapes}; {errs}")


def weights_checksum(model) -> str:
    """sha256 over the state_dict's names and raw bytes, in key order: identifies the weights that were exported."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _sdk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("medcnn-sdk")
    except PackageNotFoundError:
        return "0+unknown"


# --- dynamic shapes -----------------------------------------------------------------------------------------------
def _dynamic_dims(model, x, dynamic: bool | None) -> dict[int, str]:
    """Axis -> name of each dynamic input dim: the batch always; spatial dims when the model is fully convolutional."""
    if dynamic is False:
        return {}
    dims = {0: "batch"}
    if getattr(model, "dynamic_spatial", False):
        names = ["depth", "height", "width"][-(x.dim() - 2):]
        dims.update({2 + i: n for i, n in enumerate(names)})
    return dims


def _torch_dynamic_shapes(model, x, dims: dict[int, str]):
    from torch.export import Dim

    if not dims:
        return None
    hook = getattr(model, "export_dynamic_shapes", None)
    if hook is not None:
        return (hook(x, dims),)
    spec = {}
    multiple = int(getattr(model, "input_multiple", 1) or 1)
    min_size = int(getattr(model, "min_input_size", 1) or 1)
    for axis, name in dims.items():
        if axis == 0:
            spec[axis] = Dim(name, min=1, max=4096)
        elif multiple > 1:
            spec[axis] = multiple * Dim(f"{name}_blocks", min=max(1, -(-min_size // multiple)), max=8192 // multiple)
        else:
            spec[axis] = Dim(name, min=max(2, min_size), max=8192)
    return (spec,)


# --- export -------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs a line per optional torchvision op it cannot register; none of ours use them."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _run_exporter(model, x, tmp: str, opset: int, dims, in_names, out_names,
                  external: bool) -> tuple[str, str | None]:
    import torch

    try:
        with _quiet_exporter():
            prog = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, input_names=in_names,
                                     output_names=out_names, dynamic_shapes=_torch_dynamic_shapes(model, x, dims),
                                     verbose=False)
        prog.save(tmp, external_data=external)
        return "dynamo", None
    except Exception as e:  # reported, never silent: the report and a warning say which exporter ran
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    warnings.warn(f"torch.export-based ONNX export failed ({reason}); using the TorchScript exporter", stacklevel=3)
    axes = {in_names[0]: dims} if dims else None
    try:
        torch.onnx.export(model, (x,), tmp, dynamo=False, opset_version=opset, input_names=in_names,
                          output_names=out_names, dynamic_axes=axes)
        if external:
            _to_external_data(tmp)
    except Exception as e:
        raise ExportError(f"both ONNX exporters failed for {type(model).__name__}: dynamo: {reason}; "
                          f"torchscript: {type(e).__name__}: {e}") from e
    return "torchscript", reason


def _needs_external_data(model) -> bool:
    size = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    return size > 1.8 * 2**30  # protobuf's 2 GiB limit, with room for the graph


def _to_external_data(path: str) -> None:
    import onnx

    proto = onnx.load(path)
    onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data", size_threshold=1024)


@contextlib.contextmanager
def _staging(path: str):
    """Yield a path in a private folder beside ``path``; on success move the file (and its ``.data`` file, for
    external weights) into place, data first; on any error remove everything. Nothing half-written is left."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".export-", dir=folder)
    tmp = os.path.join(stage, os.path.basename(path))
    try:
        yield tmp
        if os.path.exists(tmp + ".data"):
            os.replace(tmp + ".data", path + ".data")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _embed_metadata(tmp: str, meta: Mapping[str, str]) -> None:
    import onnx

    proto = onnx.load(tmp, load_external_data=False)  # external tensors keep pointing at their .data file
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, tmp)
    onnx.checker.check_model(tmp)
    onnx.shape_inference.infer_shapes_path(tmp, tmp + ".inferred")  # raises on inconsistent shapes
    os.remove(tmp + ".inferred")


def _metadata(model, x, extra: Mapping[str, Any] | None) -> dict[str, str]:
    meta = {"model_name": getattr(model, "model_name", type(model).__name__), "sdk_version": _sdk_version(),
            "weights_sha256": weights_checksum(model), "layout": "NCDHW" if x.dim() == 5 else "NCHW"}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        meta["config"] = config.to_dict()
    if hasattr(model, "input_contract"):
        meta["input_contract"] = model.input_contract()
    meta.update(extra or {})
    return {META_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


# --- verification -------------------------------------------------------------------------------------------------
def _alternate_sizes(model, x, dims: dict[int, str]) -> list[tuple[int, ...]]:
    """A second spatial size the model accepts, to prove the dynamic spatial dims really are dynamic."""
    if not any(axis >= 2 for axis in dims):
        return []
    step = int(getattr(model, "input_multiple", 1) or 1)
    base = tuple(x.shape[2:])
    for k in range(1, 64):
        size = tuple(s + step * k for s in base)
        try:
            model.check_spatial_size(size)
            return [size]
        except (ValueError, AttributeError):
            continue
    return []


def _verification_inputs(model, x, dims, samples: Sequence | None, seed: int) -> list:
    import torch

    gen = torch.Generator().manual_seed(seed)
    feeds = [x]
    if 0 in dims:
        feeds.append(torch.randn((1, *x.shape[1:]), generator=gen))
        feeds.append(torch.randn((3, *x.shape[1:]), generator=gen))
    for size in _alternate_sizes(model, x, dims):
        feeds.append(torch.randn((x.shape[0], x.shape[1], *size), generator=gen))
    for s in samples or []:
        feeds.append(torch.as_tensor(np.asarray(s, dtype=np.float32)))
    return feeds


def _compare(name: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> OutputError:
    if ref.shape != got.shape:
        raise ParityError(f"output {name!r}: PyTorch gives shape {ref.shape}, ONNX Runtime {got.shape}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-6)).max()) if diff.size else 0.0
    return OutputError(name, max_abs, max_rel, atol, rtol)


def _verify(model, path: str, feeds: list, tolerances: Mapping[str, tuple[float, float]],
            default_tol: tuple[float, float]) -> list[OutputError]:
    import torch

    from .runtime.onnxrt import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, device="cpu")
    worst: dict[str, OutputError] = {}
    for x in feeds:
        with torch.no_grad():
            ref = model(x)
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = runner.run({runner.inputs[0].name: x.numpy()})
        for spec, r in zip(runner.outputs, refs):
            atol, rtol = tolerances.get(spec.name, default_tol)
            err = _compare(spec.name, r.numpy(), got[spec.name], atol, rtol)
            if spec.name not in worst or err.max_abs > worst[spec.name].max_abs:
                worst[spec.name] = err
    runner.close()
    return list(worst.values())


def export_onnx(model, path: str | os.PathLike, *, example_input=None, dynamic: bool | None = None,
                opset: int = DEFAULT_OPSET, input_names: Sequence[str] = ("input",),
                output_names: Sequence[str] | None = None, samples: Sequence | None = None,
                tolerances: Mapping[str, tuple[float, float]] | None = None, atol: float = 1e-4,
                rtol: float = 1e-3, metadata: Mapping[str, Any] | None = None, verify: bool = True,
                external_data: bool | None = None, seed: int = 0) -> ExportReport:
    """Export ``model`` to ``path`` and verify it against ONNX Runtime; see the module docstring.

    ``dynamic``: None = dynamic batch, plus dynamic spatial dims for fully convolutional models; False = static.
    An output passes when its max abs error <= atol or its max relative error <= rtol (per-output overrides in
    ``tolerances``). ``external_data``: None = only when the weights exceed protobuf's 2 GiB limit; the weights then
    go to ``<path>.data`` beside the ``.onnx`` file (keep the two together).
    """
    import torch

    t0 = time.perf_counter()
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization, modern Resize), got {opset}")
    was_training = model.training
    model.eval()
    try:
        x = example_input if example_input is not None else model.example_input(batch_size=2)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"example_input must be a torch.Tensor, got {type(x).__name__}")
        external = _needs_external_data(model) if external_data is None else bool(external_data)
        if hasattr(model, "check_input"):
            model.check_input(x)
        dims = _dynamic_dims(model, x, dynamic)
        out_names = list(output_names) if output_names else ["output"]
        meta = _metadata(model, x, metadata)
        path = os.fspath(path)
        with _staging(path) as tmp:
            exporter, reason = _run_exporter(model, x, tmp, opset, dims, list(input_names), out_names, external)
            _embed_metadata(tmp, meta)
            report = ExportReport(path, opset, exporter, reason, list(input_names), out_names,
                                  {input_names[0]: dims}, metadata=meta)
            if verify:
                feeds = _verification_inputs(model, x, dims, samples, seed)
                report.errors = _verify(model, tmp, feeds, tolerances or {}, (atol, rtol))
                report.checked_shapes = [tuple(f.shape) for f in feeds]
                bad = [e for e in report.errors if not e.ok]
                if bad:
                    raise ParityError("ONNX Runtime disagrees with PyTorch: " + "; ".join(
                        f"{e.name}: max abs {e.max_abs:.3e} (atol {e.atol}), max rel {e.max_rel:.3e} (rtol {e.rtol})"
                        for e in bad))
    finally:
        model.train(was_training)
    report.seconds = time.perf_counter() - t0
    return report
