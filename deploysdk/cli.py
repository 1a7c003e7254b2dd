"""``deploysdk`` command line: export, optimize, quantize, build-engine, run, bench, compare, inspect, serve,
triton-repo.

Every command is a thin layer over a library function (imported when the command runs, so ``deploysdk --help`` and
``deploysdk inspect`` work on a host with neither torch nor TensorRT). User errors print one line on stderr and exit
with status 2; ``compare`` exits 1 when the models disagree; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import tempfile

import numpy as np

from ._atomic import atomic_path
from .errors import DeploySDKError
from .runtime import BACKENDS, ENGINE_SUFFIXES, Runtime
from .runtime.base import concrete_shape, input_contract

__all__ = ["main", "build_parser"]

EPILOG = "Exit status: 0 ok, 1 compare found a mismatch, 2 error (one line on stderr; --debug for the traceback)."


class UsageError(DeploySDKError):
    """A command-line argument that cannot work; reported as one line, exit status 2."""


def _backing(module: str, name: str):
    """The library function behind a command; a clear error if this install lacks it."""
    try:
        return getattr(importlib.import_module(f"deploysdk.{module}"), name)
    except ImportError as e:
        raise UsageError(f"this command needs deploysdk.{module}.{name}, which cannot be imported here: {e}") from e
    except AttributeError as e:
        raise UsageError(f"deploysdk.{module} has no {name}() in this install") from e


def _print_result(result, out: str) -> None:
    """Backing functions return a report with ``summary()``; print it, or at least where the file went."""
    summary = getattr(result, "summary", None)
    print(summary() if callable(summary) else (result if isinstance(result, str) else f"wrote {out}"))


# --- inputs -------------------------------------------------------------------------------------------------------
def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path} as a .npy array: {e}") from e


def _conform(spec, array: np.ndarray) -> np.ndarray:
    """Cast float64 -> float32 and the like (np.save writes float64 by default); other kinds are left to fail."""
    if array.dtype != spec.dtype and array.dtype.kind == np.dtype(spec.dtype).kind:
        print(f"note: input {spec.name!r} cast from {array.dtype.name} to {np.dtype(spec.dtype).name}",
              file=sys.stderr)
        return array.astype(spec.dtype)
    return array


def read_feed(rt: Runtime, items: list[str]) -> dict[str, np.ndarray]:
    """``x.npy`` (single-input model), ``name=x.npy`` per input, or one ``feed.npz`` keyed by input names."""
    feed: dict[str, np.ndarray] = {}
    for item in items:
        name, _, path = item.rpartition("=")
        if path.endswith(".npz") and not name:
            with np.load(path, allow_pickle=False) as npz:
                feed.update({k: npz[k] for k in npz.files})
        elif name:
            feed[name] = _load_npy(path)
        elif len(rt.inputs) == 1 and len(items) == 1:
            feed[rt.inputs[0].name] = _load_npy(path)
        else:
            raise UsageError(f"the model has inputs {[s.name for s in rt.inputs]}: pass --input NAME=FILE.npy "
                             f"for each, or one .npz keyed by input name")
    specs = {s.name: s for s in rt.inputs}
    return {k: _conform(specs[k], v) if k in specs else v for k, v in feed.items()}


def feed_shapes(rt: Runtime, batch: int = 1, shape: list[int] | None = None) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes: ``batch`` for a dynamic batch dim, ``shape`` (or the exported default) for the rest."""
    from .runtime.base import TensorSpec

    contract, shapes = input_contract(rt.metadata), {}
    for spec in rt.inputs:
        dims = list(spec.shape)
        dims[0] = batch if dims[0] is None else dims[0]
        if shape:
            dims[2:] = shape
        full = concrete_shape(TensorSpec(spec.name, spec.dtype, tuple(dims)), contract)
        if full is None:
            raise UsageError(f"input {spec.describe()} has dynamic dims and the model embeds no default size: "
                             f"pass --shape")
        shapes[spec.name] = full
    return shapes


