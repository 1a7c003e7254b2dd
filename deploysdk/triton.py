"""Write a Triton Inference Server model repository for an SDK model, for users who outgrow one machine.

    write_triton_repo("unet.onnx", "models/", max_batch_size=8, instances=2, kind="gpu")
    # models/unet/config.pbtxt, models/unet/1/model.onnx;  then: tritonserver --model-repository=models

The config is written out in full rather than left to Triton's auto-complete, so what will be served is visible and
reviewable: platform ("onnxruntime_onnx" or "tensorrt_plan"), inputs and outputs with Triton data types and dims
*without* the batch dimension (-1 where dynamic), dynamic batching and instance groups. ONNX specs come from the
graph (``onnx``, weights not loaded); a TensorRT engine's come from the JSON sidecar ``deploysdk build-engine``
writes beside it, because reading the engine itself needs TensorRT and the GPU it was built for.

A model whose batch dimension is fixed (e.g. exported with batch 1) cannot be batched by Triton: it gets
``max_batch_size: 0``, full dims and no dynamic batching, with a note. The model folder is assembled in a temporary
folder and renamed into place, so a Triton server polling the repository never loads half a model.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

from ._atomic import sha256_file
from .errors import InputError, ModelLoadError

__all__ = ["write_triton_repo", "triton_config", "TritonConfig", "TritonTensor", "TRITON_DTYPES", "PLATFORMS"]

log = logging.getLogger(__name__)

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# numpy dtype names (and TensorRT's for types numpy lacks) -> Triton's data types (model_config.proto DataType)
TRITON_DTYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
                 "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
                 "bfloat16": "TYPE_BF16", "bf16": "TYPE_BF16", "string": "TYPE_STRING", "object": "TYPE_STRING"}
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # no leading dot: hidden, or "." / ".."


@dataclass(frozen=True)
class TritonTensor:
    """One model input or output: ``shape`` includes the batch dim; ``None`` marks a dynamic dim."""

    name: str
    data_type: str  # TYPE_FP32, ...
    shape: tuple[int | None, ...]


@dataclass
class TritonConfig:
    """Everything ``config.pbtxt`` says, plus the model file it describes and notes for the user."""

    name: str
    platform: str
    max_batch_size: int
    inputs: list[TritonTensor]
    outputs: list[TritonTensor]
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instances: int = 1
    kind: str = "cpu"
    gpus: tuple[int, ...] = ()
    source: str = ""
    source_sha256: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def model_filename(self) -> str:
        return MODEL_FILES[self.platform]

    def dims(self, t: TritonTensor) -> list[int]:
        """Triton's dims: without the batch dim when Triton batches (max_batch_size > 0), -1 for dynamic."""
        shape = t.shape[1:] if self.max_batch_size > 0 else t.shape
        return [-1 if d is None else int(d) for d in shape]

    def to_pbtxt(self) -> str:
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        lines = [f"# written by deploysdk triton-repo on {when}",
                 f"# from {os.path.basename(self.source)} (sha256 {self.source_sha256})"]
        lines += [f"# note: {n}" for n in self.notes]
        lines += [f"name: {_quote(self.name)}", f"platform: {_quote(self.platform)}",
                  f"max_batch_size: {self.max_batch_size}"]
        for section, tensors in (("input", self.inputs), ("output", self.outputs)):
            items = [f"  {{\n    name: {_quote(t.name)}\n    data_type: {t.data_type}\n"
                     f"    dims: [ {', '.join(map(str, self.dims(t)))} ]\n  }}" for t in tensors]
            lines.append(f"{section} [\n" + ",\n".join(items) + "\n]")
        if self.max_batch_size > 0:
            batching = [f"  max_queue_delay_microseconds: {self.max_queue_delay_us}"]
            if self.preferred_batch_sizes:
                batching.insert(0, f"  preferred_batch_size: [ {', '.join(map(str, self.preferred_batch_sizes))} ]")
            lines.append("dynamic_batching {\n" + "\n".join(batching) + "\n}")
        group = [f"    count: {self.instances}", f"    kind: KIND_{self.kind.upper()}"]
        if self.gpus:
            group.append(f"    gpus: [ {', '.join(map(str, self.gpus))} ]")
        lines.append("instance_group [\n  {\n" + "\n".join(group) + "\n  }\n]")
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- reading the model's I/O --------------------------------------------------------------------------------------
def _onnx_tensors(path: str) -> tuple[list[TritonTensor], list[TritonTensor], list[str]]:
    """Inputs, outputs and external data files (relative paths) of an ONNX model, weights not loaded."""
    try:
        import onnx
    except ImportError as e:
        raise ModelLoadError(f"reading an ONNX model's inputs and outputs needs the 'onnx' package ({e}): "
                             "pip install onnx") from e
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"could not read ONNX model {path}: {str(e).strip()[:300]}") from e
    names = {v: k for k, v in onnx.TensorProto.DataType.items()}  # 1 -> "FLOAT"

    def tensor(value) -> TritonTensor:
        tt = value.type.tensor_type
        onnx_name = names.get(tt.elem_type, str(tt.elem_type))
        dtype = {"FLOAT": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "BFLOAT16": "bfloat16",
                 "BOOL": "bool", "STRING": "string"}.get(onnx_name, onnx_name.lower())
        if dtype not in TRITON_DTYPES:
            raise ModelLoadError(f"{path}: tensor {value.name!r} has ONNX type {onnx_name}, which Triton has no "
                                 f"data type for (it takes {sorted(set(TRITON_DTYPES))})")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        return TritonTensor(value.name, TRITON_DTYPES[dtype], dims)

    inits = {t.name for t in model.graph.initializer}
    external = sorted({e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                       for e in t.external_data if e.key == "location"})
    return ([tensor(v) for v in model.graph.input if v.name not in inits],
            [tensor(v) for v in model.graph.output], external)


