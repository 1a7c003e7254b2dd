"""Fused ops vs PyTorch eager on the CPU, forward + backward, measured side by side in one run.

    python benchmarks/bench_fused_ops.py [--repeats 15] [--threads N] [--malloc-tuned] [--quick] [--skip-models]

Each case is timed in interleaved rounds (every round runs every variant once, in a shuffled order) so load from
other processes hits all variants alike; the table gives medians, the spread (p25-p75 as % of the median) and the
ratio of medians. Bandwidth is the fused op's minimum traffic (each full-size tensor it must read or write, once)
over its median time, next to a copy between two preallocated tensors of the same size (read + write) timed in the
same rounds. Nothing is hard-coded: every figure printed comes from this run.

Allocator: PyTorch's CPU allocator takes big tensors from glibc, which hands freed blocks back to the OS and maps
them again, zero-filled, with a page fault per 4 KiB page on first touch. On this VM that costs about as much as the
kernels themselves, and it differs per variant with the number and order of its allocations (the "flt" columns:
page faults per call). ``--malloc-tuned`` re-runs the script with glibc's mmap and trim thresholds raised
(GLIBC_TUNABLES: freed blocks stay in the heap, as with the jemalloc/tcmalloc that PyTorch's CPU tuning guide
recommends), which removes that cost for blocks below glibc's 32 MiB mmap cap (the BN and add shapes, not LRN's
74 MB tensors), so the kernels themselves are compared.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainsdk import ops  # noqa: E402
from trainsdk.models import create_model  # noqa: E402
from trainsdk.models.fused import AddReLU, BatchNormAct2d, FusedLRN  # noqa: E402

TUNED_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"


@dataclass
class Run:
    """Per-call seconds and page faults of each case; ``unit``: bytes of one full-size tensor (for bandwidth)."""

    times: dict[str, list[float]]
    faults: dict[str, list[int]]
    unit: int = 0

    def med(self, name: str) -> float:
        return statistics.median(self.times[name])

    def spread(self, name: str) -> str:
        ts = self.times[name]
        q = statistics.quantiles(ts, n=4) if len(ts) >= 4 else [min(ts), 0.0, max(ts)]
        return f"±{50 * (q[2] - q[0]) / self.med(name):.0f}%"

    def flt(self, name: str) -> int:
        return int(statistics.median(self.faults[name]))


def interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int = 2, unit: int = 0) -> Run:
    """Every case ``repeats`` times, in rounds that each run every case once in a fresh random order."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    run = Run({name: [] for name in cases}, {name: [] for name in cases}, unit)
    names = list(cases)
    for _ in range(repeats):
        random.shuffle(names)
        for name in names:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            cases[name]()
            run.times[name].append(time.perf_counter() - t0)
            run.faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return run


def timed(cases: dict[str, Callable[[], None]], shape, repeats: int) -> Run:
    """``interleaved`` plus a copy between two preallocated tensors of ``shape`` in the same rounds, so the
    bandwidth reference sees the same load as the op."""
    src, dst = torch.randn(*shape), torch.empty(*shape)
    return interleaved({**cases, "copy": lambda: dst.copy_(src)}, repeats, unit=math.prod(shape) * 4)


def row(label: str, run: Run, traffic: int | None = None) -> str:
    """One table line: eager vs fused; ``traffic``: the fused op's minimum bytes moved, for its bandwidth."""
    te, tf = run.med("eager"), run.med("fused")
    line = (f"{label:<34} eager {te * 1e3:8.2f} ms {run.spread('eager'):>5} {run.flt('eager'):6d} flt   "
            f"fused {tf * 1e3:8.2f} ms {run.spread('fused'):>5} {run.flt('fused'):6d} flt   {te / tf:6.2f}x")
    if traffic is not None:
        bw, copy_bw = traffic / tf, 2 * run.unit / run.med("copy")
        line += f"   fused {bw / 1e9:5.1f} GB/s, copy {copy_bw / 1e9:5.1f} GB/s: {100 * bw / copy_bw:3.0f}%"
    return line