def random_feed(rt: Runtime, shapes: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for spec in rt.inputs:
        dtype = np.dtype(spec.dtype)
        data = rng.standard_normal(shapes[spec.name]) if dtype.kind == "f" else rng.integers(0, 2, shapes[spec.name])
        feed[spec.name] = data.astype(dtype)
    return feed


def _open(args, path: str, **kw) -> Runtime:
    """No --device: cuda:0 for a TensorRT engine (it runs nowhere else), the CPU for everything else."""
    device = args.device or ("cuda:0" if path.lower().endswith(ENGINE_SUFFIXES) else "cpu")
    return Runtime(path, backend=args.backend, device=device, warmup=0, **kw)


# --- commands -----------------------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from .runtime.torch import load_checkpoint

    export_onnx = _backing("export", "export_onnx")
    model = load_checkpoint(args.checkpoint)
    example = None
    if args.size or args.static or args.batch:
        example = model.example_input(batch_size=args.batch or (1 if args.static else 2), size=args.size)
    report = export_onnx(model, args.output, example_input=example, dynamic=False if args.static else None,
                         opset=args.opset, metadata=model.export_metadata or None)  # recipes: preprocessing
    _print_result(report, args.output)
    return 0


def cmd_optimize(args) -> int:
    if args.level == "none" and not args.fp16:
        raise UsageError("nothing to do: --level none without --fp16")
    if args.fp16 and args.level != "none":  # graph optimizations first, on fp32, then the conversion
        optimize_graph, convert_fp16 = _backing("optimize", "optimize_graph"), _backing("optimize", "convert_fp16")
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.output))) as tmp:
            mid = os.path.join(tmp, "graph.onnx")
            _print_result(optimize_graph(args.input, mid, level=args.level), mid)
            result = convert_fp16(mid, args.output, keep_io_types=args.keep_io_types)
    elif args.fp16:
        result = _backing("optimize", "convert_fp16")(args.input, args.output, keep_io_types=args.keep_io_types)
    else:
        result = _backing("optimize", "optimize_graph")(args.input, args.output, level=args.level)
    _print_result(result, args.output)
    return 0


def _calibration(path: str):
    """A folder of .npy files is passed as its path (the quantizer reads every file in it); a .npy file as the array."""
    if os.path.isdir(path):
        return path
    if not os.path.isfile(path):
        raise UsageError(f"calibration data not found: {path} (a folder of .npy files or a .npy array)")
    return _load_npy(path)


def cmd_quantize(args) -> int:
    if (args.eval_data is None) != (args.eval_labels is None):
        raise UsageError("--eval-data and --eval-labels go together")
    if args.max_drop is not None and args.eval_data is None:
        raise UsageError("--max-drop needs --eval-data and --eval-labels to measure the accuracy drop")
    quantize_int8 = _backing("quantize", "quantize_int8")
    result = quantize_int8(args.input, args.output, _calibration(args.calibration), method=args.method,
                           target=args.target, per_channel=not args.per_tensor,
                           eval_data=_load_npy(args.eval_data) if args.eval_data else None,
                           eval_labels=_load_npy(args.eval_labels) if args.eval_labels else None,
                           max_drop=args.max_drop)
    _print_result(result, args.output)
    return 0


def parse_profile(text: str) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """``input:1x1x224x224:4x1x224x224:8x1x224x224`` -> ("input", (min, opt, max))."""
    parts = text.split(":")
    try:
        if len(parts) != 4:
            raise ValueError
        shapes = tuple(tuple(int(d) for d in p.lower().split("x")) for p in parts[1:])
    except ValueError:
        raise UsageError(f"--profile must be NAME:MIN:OPT:MAX with shapes like 1x1x224x224, got {text!r}") from None
    return parts[0], shapes


def cmd_build_engine(args) -> int:
    build_engine = _backing("tensorrt", "build_engine")
    profiles = dict(parse_profile(p) for p in args.profile) if args.profile else None
    result = build_engine(args.onnx, args.engine, precision=args.precision,
                          profiles=[profiles] if profiles else None,
                          workspace=int(args.workspace) if (args.workspace or "").isdigit() else args.workspace,
                          timing_cache=args.timing_cache)
    _print_result(result, args.engine)
    return 0


def _describe(name: str, a: np.ndarray, labels: list | None) -> str:
    text = f"output {name}: {a.dtype.name}[{', '.join(map(str, a.shape))}]"
    if a.size and a.dtype.kind in "fiu":
        text += f" min {a.min():.4g} max {a.max():.4g} mean {a.mean():.4g}"
    if a.ndim == 2 and a.dtype.kind == "f" and a.shape[1] > 1:
        top = a.argmax(1)[:8].tolist()
        text += f"; top class per row {[labels[i] if labels and i < len(labels) else i for i in top]}"
    return text