def _engine_tensors(path: str) -> tuple[list[TritonTensor], list[TritonTensor], dict]:
    """Inputs and outputs from the sidecar ``deploysdk build-engine`` writes beside an engine (no TensorRT needed)."""
    from .runtime.trt import load_sidecar

    sidecar = load_sidecar(path)  # ModelLoadError naming the missing sidecar and how to make one

    def tensors(key: str) -> list[TritonTensor]:
        items = sidecar.get(key)
        if not isinstance(items, list) or not items:
            raise ModelLoadError(f"engine sidecar {path}.json has no {key!r} list; rebuild the engine with "
                                 "`deploysdk build-engine`")
        out = []
        for item in items:
            dtype = str(item.get("dtype", "")).lower()
            if dtype not in TRITON_DTYPES:
                raise ModelLoadError(f"engine sidecar {path}.json: {key} {item.get('name')!r} has dtype {dtype!r}, "
                                     f"which Triton has no data type for")
            out.append(TritonTensor(str(item["name"]), TRITON_DTYPES[dtype],
                                    tuple(None if d is None or int(d) < 0 else int(d) for d in item["shape"])))
        return out

    return tensors("inputs"), tensors("outputs"), sidecar


def _engine_max_batch(sidecar: dict) -> int | None:
    """The largest batch some optimization profile takes on every input (Triton picks the profile per request);
    None when no profiles are recorded (static shapes)."""
    tops = [min(int(r["max"][0]) for r in prof.values()) for prof in sidecar.get("profiles") or [] if prof]
    return max(tops) if tops else None


# --- planning -----------------------------------------------------------------------------------------------------
def _platform(model_path: str, platform: str) -> str:
    if platform == "auto":
        return "tensorrt_plan" if model_path.lower().endswith(ENGINE_SUFFIXES) else "onnxruntime_onnx"
    if platform not in PLATFORMS:
        raise InputError(f"platform must be 'auto', 'onnxruntime' or 'tensorrt', got {platform!r}")
    return PLATFORMS[platform]


def _batching(inputs, outputs, max_batch_size: int, notes: list[str]) -> int:
    """max_batch_size for Triton: 0 when the model's first dim is not a dynamic batch dim on every tensor."""
    if max_batch_size == 0:
        return 0
    fixed = [t for t in [*inputs, *outputs] if not t.shape or t.shape[0] is not None]
    if fixed:
        t = fixed[0]
        notes.append(f"{t.name!r} has a fixed first dimension ({list(t.shape)}), so Triton cannot batch requests: "
                     "max_batch_size 0, full dims, no dynamic batching. Export with a dynamic batch dim "
                     "(deploysdk export without --static) to let Triton batch")
        return 0
    return max_batch_size


