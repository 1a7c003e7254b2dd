"""The results of the issue "Recipes", measured by running the recipes (nothing here is a recorded figure).

    python benchmarks/results_issue5.py [--threads 1] [--only lenet resnet unet transfer augment] [--quick]

1. LeNet-5 on digits: test accuracy and wall time (target >= 98% in under 2 minutes on 2 CPU cores).
2. ResNet-18 on synthetic lesions (cyst / metastasis / hemangioma, 64x64): test accuracy (target >= 95%).
3. U-Net on phantoms (organ + lesion, 64x64): mean foreground Dice on the test split (target >= 0.90).
4. Transfer: ResNet-18 pretrained on lesion detection (lesion vs healthy, 1,200 images), then fine-tuned on 50
   images of lesion typing; against the same network trained from scratch on the same 50 images with the same
   budget (epochs, schedule, learning rate), over three seeds (target: fine-tuning wins).
5. Augmentation: LeNet-5 on 100 digits, classic augmentation (small rotations, shifts, zooms) against none, same
   budget, three seeds (target: augmentation wins).

``--quick`` shrinks every experiment to a smoke test of the script (its figures say nothing about the claims).
One intra-op thread by default: on a shared 2-core machine two threads are many times slower, not faster.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_results, results_parser  # noqa: E402

from trainsdk.data import ArrayDataset, make_lesion_classification  # noqa: E402
from trainsdk.training.recipes import ClassifyRecipe, SegmentRecipe, train_classifier, train_segmenter  # noqa: E402

LESION_AUGMENT = {"rotation_deg": 180.0, "flip_axes": (0, 1), "translation": 0.05, "scale": 0.1}  # no orientation
SEEDS = (0, 1, 2)


def _run(cfg):
    return (train_classifier if isinstance(cfg, ClassifyRecipe) else train_segmenter)(cfg)


def lenet_digits(quick: bool) -> list:
    r = _run(ClassifyRecipe(model="lenet5_modern", data="digits", epochs=3 if quick else 30, batch_size=64, lr=2e-3,
                            augment={"translation": 0.06}, device="cpu", progress=False))
    return ["LeNet-5 on digits", ">= 98%, < 120 s", f"{r.test_metrics['accuracy']:.2%} in {r.seconds:.0f} s",
            r.test_metrics["accuracy"] >= 0.98 and r.seconds < 120]


def resnet_lesions(quick: bool) -> list:
    r = _run(ClassifyRecipe(model="resnet18", data="lesions",
                            data_kwargs={"n_per_class": 30 if quick else 400, "size": 64},
                            epochs=1 if quick else 15, lr=2e-3, augment=LESION_AUGMENT, device="cpu", progress=False))
    m = r.test_metrics
    return ["ResNet-18 on lesions", ">= 95%", f"{m['accuracy']:.2%} (AUROC {m['auroc']:.3f}, {r.num_train} train / "
            f"{r.num_test} test, {r.seconds:.0f} s)", m["accuracy"] >= 0.95]


def unet_phantoms(quick: bool) -> list:
    r = _run(SegmentRecipe(model="unet", model_kwargs={"base_width": 16, "depth": 3}, data="phantoms",
                           data_kwargs={"n": 20 if quick else 300, "size": 64}, epochs=1 if quick else 25, lr=3e-3,
                           device="cpu", progress=False))
    m = r.test_metrics
    return ["U-Net on phantoms", "Dice >= 0.90", f"{m['dice']:.3f} (organ {m['dice/1']:.3f}, lesion {m['dice/2']:.3f},"
            f" {r.num_train} train / {r.num_test} test, {r.seconds:.0f} s)", m["dice"] >= 0.90]


def _pretrain_detection(out_dir: str, quick: bool) -> str:
    """Source task: lesion present or not (a lesion of any type vs a healthy organ), many images."""
    src = make_lesion_classification(n_per_class=20 if quick else 300, size=48, seed=11, include_healthy=True)
    data = ArrayDataset(src.images, (src.labels != 3).astype(np.int64))  # 1 = any lesion, 0 = healthy
    r = _run(ClassifyRecipe(model="resnet18", model_kwargs={"base_width": 16}, data=data, test_fraction=0.1,
                            epochs=1 if quick else 8, lr=2e-3, augment=LESION_AUGMENT, out_dir=out_dir,
                            device="cpu", progress=False))
    print(f"  source task (lesion vs healthy): {r.summary()}", flush=True)
    return r.checkpoint


def transfer(quick: bool) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        weights = _pretrain_detection(tmp, quick)
        scores: dict[str, list[float]] = {"finetune": [], "scratch": []}
        for seed in SEEDS[:1] if quick else SEEDS:
            common = dict(model="resnet18", model_kwargs={"base_width": 16}, data="lesions",
                          data_kwargs={"n_per_class": 40 if quick else 150, "size": 48, "seed": 5},
                          test_fraction=0.5, train_samples=50 if not quick else 21, epochs=2 if quick else 15,
                          batch_size=16, lr=1e-3, seed=seed, device="cpu", progress=False)
            scores["finetune"].append(_run(ClassifyRecipe(weights=weights, transfer="finetune", **common))
                                      .test_metrics["accuracy"])
            scores["scratch"].append(_run(ClassifyRecipe(**common)).test_metrics["accuracy"])
    ft, sc = (statistics.mean(scores[k]) for k in ("finetune", "scratch"))
    per_seed = ", ".join(f"{a:.1%}/{b:.1%}" for a, b in zip(scores["finetune"], scores["scratch"]))
    return ["Transfer: fine-tune vs scratch, 50 images", "fine-tune > scratch",
            f"{ft:.1%} vs {sc:.1%} (per seed {per_seed})", all(a > b for a, b in zip(*scores.values()))]


def augmentation(quick: bool) -> list:
    scores: dict[str, list[float]] = {"classic": [], "none": []}
    for seed in SEEDS[:1] if quick else SEEDS:
        for aug in scores:
            r = _run(ClassifyRecipe(model="lenet5_modern", data="digits", train_samples=100, epochs=3 if quick else 40,
                                    batch_size=32, lr=2e-3, augment=aug, seed=seed, device="cpu", progress=False))
            scores[aug].append(r.test_metrics["accuracy"])
    a, n = statistics.mean(scores["classic"]), statistics.mean(scores["none"])
    per_seed = ", ".join(f"{x:.1%}/{y:.1%}" for x, y in zip(scores["classic"], scores["none"]))
    return ["Augmentation: classic vs none, 100 digits", "classic > none",
            f"{a:.1%} vs {n:.1%} (per seed {per_seed})", all(x > y for x, y in zip(*scores.values()))]


EXPERIMENTS = {"lenet": lenet_digits, "resnet": resnet_lesions, "unet": unet_phantoms, "transfer": transfer,
               "augment": augmentation}


def main(argv=None) -> list[list]:
    parser = results_parser(__doc__, EXPERIMENTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only:
        t0 = time.perf_counter()
        print(f"[{name}] running ...", flush=True)
        rows.append(EXPERIMENTS[name](args.quick))
        print(f"[{name}] {rows[-1][2]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_results(5, rows, args.threads, args.quick)
    return rows


if __name__ == "__main__":
    main()