def _is_feed(items: list[str]) -> bool:
    """.npy/.npz inputs (or NAME=FILE) feed the model directly; a folder or a medical image runs the pipeline."""
    return all("=" in item or item.lower().endswith((".npy", ".npz")) for item in items)


def _run_study(args) -> int:
    """``run MODEL --input DIR_OR_FILE --output DIR``: a thin layer over ``deploysdk.pipeline.Pipeline``."""
    from .io import SeriesRule
    from .pipeline import Pipeline

    if len(args.input) != 1 or not args.output:
        raise UsageError("a study run takes one --input (a DICOM folder or an image file) and --output DIR")
    rule = None
    if args.modality or args.series_description:
        rule = SeriesRule(modality=args.modality, description=args.series_description)
    with Pipeline.from_model(args.model, backend=args.backend, device=args.device or "cpu", threads=args.threads,
                             series_rule=rule, largest_component=args.largest_component) as pipe:
        result = pipe(args.input[0], args.output)
    print(result.summary())
    return 0


def cmd_run(args) -> int:
    if not _is_feed(args.input):
        return _run_study(args)
    with _open(args, args.model, threads=args.threads) as rt:
        outs = rt.run(read_feed(rt, args.input))
        labels = json.loads(rt.metadata.get("sdk.class_labels", "null") or "null")
        print(f"{args.model} on {rt.describe()}")
    for name, array in outs.items():
        print(_describe(name, array, labels))
    if args.output:
        with atomic_path(args.output, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **outs)
        print(f"wrote {args.output} ({', '.join(outs)})")
    return 0


def cmd_bench(args) -> int:
    with _open(args, args.model, threads=args.threads, io_binding=args.io_binding) as rt:
        shapes = feed_shapes(rt, args.batch, args.shape)
        stats = rt.benchmark(random_feed(rt, shapes, np.random.default_rng(0)), iterations=args.iterations,
                             warmup=args.warmup)
        print(f"{args.model} on {rt.describe()}, {shapes}: {stats.summary()}")
    return 0


def _tolerances(items: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for item in items or []:
        name, _, values = item.partition("=")
        try:
            atol, rtol = (float(v) for v in values.split(","))
        except ValueError:
            raise UsageError(f"--tol must be OUTPUT=ATOL,RTOL, got {item!r}") from None
        out[name] = (atol, rtol)
    return out


def cmd_compare(args) -> int:
    from .compare import compare

    runtimes = []
    try:
        for path in args.models:
            runtimes.append(_open(args, path))
        if args.input:
            feeds = [read_feed(runtimes[0], args.input)]
        else:
            shapes, rng = feed_shapes(runtimes[0], args.batch, args.shape), np.random.default_rng(args.seed)
            feeds = [random_feed(runtimes[0], shapes, rng) for _ in range(args.samples)]
        report = compare(runtimes, feeds, atol=args.atol, rtol=args.rtol, tolerances=_tolerances(args.tol))
    finally:
        for rt in runtimes:
            rt.close()
    print(report.summary())
    return 0 if report.passed else 1


def _sidecar(path: str) -> dict | None:
    """The JSON written beside an engine (builder, TensorRT version, GPU, precision, profiles)."""
    for candidate in (path + ".json", os.path.splitext(path)[0] + ".json"):
        if os.path.isfile(candidate):
            try:
                with open(candidate) as f:
                    return {"file": candidate, **json.load(f)}
            except (OSError, ValueError) as e:
                return {"file": candidate, "error": f"unreadable: {e}"}
    return None


def _print_specs(rt: Runtime) -> None:
    print(f"backend:   {rt.describe()}")
    for kind, specs in (("input", rt.inputs), ("output", rt.outputs)):
        for s in specs:
            print(f"{kind + ':':<10} {s.describe()}")
    for key, value in sorted(rt.metadata.items()):
        try:
            value = json.dumps(json.loads(value))
        except ValueError:
            pass
        print(f"meta:      {key} = {value}")


def cmd_inspect(args) -> int:
    print(f"model:     {args.model}")
    sidecar = _sidecar(args.model) if args.model.lower().endswith(ENGINE_SUFFIXES) else None
    for key, value in (sidecar or {}).items():
        print(f"engine:    {key} = {json.dumps(value) if not isinstance(value, str) else value}")
    try:
        with _open(args, args.model) as rt:
            _print_specs(rt)
    except DeploySDKError as e:
        if sidecar is None:
            raise
        print(f"backend:   cannot open the engine here ({e})")
    return 0


def cmd_serve(args) -> int:
    serve = _backing("serve", "serve")
    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, backend=args.backend,
          device=args.device or "cpu", results_dir=args.results_dir, max_results=args.max_results,
          threads=args.threads)
    return 0


