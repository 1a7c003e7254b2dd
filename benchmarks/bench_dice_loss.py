"""Soft Dice loss, forward + backward on the CPU: fused op vs the SDK's composite vs MONAI's DiceLoss, side by side.

    python benchmarks/bench_dice_loss.py [--repeats 15] [--threads N] [--classes 4] [--quick]

Softmax over the classes and integer label targets (N, 1, *spatial) one-hot encoded by the loss, at a 2-D and a 3-D
segmentation shape: ``trainsdk.ops.soft_dice_loss`` (compiled ``medcnn::soft_dice_stats``: one pass over the
logits, no probabilities or one-hot written), ``trainsdk.ops.reference.soft_dice_loss`` (the same maths as a PyTorch
composite) and ``monai.losses.DiceLoss(softmax=True, to_onehot_y=True)`` when MONAI is installed. All three are
timed in interleaved rounds (``benchmarks/_common.py``), next to a copy of the logits into a preallocated tensor
(one read + one write of them) for scale: each time is also given in copies. "saved MiB": what autograd keeps
between forward and backward (``trainsdk.ops.saved_tensor_bytes``). The losses are checked against each other in
the same run. Nothing is hard-coded: every figure printed comes from this run.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table, time_side_by_side  # noqa: E402
from trainsdk import ops  # noqa: E402
from trainsdk.ops import reference  # noqa: E402


def monai_loss() -> Callable | None:
    """MONAI's DiceLoss(softmax=True, to_onehot_y=True), or None when MONAI is not installed."""
    try:
        from monai.losses import DiceLoss
    except ImportError:
        return None
    return DiceLoss(softmax=True, to_onehot_y=True)


def step(loss_fn: Callable, z: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One forward + backward. The logits enter through a view (a non-leaf, as a network's output would), and their
    gradient is reset, so every call does the same work."""

    def run() -> None:
        z.grad = None
        loss_fn(z.view_as(z), target).backward()

    return run


def bench_shape(shape: tuple[int, ...], losses: dict[str, Callable], repeats: int, seed: int) -> list[object]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=gen).requires_grad_()
    target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)  # (N, 1, *spatial) labels
    values = {name: fn(z, target).item() for name, fn in losses.items()}
    src, dst = z.detach().clone(), torch.empty(shape)
    cases = {name: step(fn, z, target) for name, fn in losses.items()}
    times = time_side_by_side({**cases, "copy": lambda: dst.copy_(src)}, repeat=repeats)
    copy = times["copy"].p50_ms
    fused = times["fused"].p50_ms
    row: list[object] = ["x".join(map(str, shape)), f"{copy:.2f}"]
    for name in losses:
        t = times[name].p50_ms
        saved = ops.saved_tensor_bytes(lambda x, fn=losses[name]: fn(x.view_as(x), target), z) / 2**20
        row += [f"{t:.2f} ({t / copy:.1f} cp, {saved:.1f} MiB)"]
    for name in losses:
        if name != "fused":
            row.append(f"{times[name].p50_ms / fused:.2f}x")
    spread = max(abs(v - values["fused"]) for v in values.values())
    row.append(f"{spread:.1e}")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="smaller shapes (smoke test of the script)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    status = ops.load()
    c = args.classes
    shapes = [(4, c, 128, 128), (1, c, 32, 48, 48)] if args.quick else [(16, c, 256, 256), (2, c, 64, 96, 96)]
    losses: dict[str, Callable] = {"fused": ops.soft_dice_loss, "composite": reference.soft_dice_loss}
    peer = monai_loss()
    if peer is not None:
        losses["monai"] = peer
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {status}")
    if peer is None:
        print("MONAI is not installed (pip install monai): its column is left out")
    print("forward + backward, softmax, integer labels; median ms of interleaved rounds (in copies of the logits, "
          "saved-for-backward MiB); ratios: that variant's time / fused")
    headers = ["shape", "copy ms"] + [f"{name} ms" for name in losses]
    headers += [f"{name}/fused" for name in losses if name != "fused"] + ["max |loss diff|"]
    rows = [bench_shape(shape, losses, args.repeats, seed) for seed, shape in enumerate(shapes)]
    print_table(headers, rows)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share these cores)")


if __name__ == "__main__":
    main()
