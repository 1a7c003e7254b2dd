"""Fused batched affine warp vs F.affine_grid + F.grid_sample on the CPU, measured side by side in one run.

    python benchmarks/bench_affine_warp.py [--repeats 15] [--threads N] [--quick]

Two augmentation shapes: a 2-D batch (32, 1, 256, 256) and a 3-D batch (4, 1, 64, 96, 96), each with an int64 label
mask. Cases, per shape:
  forward       image bilinear + mask nearest, as augmentation does it: eager = affine_grid, grid_sample of the image,
                the mask converted to float, grid_sample'd by nearest and converted back; fused = one
                ``trainsdk.ops.affine_warp(image, theta, mask)`` call.
  fwd+bwd       the image alone, forward + backward w.r.t. the image (theta without gradient).
  copy          a copy of the image between two preallocated tensors, for scale (a lower bound on any pass over it).
Every case runs in interleaved rounds (``benchmarks._common.time_side_by_side``: each round runs every variant
once) so load from other processes hits all alike; the table gives medians, p90 and the ratio of medians.
Nothing is hard-coded: every figure printed comes from this run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import print_table, time_side_by_side  # noqa: E402
from trainsdk import ops  # noqa: E402


def augmentation_theta(n: int, dims: int, seed: int = 0) -> torch.Tensor:
    """Per-sample rotation (+-15 deg about each axis), scale 0.9-1.1, translation +-10 %, random flips, one matrix."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(n, dims, dims + 1)
    for i in range(n):
        lin = torch.eye(dims)
        for a, b in ([(0, 1)] if dims == 2 else [(0, 1), (0, 2), (1, 2)]):
            angle = math.radians(30 * (torch.rand((), generator=g).item() - 0.5))
            rot = torch.eye(dims)
            rot[a, a] = rot[b, b] = math.cos(angle)
            rot[a, b], rot[b, a] = -math.sin(angle), math.sin(angle)
            lin = rot @ lin
        scale = 0.9 + 0.2 * torch.rand(dims, generator=g)
        flip = torch.where(torch.rand(dims, generator=g) < 0.5, -1.0, 1.0)
        theta[i, :, :dims] = lin @ torch.diag(scale * flip)
        theta[i, :, dims] = 0.2 * (torch.rand(dims, generator=g) - 0.5)
    return theta


def eager_forward(image, theta, mask):
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = F.grid_sample(mask.to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, warped.to(mask.dtype)


def fused_forward(image, theta, mask):
    return ops.affine_warp(image, theta, mask)


def eager_image(image, theta):
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def fused_image(image, theta):
    return ops.affine_warp(image, theta)


def fwd_bwd(fn, image, theta, grad):
    def step() -> None:
        image.grad = None
        fn(image, theta).backward(grad)

    return step


def bench_shape(shape: tuple[int, ...], repeats: int) -> tuple[list[list[str]], str]:
    """Table rows of one shape, and a line saying how far the fused result is from the eager one."""
    g = torch.Generator().manual_seed(1)
    image = torch.randn(*shape, generator=g)
    mask = torch.randint(0, 5, shape, generator=g)
    theta = augmentation_theta(shape[0], len(shape) - 2)
    leaf, grad = image.clone().requires_grad_(True), torch.randn(*shape, generator=g)
    src, dst = image.clone(), torch.empty_like(image)
    # Same computation, checked before timing it.
    (a, am), (b, bm) = eager_forward(image, theta, mask), fused_forward(image, theta, mask)
    diff, mask_diff = (a - b).abs().max().item(), (am != bm).float().mean().item()
    fwd = time_side_by_side({"eager": lambda: eager_forward(image, theta, mask),
                             "fused": lambda: fused_forward(image, theta, mask),
                             "copy": lambda: dst.copy_(src)}, repeat=repeats, warmup=2)
    both = time_side_by_side({"eager": fwd_bwd(eager_image, leaf, theta, grad),
                              "fused": fwd_bwd(fused_image, leaf, theta, grad),
                              "copy": lambda: dst.copy_(src)}, repeat=repeats, warmup=2)
    label = "x".join(map(str, shape))
    rows = []
    for case, t in (("forward image+mask", fwd), ("fwd+bwd image", both)):
        rows.append([label, case, f"{t['eager'].p50_ms:.2f}", f"{t['eager'].p90_ms:.2f}", f"{t['fused'].p50_ms:.2f}",
                     f"{t['fused'].p90_ms:.2f}", f"{t['eager'].p50_ms / t['fused'].p50_ms:.2f}x",
                     f"{t['copy'].p50_ms:.2f}"])
    return rows, f"{label}: max |fused - eager| over the image {diff:.1e}, mask voxels differing {100 * mask_diff:.3f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="small shapes (smoke test of the script)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    status = ops.load()
    shapes = [(32, 1, 256, 256), (4, 1, 64, 96, 96)]
    if args.quick:
        shapes = [(4, 1, 64, 64), (2, 1, 16, 24, 24)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {status}")
    print("ms: median (p50) and p90 of interleaved rounds; ratio: eager p50 / fused p50; copy: a preallocated copy "
          "of the image in the same rounds")
    rows, notes = [], []
    for shape in shapes:
        shape_rows, note = bench_shape(shape, args.repeats)
        rows += shape_rows
        notes.append(note)
    print_table(["shape", "case", "eager p50", "p90", "fused p50", "p90", "ratio", "copy p50"], rows, left=2)
    for note in notes:
        print(note)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes share these cores: the figures are "
          f"noisy, compare p50 with p90)")


if __name__ == "__main__":
    main()