def cmd_triton_repo(args) -> int:
    write_triton_repo = _backing("triton", "write_triton_repo")
    folder = write_triton_repo(args.model, args.out, name=args.name, platform=args.platform,
                               max_batch_size=args.max_batch_size, preferred_batch_sizes=args.preferred_batch_size,
                               max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, kind=args.kind,
                               gpus=args.gpus, version=args.version, overwrite=args.overwrite)
    print(f"wrote {folder} (config.pbtxt, {args.version}/); serve with: tritonserver --model-repository="
          f"{os.path.abspath(args.out)}")
    return 0


# --- parser -------------------------------------------------------------------------------------------------------
def _sub(sub, name: str, fn, help_: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=description, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(fn=fn)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log backend selection and loading steps")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks instead of one-line errors")
    return p


def _runtime_args(p: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        p.add_argument("model", help="an .onnx file, a TensorRT .engine/.plan, or an SDK checkpoint .pt (torch)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto (default): TensorRT/CUDA EP on cuda:N, CPU EP on cpu; a named backend that cannot "
                        "load is an error")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda:0 for engines, cpu otherwise)")


def _add_build_commands(sub) -> None:
    p = _sub(sub, "export", cmd_export, "PyTorch checkpoint -> verified ONNX file",
             "Rebuild the model an SDK checkpoint names ({'model_name', 'config', 'state_dict'}, loaded with\n"
             "torch.load(weights_only=True)), export it to ONNX with embedded metadata, and verify ONNX Runtime\n"
             "against PyTorch on several inputs. The file is written only if it passes. Needs torch and trainsdk.\n\n"
             "  deploysdk export runs/demo/lenet5.pt lenet5.onnx")
    p.add_argument("checkpoint", help="SDK checkpoint (.pt)")
    p.add_argument("output", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    p.add_argument("--static", action="store_true", help="static shapes (default: dynamic batch, and dynamic "
                                                          "spatial dims for fully convolutional models)")
    p.add_argument("--batch", type=int, help="batch size of the traced example (static: the model's batch)")
    p.add_argument("--size", type=int, nargs="+", metavar="N", help="spatial size of the traced example")
    p = _sub(sub, "optimize", cmd_optimize, "graph optimizations and/or fp16 conversion of an ONNX file",
             "Fold constants and fuse operators offline (so the serving host loads a smaller, faster graph),\n"
             "and/or convert weights and activations to float16 for GPUs.\n\n"
             "  deploysdk optimize model.onnx model.opt.onnx\n"
             "  deploysdk optimize model.onnx model.fp16.onnx --fp16          # inputs/outputs stay float32")
    p.add_argument("input", help="ONNX file to read")
    p.add_argument("output", help="ONNX file to write")
    p.add_argument("--level", default="basic", help="basic (default: standard ONNX ops only, so TensorRT can read the result), or none with --fp16")
    p.add_argument("--fp16", action="store_true", help="convert to float16 (after the graph optimizations)")
    p.add_argument("--no-keep-io-types", dest="keep_io_types", action="store_false",
                   help="with --fp16: make inputs/outputs float16 too (default: they stay float32)")
    p = _sub(sub, "quantize", cmd_quantize, "int8 post-training quantization with calibration data",
             "Quantize to int8 using calibration images to choose the activation ranges; optionally measure the\n"
             "accuracy drop on labelled data and fail if it exceeds --max-drop.\n\n"
             "  deploysdk quantize model.onnx model.int8.onnx --calibration calib/ --eval-data x.npy \\\n"
             "      --eval-labels y.npy --max-drop 1.0")
    p.add_argument("input", help="ONNX file (float32)")
    p.add_argument("output", help="quantized ONNX file to write")
    p.add_argument("--calibration", required=True, help="a folder of .npy files or one .npy array (N, C, H, W)")
    p.add_argument("--method", default="minmax", help="minmax (default) | entropy | percentile")
    p.add_argument("--target", default="onnxruntime-cpu", choices=("onnxruntime-cpu", "tensorrt"),
                   help="QDQ layout for ONNX Runtime's CPU kernels or for TensorRT")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default: per channel)")
    p.add_argument("--eval-data", help=".npy inputs to measure accuracy before/after")
    p.add_argument("--eval-labels", help=".npy integer labels for --eval-data")
    p.add_argument("--max-drop", type=float, help="largest accepted accuracy drop in percentage points, e.g. 1.0")
    p = _sub(sub, "build-engine", cmd_build_engine, "build a TensorRT engine from an ONNX file",
             "Build a serialized TensorRT engine for this GPU and TensorRT version (an engine does not move between\n"
             "GPUs or versions; a JSON sidecar records both). Needs the tensorrt package and a CUDA GPU.\n\n"
             "  deploysdk build-engine model.onnx model.engine --precision fp16 \\\n"
             "      --profile input:1x1x224x224:8x1x224x224:32x1x224x224")
    p.add_argument("onnx", help="ONNX file to read")
    p.add_argument("engine", help="engine file to write (.engine or .plan)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"))
    p.add_argument("--profile", action="append", metavar="NAME:MIN:OPT:MAX",
                   help="shape range of a dynamic input, repeat per input, e.g. input:1x1x224x224:4x1x224x224:"
                        "8x1x224x224")
    p.add_argument("--workspace", metavar="SIZE", help="builder workspace limit: bytes, or e.g. 512MiB, 4GiB")
    p.add_argument("--timing-cache", help="timing cache file, reused across builds (faster rebuilds)")