def _integer(value, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def _check_numbers(max_batch_size, preferred, max_queue_delay_us, instances, kind) -> tuple[int, ...]:
    _integer(max_batch_size, "max_batch_size", 0)
    _integer(max_queue_delay_us, "max_queue_delay_us", 0)
    _integer(instances, "instances", 1)
    if kind not in ("cpu", "gpu"):
        raise InputError(f"kind must be 'cpu' or 'gpu', got {kind!r}")
    sizes = tuple(_integer(b, "each preferred batch size", 1) for b in (preferred or ()))
    too_big = [b for b in sizes if max_batch_size and b > max_batch_size]
    if too_big:
        raise InputError(f"preferred batch sizes {too_big} exceed max_batch_size {max_batch_size}")
    return tuple(sorted(set(sizes)))


def triton_config(model_path: str | os.PathLike, *, name: str | None = None, platform: str = "auto",
                  max_batch_size: int = 8, preferred_batch_sizes: Sequence[int] | None = None,
                  max_queue_delay_us: int = 100, instances: int = 1, kind: str = "cpu",
                  gpus: Sequence[int] | None = None) -> TritonConfig:
    """Read the model's inputs/outputs and plan its Triton config (see ``write_triton_repo`` for the arguments)."""
    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model not found: {path} (an .onnx file or a TensorRT .engine/.plan)")
    plat = _platform(path, platform)
    preferred = _check_numbers(max_batch_size, preferred_batch_sizes, max_queue_delay_us, instances, kind)
    name = name or os.path.splitext(os.path.basename(path))[0]
    if not _NAME.fullmatch(name):
        raise InputError(f"model name {name!r} must be letters, digits, '_', '.' or '-', not starting with '.' (it "
                         "names a folder and the model in Triton's API); pass name=")
    gpus = tuple(_integer(g, "each GPU index", 0) for g in gpus or ())
    if gpus and kind != "gpu":
        raise InputError(f"gpus {list(gpus)} given for kind={kind!r}: GPU indices need kind='gpu'")
    notes: list[str] = []
    if plat == "tensorrt_plan":
        if kind != "gpu":
            raise InputError("a TensorRT engine runs only on a GPU: pass kind='gpu'")
        inputs, outputs, sidecar = _engine_tensors(path)
        top = _engine_max_batch(sidecar)
        if top is not None and max_batch_size > top:
            raise InputError(f"max_batch_size {max_batch_size} exceeds the engine's largest profile batch {top}: "
                             f"pass max_batch_size <= {top} or rebuild the engine with a larger profile")
        notes.append(f"the engine was built with TensorRT {sidecar.get('tensorrt_version', '?')} for "
                     f"{sidecar.get('gpu_name', '?')} (compute capability {sidecar.get('compute_capability', '?')}): "
                     "serve it with the Triton release that ships the same TensorRT, on the same GPU model")
    else:
        if path.lower().endswith(ENGINE_SUFFIXES):
            raise InputError(f"platform 'onnxruntime' needs an .onnx file, got the engine {path}")
        inputs, outputs, _ = _onnx_tensors(path)
    batch = _batching(inputs, outputs, max_batch_size, notes)
    return TritonConfig(name, plat, batch, inputs, outputs, preferred if batch else (), max_queue_delay_us,
                        instances, kind, gpus, path, sha256_file(path), notes)


# --- writing ------------------------------------------------------------------------------------------------------
def _staging_parent(out_dir: str) -> str:
    """Where to assemble the model folder: beside the repository (so Triton never sees it), on the same filesystem
    (so the final rename is atomic); inside it, as a hidden folder, when the parent is elsewhere or read-only."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        if os.stat(parent).st_dev == os.stat(out_dir).st_dev and os.access(parent, os.W_OK):
            return parent
    except OSError:
        pass
    return out_dir


def _copy_model(config: TritonConfig, version_dir: str) -> None:
    source = config.source
    external = _onnx_tensors(source)[2] if config.platform == "onnxruntime_onnx" else []
    if not external:
        shutil.copy2(source, os.path.join(version_dir, config.model_filename))
        return
    # an ONNX model with external weights is a folder named model.onnx holding model.onnx and its data files
    folder = os.path.join(version_dir, "model.onnx")
    os.makedirs(folder)
    shutil.copy2(source, os.path.join(folder, "model.onnx"))
    for rel in external:
        src = os.path.join(os.path.dirname(source), rel)
        if not os.path.isfile(src):
            raise ModelLoadError(f"{source} keeps weights in {rel!r}, which is not beside it ({src})")
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(folder, rel))


def write_triton_repo(model_path: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
                      platform: str = "auto", max_batch_size: int = 8,
                      preferred_batch_sizes: Sequence[int] | None = None, max_queue_delay_us: int = 100,
                      instances: int = 1, kind: str = "cpu", gpus: Sequence[int] | None = None, version: int = 1,
                      overwrite: bool = False) -> str:
    """Write ``out_dir/<name>/config.pbtxt`` and ``out_dir/<name>/<version>/model.onnx|model.plan``; returns the
    model folder.

    ``platform``: "auto" (by suffix), "onnxruntime" or "tensorrt" (an engine with its build-engine sidecar; needs
    ``kind="gpu"``). ``max_batch_size``: the largest batch Triton forms (0: no batching); a model with a fixed batch
    dim gets 0 regardless. ``preferred_batch_sizes``: default none, Triton's advice for most models (it then forms
    the largest batch available within ``max_queue_delay_us``). ``instances``/``kind``/``gpus``: the instance group.
    An existing model folder is replaced only with ``overwrite=True``; other models in ``out_dir`` are untouched.
    """
    _integer(version, "version", 1)
    config = triton_config(model_path, name=name, platform=platform, max_batch_size=max_batch_size,
                           preferred_batch_sizes=preferred_batch_sizes, max_queue_delay_us=max_queue_delay_us,
                           instances=instances, kind=kind, gpus=gpus)
    out_dir = os.fspath(out_dir)
    target = os.path.join(out_dir, config.name)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace that model")
    os.makedirs(out_dir, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{config.name}.", suffix=".tmp", dir=_staging_parent(out_dir))
    try:
        version_dir = os.path.join(stage, str(version))
        os.makedirs(version_dir)
        _copy_model(config, version_dir)
        with open(os.path.join(stage, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config.to_pbtxt())
        os.chmod(stage, 0o755)  # mkdtemp makes it 0700; Triton often runs as another user
        _swap_in(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for note in config.notes:
        log.warning("%s: %s", config.name, note)
    return target


def _swap_in(stage: str, target: str) -> None:
    """Rename the staged folder onto ``target``; an old one is moved aside first and deleted after."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=os.path.dirname(stage))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(stage, target)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.rename(old, target)  # put the previous model back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
