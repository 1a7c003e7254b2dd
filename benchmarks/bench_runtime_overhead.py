"""What deploysdk's Runtime costs on top of a bare ONNX Runtime session, measured side by side in one run.

    python benchmarks/bench_runtime_overhead.py [--threads 1] [--rounds 40] [--out runs/bench_overhead]

Claims under test (the issue "Deployment core"): ``Runtime.run`` on ResNet-18 at 1x1x224x224 is within 1.05x of a
bare ``onnxruntime.InferenceSession.run`` on the same file with the same settings (threads, optimization level, CPU
provider); on LeNet-5 (a ~30 us model, where a fixed cost shows most) the overhead is reported in microseconds per
call. Runtime adds feed validation (names, dtype, rank, static dims) and a dict of outputs; I/O binding (off by
default on the CPU) is timed as a third, informational, candidate.

The candidates run round-robin, each round a block of calls (``benchmarks/_common.py``), so a noisy phase of a shared
machine hits all of them alike; figures are medians over rounds, divided by the calls per round. Weights are random
(latency does not depend on them). Nothing is hard-coded: every figure printed is measured in this run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_table, time_side_by_side  # noqa: E402

MODELS = {  # name -> (create_model kwargs, input shape, calls per round)
    "resnet18": (dict(in_channels=1, num_classes=2), (1, 1, 224, 224), 2),
    "lenet5": (dict(in_channels=1, num_classes=10), (1, 1, 32, 32), 200),
}


def export(name: str, out: str) -> str:
    from deploysdk import export_onnx
    from trainsdk.models import create_model

    path = os.path.join(out, f"{name}.onnx")
    if not os.path.exists(path):
        report = export_onnx(create_model(name, **MODELS[name][0]), path)
        print(f"exported {report.summary()}", flush=True)
    return path


def bare_session(path: str, threads: int):
    """The same settings Runtime gives its session: intra-op threads, ORT_ENABLE_ALL, CPU provider only."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def measure(name: str, path: str, threads: int, rounds: int) -> dict:
    from deploysdk import Runtime

    shape, calls = MODELS[name][1], MODELS[name][2]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess = bare_session(path, threads)
    rt = Runtime(path, backend="onnxruntime", device="cpu", threads=threads)
    bound = Runtime(path, backend="onnxruntime", device="cpu", threads=threads, io_binding=True)
    np.testing.assert_array_equal(rt.run({"input": x})["output"], sess.run(None, {"input": x})[0])

    def block(fn):
        return lambda: [fn() for _ in range(calls)]

    timings = time_side_by_side({
        "bare": block(lambda: sess.run(None, {"input": x})),
        "runtime": block(lambda: rt.run({"input": x})),
        "binding": block(lambda: bound.run({"input": x})),
    }, repeat=rounds, warmup=2)
    per_call = {k: t.p50_ms / calls for k, t in timings.items()}
    rt.close()
    bound.close()
    return {"name": name, "shape": shape, "calls": calls, **per_call}


def report(rows: list[dict], threads: int, rounds: int) -> None:
    print(f"\nRuntime.run vs bare InferenceSession.run, ORT CPU, {threads} intra-op thread(s), {rounds} interleaved "
          f"rounds; median ms per call ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    table = []
    for r in rows:
        for key, label in (("runtime", "Runtime.run"), ("binding", "Runtime.run io_binding=True")):
            table.append([r["name"], "x".join(map(str, r["shape"])), label, f"{r['bare']:.4f}", f"{r[key]:.4f}",
                          f"{r[key] / r['bare']:.3f}x", f"{(r[key] - r['bare']) * 1e3:+.1f}"])
    print(format_table(["model", "input", "candidate", "bare ms", "deploysdk ms", "ratio", "overhead us"], table))
    by = {r["name"]: r for r in rows}
    if "resnet18" in by:
        ratio = by["resnet18"]["runtime"] / by["resnet18"]["bare"]
        print(f"ResNet-18: Runtime.run / bare = {ratio:.3f}x (target <= 1.05x): {'met' if ratio <= 1.05 else 'MISSED'}")
    if "lenet5" in by:
        r = by["lenet5"]
        print(f"LeNet-5: Runtime.run overhead {(r['runtime'] - r['bare']) * 1e3:+.1f} us per call on a "
              f"{r['bare'] * 1e3:.1f} us call")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both (default 1)")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    parser.add_argument("--out", default="runs/bench_overhead", help="folder for the exported models")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = [measure(name, export(name, args.out), args.threads, args.rounds) for name in args.models]
    report(rows, args.threads, args.rounds)


if __name__ == "__main__":
    main()