def _add_run_commands(sub) -> None:
    p = _sub(sub, "run", cmd_run, "run a model on a study (DICOM folder, NIfTI, image) or on .npy inputs",
             "With a DICOM folder or a medical image file (NIfTI, DICOM, PNG) as --input: segment it with the\n"
             "clinical pipeline (preprocessing from the model's metadata, tiled inference, the mask back in the\n"
             "study's geometry) and write mask.nii.gz, report.json, overlay.png (and seg.dcm for a DICOM series)\n"
             "to the --output folder. With .npy/.npz inputs: run them through the model and print each output's\n"
             "shape and range (and the top class of classifier logits); --output saves the outputs to an .npz.\n\n"
             "  deploysdk run liver.onnx --input study/ --output out/ --series-description 'portal|venous'\n"
             "  deploysdk run model.onnx --input x.npy --output out.npz")
    _runtime_args(p)
    p.add_argument("--input", action="append", required=True, metavar="[NAME=]FILE|DIR",
                   help="a DICOM folder or an image file (pipeline); or x.npy for a single-input model, NAME=x.npy "
                        "per input, or one .npz keyed by input name")
    p.add_argument("--output", help="the output folder (pipeline) or an .npz file for the outputs (written "
                                    "atomically)")
    p.add_argument("--threads", type=int, help="intra-op CPU threads")
    p.add_argument("--series-description", metavar="REGEX",
                   help="pipeline: pick the DICOM series whose SeriesDescription matches (case-insensitive)")
    p.add_argument("--modality", help="pipeline: pick a DICOM series of this modality (CT, MR, ...)")
    p.add_argument("--largest-component", action="store_true",
                   help="pipeline: keep the largest connected piece of each label")
    p = _sub(sub, "bench", cmd_bench, "latency percentiles and throughput of a model on a backend",
             "Time repeated runs on random inputs: p50/p90/p99 latency and samples per second. Dynamic spatial\n"
             "dims take --shape or the size the model was exported for.\n\n"
             "  deploysdk bench model.onnx --batch 8 --threads 2")
    _runtime_args(p)
    p.add_argument("--batch", type=int, default=1, help="batch size for a dynamic batch dim (default 1)")
    p.add_argument("--shape", type=int, nargs="+", metavar="N", help="spatial size for dynamic spatial dims")
    p.add_argument("--iterations", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=int, help="intra-op CPU threads")
    p.add_argument("--io-binding", action="store_true", default=None,
                   help="ONNX Runtime I/O binding (default: on for CUDA sessions)")
    p = _sub(sub, "compare", cmd_compare, "run several models on the same inputs and compare their outputs",
             "Run every model on the same inputs and report max abs / mean abs / max rel error of each against\n"
             "the first (the reference), per output. Exit status 1 when any output is out of tolerance (an\n"
             "element passes when |x - ref| <= atol + rtol * |ref|).\n\n"
             "  deploysdk compare model.pt model.onnx model.fp16.onnx --samples 4 --tol output=1e-2,1e-2")
    p.add_argument("models", nargs="+", help="two or more models; the first is the reference")
    _runtime_args(p, model=False)
    p.add_argument("--input", action="append", metavar="[NAME=]FILE", help="inputs (default: random, seeded)")
    p.add_argument("--samples", type=int, default=3, help="random feeds when no --input (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--shape", type=int, nargs="+", metavar="N", help="spatial size for dynamic spatial dims")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--tol", action="append", metavar="OUTPUT=ATOL,RTOL", help="per-output tolerance override")
    p = _sub(sub, "inspect", cmd_inspect, "print a model's inputs, outputs and embedded metadata",
             "Print what runs the model, its input and output specs (? = dynamic dim) and the sdk.* metadata\n"
             "embedded at export; for a TensorRT engine also its JSON sidecar (printed even where TensorRT is\n"
             "missing).\n\n  deploysdk inspect runs/demo/lenet5.onnx")
    _runtime_args(p)