def as_activation(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The leaves enter through a view, i.e. as non-leaf activations (as a conv output would): otherwise autograd
    copies a gradient that a custom op's Python backward returns before storing it in .grad, a cost no layer
    inside a network pays."""
    return tuple(t.view_as(t) for t in ts)


def fwd_bwd(module: Callable, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor,
            prep: Callable = as_activation) -> Callable[[], None]:
    """One forward + backward; input grads are reset so every call does the same work."""

    def step() -> None:
        for t in inputs:
            t.grad = None
        module(*prep(*inputs)).backward(grad)

    return step


def bench_lrn(shape, repeats) -> str:
    x, g = torch.randn(*shape, requires_grad=True), torch.randn(*shape)
    eager, fused = nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0), FusedLRN(5, 5e-4, 0.75, 2.0)  # AlexNet's LRN
    times = timed({"eager": fwd_bwd(eager, (x,), g), "fused": fwd_bwd(fused, (x,), g)}, shape, repeats)
    n = x.numel() * 4
    return row(f"LRN {'x'.join(map(str, shape))}", times, 5 * n)  # fwd x,y; bwd g,x,dx


def bench_bn(shape, repeats) -> list[str]:
    c = shape[1]
    x, g = torch.randn(*shape, requires_grad=True), torch.randn(*shape)
    eager = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True)).train()
    fused = BatchNormAct2d(c, act="relu").train()
    times = timed({"eager": fwd_bwd(eager, (x,), g), "fused": fwd_bwd(fused, (x,), g)}, shape, repeats)
    n = x.numel() * 4
    label = f"BN+ReLU train {'x'.join(map(str, shape))}"
    lines = [row(label, times, 5 * n)]  # fwd x,y; bwd g,x,dx
    # InPlace-ABN needs a non-leaf input (it overwrites it): both sides start from x * 1 here.
    eager_l = nn.Sequential(nn.BatchNorm2d(c), nn.LeakyReLU(0.01, inplace=True)).train()
    fused_l = BatchNormAct2d(c, act="leaky_relu", inplace=True).train()
    times = interleaved({"eager": fwd_bwd(eager_l, (x,), g, prep=lambda t: (t * 1,)),
                         "fused": fwd_bwd(fused_l, (x,), g, prep=lambda t: (t * 1,))}, repeats)
    lines.append(row("BN+LeakyReLU in-place ABN (x*1 in)", times))
    return lines


def bench_add_relu(shape, repeats) -> str:
    a, b = torch.randn(*shape, requires_grad=True), torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)

    def eager(p, q):  # ResNet's eager tail: out = out + identity; relu in place
        return torch.relu_(p + q)

    times = timed({"eager": fwd_bwd(eager, (a, b), g), "fused": fwd_bwd(AddReLU(), (a, b), g)}, shape, repeats)
    n = a.numel() * 4
    return row(f"add+ReLU {'x'.join(map(str, shape))}", times, 6 * n)  # a,b,y; g,y,dx


def bench_bias_act(shape, repeats) -> str:
    x, b = torch.randn(*shape, requires_grad=True), torch.randn(shape[1], requires_grad=True)
    g, gain = torch.randn(*shape), math.sqrt(2)

    def eager(p, q):  # StyleGAN's reference path: add, leaky ReLU, scale
        return F.leaky_relu(p + q.view(1, -1, 1, 1), 0.2) * gain

    def fused(p, q):
        return ops.bias_act(p, q, "leaky_relu", 0.2, gain)

    times = timed({"eager": fwd_bwd(eager, (x, b), g), "fused": fwd_bwd(fused, (x, b), g)}, shape, repeats)
    n = x.numel() * 4
    return row(f"bias+LReLU*gain {'x'.join(map(str, shape))}", times, 5 * n)  # x,y; g,y,dx


def memory_lines(shape) -> list[str]:
    """Activation memory kept for backward by BN + LeakyReLU followed by a layer that keeps its input."""
    c = shape[1]
    w = torch.randn(1, c, 1, 1, requires_grad=True)
    x = torch.randn(*shape, requires_grad=True)
    variants = {"eager BN+LeakyReLU": nn.Sequential(nn.BatchNorm2d(c), nn.LeakyReLU(0.01, inplace=True)),
                "fused": BatchNormAct2d(c, act="leaky_relu"),
                "fused in-place ABN": BatchNormAct2d(c, act="leaky_relu", inplace=True)}
    measured = {k: ops.saved_tensor_bytes(lambda t, m=m: m(t * 1) * w, x) for k, m in variants.items()}
    base = ops.saved_tensor_bytes(lambda t: (t * 1) * w, x)  # what the surrounding layers keep anyway
    parts = ", ".join(f"{k} {(v - base) / 2**20:.1f} MiB" for k, v in measured.items())
    saved = ops.inplace_abn_bytes_saved(shape)
    return [f"activation memory kept by BN+act at {'x'.join(map(str, shape))} (beyond its neighbours): {parts}",
            f"in-place ABN saves {saved / 2**20:.1f} MiB per call (inplace_abn_bytes_saved), measured "
            f"{(measured['eager BN+LeakyReLU'] - measured['fused in-place ABN']) / 2**20:.1f} MiB"]


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> Callable:
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss_fn(out, y).backward()
        opt.step()

    return step


def bench_model(name: str, batch: int, size: int, repeats: int, **kw) -> str:
    cases = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, fused=fused, **kw).train()
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
        cases["fused" if fused else "eager"] = train_step(model, x, y, torch.optim.SGD(model.parameters(), 0.01))
    times = interleaved(cases, repeats, warmup=1)
    return row(f"{name} train step b{batch} {size}px", times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="small shapes (smoke test of the script)")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--malloc-tuned", action="store_true", help="re-run with glibc's mmap/trim thresholds raised")
    args = p.parse_args()
    if args.malloc_tuned and os.environ.get("GLIBC_TUNABLES") != TUNED_MALLOC:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNED_MALLOC})
    if args.threads:
        torch.set_num_threads(args.threads)
    status = ops.load()
    s = 4 if args.quick else 1
    lrn_shape, bn_shape = (64 // s, 96, 55, 55), (32 // s, 64, 56, 56)
    malloc = "tuned (GLIBC_TUNABLES)" if os.environ.get("GLIBC_TUNABLES") == TUNED_MALLOC else "glibc default"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, malloc {malloc}, "
          f"load average {os.getloadavg()[0]:.1f}; {status}")
    print("times are medians of interleaved rounds, ±: half the p25-p75 range in % of the median, flt: page faults "
          "per call;")
    print("GB/s: the fused op's minimum traffic / its time, next to a preallocated copy of one tensor timed in the "
          "same rounds")
    print(bench_lrn(lrn_shape, args.repeats))
    for line in bench_bn(bn_shape, args.repeats):
        print(line)
    print(bench_add_relu(bn_shape, args.repeats))
    print(bench_bias_act(bn_shape, args.repeats))
    for line in memory_lines(bn_shape):
        print(line)
    if not args.skip_models:
        reps = max(3, args.repeats // 3)
        print(bench_model("alexnet", 8, 127 if args.quick else 224, reps, lrn=True))
        print(bench_model("resnet18", 8, 64 if args.quick else 224, reps))
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share these cores; see the spreads)")


if __name__ == "__main__":
    main()
