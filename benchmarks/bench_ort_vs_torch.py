"""ONNX Runtime CPU (through deploysdk's Runtime) against PyTorch eager CPU, side by side in one run.

    python benchmarks/bench_ort_vs_torch.py [--threads 1 2] [--repeat 10] [--spin] [--ort-levels basic]

Claim under test (the issue "Deployment core"): on the CPU, the exported model on ONNX Runtime is at least 1.5x faster
(p50 latency, batch 1) than the same weights in PyTorch eager, on ResNet-18 at 1x1x224x224 and on the U-Net
(``create_model("unet", in_channels=1, num_classes=2)``) at 1x1x256x256.

Both sides get the same intra-op threads (``torch.set_num_threads`` / ``Runtime(threads=)``), each count in
``--threads`` measured separately; PyTorch runs in eval mode under ``torch.inference_mode`` (no autograd bookkeeping,
which ``no_grad`` also gives), on contiguous NCHW input. The two run round-robin in blocks of calls
(``benchmarks/_common.py``), so machine noise hits both alike, and their outputs are checked to agree first.

Idle worker threads busy-wait by default in both libraries. In one process that alternates between them, the pool
that just ran keeps spinning on the cores the other needs (and on a shared machine so do other processes), so every
barrier of the other stalls for a scheduler time slice; PyTorch's OpenMP pool suffers far more than ONNX Runtime's,
which inflates the speed-up many times over at 2+ threads. So busy-waiting is off on both sides by default
(``OMP_WAIT_POLICY=PASSIVE``, set before torch loads; ``SessionConfig(spinning=False)``); ``--spin`` keeps the
libraries' defaults, to see that effect. ``--ort-levels`` adds ONNX Runtime at other graph optimization levels, to
show where the speed comes from. Weights are random (latency does not depend on them).
Nothing is hard-coded: every figure printed is measured in this run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_table, time_side_by_side  # noqa: E402

CASES = {  # name -> (model name, create_model kwargs, input shape, calls per timed block)
    "resnet18": ("resnet18", dict(in_channels=1, num_classes=2), (1, 1, 224, 224), 3),
    "unet": ("unet", dict(in_channels=1, num_classes=2), (1, 1, 256, 256), 1),
}
TARGET = 1.5


def build(case: str, out: str):
    """The model in eval mode and its verified ONNX export (dynamic dims: the U-Net takes 256x256 as well)."""
    import torch

    from deploysdk import export_onnx
    from trainsdk.models import create_model

    name, kwargs = CASES[case][:2]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    path = os.path.join(out, f"{case}.onnx")
    weights = path + ".weights.pt"  # the cached export is reused only with the weights it was made from
    if not (os.path.exists(path) and os.path.exists(weights)):
        print(f"exporting {case}: {export_onnx(model, path).summary()}", flush=True)
        torch.save(model.state_dict(), weights)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model, path


def measure(case: str, threads: int, args) -> dict:
    import torch

    from deploysdk import Runtime
    from deploysdk.runtime import SessionConfig

    model, path = build(case, args.out)
    torch.set_num_threads(threads)
    shape, calls = CASES[case][2:]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    xt = torch.from_numpy(x)

    def eager():
        with torch.inference_mode():
            return model(xt)

    spin = None if args.spin else False
    runtimes = {level: Runtime(path, backend="onnxruntime", device="cpu", session_config=SessionConfig(
        threads=threads, optimization=level, spinning=spin)) for level in ["all", *args.ort_levels]}
    ref = eager().numpy()
    for rt in runtimes.values():
        np.testing.assert_allclose(rt(x), ref, atol=1e-3, rtol=1e-3)
    fns = {"torch": eager, **{f"ort-{lvl}": (lambda rt=rt: rt.run({"input": x})) for lvl, rt in runtimes.items()}}
    blocks = {k: (lambda fn=fn: [fn() for _ in range(calls)]) for k, fn in fns.items()}
    timings = time_side_by_side(blocks, repeat=args.repeat, warmup=1)
    for rt in runtimes.values():
        rt.close()
    return {"case": case, "threads": threads, "shape": shape, **{k: t.p50_ms / calls for k, t in timings.items()}}


def report(rows: list[dict], args) -> None:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    spin = "default busy-waiting" if args.spin else "busy-waiting off (OMP_WAIT_POLICY=PASSIVE, ORT spinning off)"
    print(f"\nPyTorch {torch.__version__} eager vs ONNX Runtime CPU (deploysdk Runtime), batch 1, same intra-op "
          f"threads each, {spin}, {args.repeat} interleaved rounds; p50 ms per call ({platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end)")
    levels = [k for k in rows[0] if k.startswith("ort-") and k != "ort-all"]
    headers = ["model", "input", "threads", "torch p50 ms", "ORT p50 ms", "speed-up"] + [f"{k} ms" for k in levels]
    table = [[r["case"], "x".join(map(str, r["shape"])), r["threads"], f"{r['torch']:.2f}", f"{r['ort-all']:.2f}",
              f"{r['torch'] / r['ort-all']:.2f}x"] + [f"{r[k]:.2f}" for k in levels] for r in rows]
    print(format_table(headers, table))
    for r in rows:
        speedup = r["torch"] / r["ort-all"]
        verdict = "met" if speedup >= TARGET else "MISSED"
        print(f"{r['case']}, {r['threads']} thread(s): ONNX Runtime {speedup:.2f}x faster than PyTorch eager "
              f"(target >= {TARGET}x): {verdict}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="intra-op thread counts, each measured for both (default 1 2)")
    parser.add_argument("--repeat", type=int, default=10, help="interleaved timed rounds (default 10)")
    parser.add_argument("--out", default="runs/bench_ort_vs_torch", help="folder for the exported models")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--spin", action="store_true",
                        help="keep the libraries' busy-waiting idle threads (default: off on both sides)")
    parser.add_argument("--ort-levels", nargs="*", default=[], choices=["disable", "basic", "extended"],
                        help="also time ONNX Runtime at these graph optimization levels")
    args = parser.parse_args(argv)
    if not args.spin:
        if "torch" in sys.modules and os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
            raise SystemExit("torch is already imported: run this file as a script (or pass --spin)")
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by the OpenMP runtime when torch loads it
    os.makedirs(args.out, exist_ok=True)
    report([measure(case, threads, args) for case in args.cases for threads in args.threads], args)


if __name__ == "__main__":
    main()