def _add_serve_commands(sub) -> None:
    p = _sub(sub, "serve", cmd_serve, "serve the segmentation pipeline over HTTP",
             "A small HTTP service (standard library) around the clinical pipeline: POST /v1/segment with a NIfTI\n"
             "file or a zip of DICOM files returns the report (label volumes, files used and skipped, timings) and\n"
             "URLs of the mask; GET /v1/results/ID/mask.nii.gz, /healthz, /v1/model.\n\n"
             "  deploysdk serve liver.onnx --port 8000\n"
             "  curl --data-binary @study.zip -H 'Content-Type: application/zip' http://127.0.0.1:8000/v1/segment")
    _runtime_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload in MiB (default 512)")
    p.add_argument("--results-dir", help="where results are kept (default: a temp folder removed at exit)")
    p.add_argument("--max-results", type=int, default=100, help="results kept; the oldest go first (default 100)")
    p.add_argument("--threads", type=int, help="intra-op CPU threads")
    p = _sub(sub, "triton-repo", cmd_triton_repo, "write a Triton Inference Server model repository for a model",
             "Write OUT/NAME/config.pbtxt and OUT/NAME/VERSION/model.onnx (or model.plan for a TensorRT engine,\n"
             "whose inputs and outputs come from its build-engine sidecar): platform, I/O with Triton data types,\n"
             "dynamic batching and an instance group, for serving on Triton when one machine is not enough.\n\n"
             "  deploysdk triton-repo unet.onnx models/ --max-batch-size 8 --instances 2 --kind gpu\n"
             "  tritonserver --model-repository=$PWD/models")
    p.add_argument("model", help="an .onnx file, or a TensorRT .engine/.plan with its .json sidecar")
    p.add_argument("out", help="model repository folder (created; other models in it are left alone)")
    p.add_argument("--name", help="model name in Triton (default: the file name without suffix)")
    p.add_argument("--platform", default="auto", choices=("auto", "onnxruntime", "tensorrt"),
                   help="auto (default): tensorrt for .engine/.plan/.trt, onnxruntime otherwise")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="largest batch Triton forms (default 8; 0: no batching; a fixed-batch model gets 0)")
    p.add_argument("--preferred-batch-size", type=int, nargs="+", metavar="N",
                   help="batch sizes the dynamic batcher aims for (default: none, Triton's advice for most models)")
    p.add_argument("--max-queue-delay-us", type=int, default=100,
                   help="how long a request may wait for others to batch with, in microseconds (default 100)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument("--kind", default="cpu", choices=("cpu", "gpu"), help="where instances run (default cpu)")
    p.add_argument("--gpus", type=int, nargs="+", metavar="N", help="with --kind gpu: GPU indices (default all)")
    p.add_argument("--version", type=int, default=1, help="model version folder (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder of the same name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploysdk", epilog=EPILOG,
                                     description="Export, optimize, quantize and run trained networks; compare "
                                                 "backends. 'deploysdk COMMAND --help' explains each command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log backend selection and loading steps")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build_commands(sub)
    _add_run_commands(sub)
    _add_serve_commands(sub)
    return parser


def _quiet_onnxruntime() -> None:
    """ONNX Runtime logs provider-loading failures from C++ to stderr; the runtime raises them as one clear error,
    so the command line keeps them out of the way unless -v asks for the details."""
    try:
        import onnxruntime
    except ImportError:
        return
    onnxruntime.set_default_logger_severity(4)


USER_ERRORS = (DeploySDKError, ValueError, TypeError, KeyError, OSError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_onnxruntime()
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"deploysdk {args.command}: error: {' '.join(str(text).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
