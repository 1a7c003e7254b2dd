"""What ``trainsdk.training.Trainer`` costs on top of a bare PyTorch training loop, measured side by side in one run.

    python benchmarks/bench_trainer_overhead.py [--threads 1] [--rounds 9] [--models lenet5 resnet18]

Claim under test (the issue "Recipes"): training throughput (images/s) of the Trainer is within 5% of a bare loop on
the same model, data, optimizer and batches. Both candidates start every round from the same initial weights, build
their DataLoader over the same tensors (batch size, shuffling), use AdamW with the same learning rate and compute
the same loss; the Trainer adds what it is for: its step-output checks, the loss read back for logging and the
NaN check, the epoch records, callbacks (no progress bar, no files: ``out_dir=None``), the seeded sampler and the
RNG capture per epoch, and building itself (a new Trainer every round, counted in its time).

Rounds alternate A, B, A, B (``benchmarks/_common.py``), so a noisy phase of a shared machine hits both alike; the
figure is the median over rounds. LeNet-5 steps take a few milliseconds, so a fixed per-step cost shows most
there; ResNet-18 at 64x64 is the realistic case. Nothing is hard-coded: every figure printed is measured here.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_table, time_side_by_side  # noqa: E402

CASES = {  # name -> (create_model kwargs, input shape per image, images, batch size, epochs per round)
    "lenet5": (dict(num_classes=10, in_channels=1), (1, 32, 32), 1024, 64, 2),
    "resnet18": (dict(num_classes=3, in_channels=1), (1, 64, 64), 256, 32, 1),
}
LR = 1e-3


def _loss_step(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def bare_loop(template, x, y, batch: int, epochs: int, seed: int) -> None:
    """The textbook loop: DataLoader with shuffling, zero_grad / forward / loss / backward / step."""
    model = copy.deepcopy(template).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = _loss_step(model, (xb, yb))
            loss.backward()
            opt.step()


def trainer_loop(template, x, y, batch: int, epochs: int, seed: int) -> None:
    from trainsdk.training import Trainer, TrainerConfig

    cfg = TrainerConfig(max_epochs=epochs, batch_size=batch, lr=LR, device="cpu", seed=seed, progress=False)
    trainer = Trainer(copy.deepcopy(template), cfg, train_data=(x, y), step_fn=_loss_step,
                      optimizer=lambda params: torch.optim.AdamW(params, lr=LR))
    trainer.fit()


def measure(name: str, rounds: int) -> dict:
    from trainsdk.models import create_model

    kwargs, shape, n, batch, epochs = CASES[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=gen)  # (n, C, H, W); throughput does not depend on the values
    y = torch.randint(0, kwargs["num_classes"], (n,), generator=gen)
    torch.manual_seed(0)
    template = create_model(name, **kwargs)
    timings = time_side_by_side({
        "bare": lambda: bare_loop(template, x, y, batch, epochs, 0),
        "trainer": lambda: trainer_loop(template, x, y, batch, epochs, 0),
    }, repeat=rounds, warmup=1)
    images = n * epochs
    rate = {k: images / (t.p50_ms / 1e3) for k, t in timings.items()}
    best = {k: images / (t.min_ms / 1e3) for k, t in timings.items()}
    return {"name": name, "batch": batch, "images": images, "bare": rate["bare"], "trainer": rate["trainer"],
            "overhead": 100.0 * (rate["bare"] / rate["trainer"] - 1.0),
            "overhead_best": 100.0 * (best["bare"] / best["trainer"] - 1.0)}


def report(rows: list[dict], threads: int, rounds: int) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nTrainer vs bare PyTorch loop, CPU, {threads} intra-op thread(s), {rounds} interleaved rounds, "
          f"median images/s ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load:.1f})")
    table = [(r["name"], r["batch"], r["images"], f"{r['bare']:.0f}", f"{r['trainer']:.0f}",
              f"{r['overhead']:+.1f}%", f"{r['overhead_best']:+.1f}%") for r in rows]
    print(format_table(["model", "batch", "images/round", "bare img/s", "Trainer img/s", "overhead (median)",
                        "overhead (best round)"], table))
    print("overhead = bare throughput / Trainer throughput - 1 (target <= 5%); negative: within noise")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        print(f"measuring {name} ...", flush=True)
        rows.append(measure(name, args.rounds))
    report(rows, args.threads, args.rounds)
    return rows


if __name__ == "__main__":
    main()
