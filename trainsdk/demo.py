"""The main job on built-in data: train LeNet-5 on scikit-learn's digits, export it to ONNX, run it through
deploysdk's runtime on ONNX Runtime, and print accuracy and latency of PyTorch and the runtime side by side.

    python -m trainsdk.demo [--out runs/demo] [--epochs 30]
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from deploysdk import Runtime, export_onnx
from deploysdk.pipeline.preprocess import Preprocessing

from .augment import random_translate
from .data import load_digits
from .models import create_model
from .training import fit_classifier, save_model_checkpoint


@dataclass
class Row:
    backend: str
    where: str
    accuracy: float
    p50_ms: float
    p99_ms: float
    throughput: float


def _latency(fn, x, iterations: int) -> tuple[float, float]:
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.asarray(times) * 1e3, [50, 99])
    return float(p50), float(p99)


def _throughput(fn, x, repeats: int = 5) -> float:
    fn(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - t0)


def _measure(name: str, where: str, fn, x_test: np.ndarray, y_test: np.ndarray, iterations: int) -> Row:
    logits = np.concatenate([fn(x_test[i:i + 256]) for i in range(0, len(x_test), 256)])
    acc = float((logits.argmax(1) == y_test).mean())
    p50, p99 = _latency(fn, x_test[:1], iterations)
    return Row(name, where, acc, p50, p99, _throughput(fn, x_test[:256]))


def train(args) -> tuple[torch.nn.Module, object]:
    data = load_digits(size=32, seed=0)
    torch.manual_seed(args.seed)
    model = create_model("lenet5_modern", num_classes=10, in_channels=1)
    print(f"[1/4] training LeNet-5 on digits: {len(data.x_train)} train / {len(data.x_test)} test images, "
          f"{args.epochs} epochs")
    t0 = time.perf_counter()
    history = fit_classifier(model, data.x_train, data.y_train, epochs=args.epochs, batch_size=64, lr=2e-3,
                             weight_decay=1e-4, seed=args.seed, augment=lambda x, g: random_translate(x, 2, g))
    print(f"      done in {time.perf_counter() - t0:.1f} s, final loss {history[-1].loss:.4f}")
    return model, data


def run(args) -> list[Row]:
    torch.set_num_threads(args.threads)
    model, data = train(args)
    os.makedirs(args.out, exist_ok=True)
    ckpt, onnx_path = os.path.join(args.out, "lenet5.pt"), os.path.join(args.out, "lenet5.onnx")
    save_model_checkpoint(model, ckpt, preprocessing={"mean": data.mean, "std": data.std})
    print(f"[2/4] exporting to {onnx_path}")
    # digits pixels are 0..16: x/16 then z-scored with the training mean/std, i.e. (x - 16 mean) / (16 std)
    prep = Preprocessing(intensity="scale", scale=(16 * float(data.mean), 16 * float(data.std)), output="logits",
                         labels={i: str(i) for i in range(10)})
    meta = {"preprocessing": prep.to_dict(), "input_resize": [32, 32], "class_labels": [str(i) for i in range(10)]}
    report = export_onnx(model, onnx_path, samples=[data.x_test[:8]], metadata=meta)
    print(f"      {report.summary()}")
    x_test, y_test = data.x_test.numpy(), data.y_test.numpy()
    rows = []
    print("[3/4] PyTorch eager")
    model.eval()
    with torch.no_grad():
        rows.append(_measure("pytorch", "eager cpu", lambda a: model(torch.from_numpy(a)).numpy(), x_test, y_test,
                             args.iterations))
    print("[4/4] deploysdk Runtime")
    with Runtime(onnx_path, backend="onnxruntime", device="cpu", threads=args.threads) as rt:
        rows.append(_measure(rt.backend, ",".join(rt.providers), rt, x_test, y_test, args.iterations))
    _print(rows, args.threads)
    return rows


def _print(rows: list[Row], threads: int) -> None:
    print(f"\nLeNet-5 on digits, test set; latency at batch 1, throughput at batch 256, {threads} thread(s)")
    print(f"{'backend':<12} {'runs on':<22} {'accuracy':>9} {'p50 ms':>8} {'p99 ms':>8} {'images/s':>10}")
    for r in rows:
        print(f"{r.backend:<12} {r.where:<22} {r.accuracy:>8.2%} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
              f"{r.throughput:>10.0f}")
    base = rows[0]
    for r in rows[1:]:
        print(f"{r.backend} vs pytorch: {base.p50_ms / r.p50_ms:.2f}x lower p50 latency, "
              f"{r.throughput / base.throughput:.2f}x throughput, accuracy {r.accuracy - base.accuracy:+.2%}")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="trainsdk demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="folder for the checkpoint and ONNX file")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch and ONNX Runtime")
    parser.add_argument("--iterations", type=int, default=200, help="timed runs for the latency figures")
    return parser


def main(argv=None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
