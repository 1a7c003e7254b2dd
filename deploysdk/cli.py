"""``deploysdk`` command line: ``inspect`` a model's I/O and metadata, ``bench`` its latency on a backend."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .errors import DeploySDKError
from .runtime import Runtime


def cmd_inspect(args) -> None:
    with Runtime(args.model, backend=args.backend, device=args.device, warmup=0) as rt:
        print(f"model:     {args.model}")
        print(f"backend:   {rt.backend} on {rt.providers}")
        for kind, specs in (("input", rt.inputs), ("output", rt.outputs)):
            for s in specs:
                print(f"{kind + ':':<10} {s.describe()}")
        for key, value in sorted(rt.metadata.items()):
            try:
                value = json.dumps(json.loads(value))
            except ValueError:
                pass
            print(f"meta:      {key} = {value}")


def _bench_feed(rt: Runtime, batch: int, shape: list[int] | None) -> dict:
    feed = {}
    for spec in rt.inputs:
        dims = list(spec.shape)
        dims[0] = batch if dims[0] is None else dims[0]
        if shape:
            dims[2:] = shape
        if None in dims:
            raise DeploySDKError(f"input {spec.describe()} has dynamic spatial dims: pass --shape H W")
        feed[spec.name] = np.random.default_rng(0).standard_normal(dims).astype(spec.dtype)
    return feed


def cmd_bench(args) -> None:
    with Runtime(args.model, backend=args.backend, device=args.device, threads=args.threads) as rt:
        stats = rt.benchmark(_bench_feed(rt, args.batch, args.shape), iterations=args.iterations)
        print(f"{args.model} on {rt.backend} {rt.providers}, batch {args.batch}: p50 {stats.p50_ms:.3f} ms, "
              f"p90 {stats.p90_ms:.3f} ms, p99 {stats.p99_ms:.3f} ms, {stats.throughput:.1f} samples/s")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--backend", default="auto", help="auto | onnxruntime")
    p.add_argument("--device", default="cpu", help="cpu | cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploysdk", description="Run exported models fast, exactly as trained.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="print a model's inputs, outputs and embedded metadata")
    _common(p)
    p.set_defaults(fn=cmd_inspect)
    p = sub.add_parser("bench", help="latency percentiles and throughput of a model on a backend")
    _common(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--shape", type=int, nargs="+", help="spatial size for models with dynamic spatial dims")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--threads", type=int)
    p.set_defaults(fn=cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (DeploySDKError, ValueError, FileNotFoundError) as e:
        print(f"deploysdk {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
