"""The results of issue 7 (autoencoders and semi-supervised learning), measured by running the recipes.

    python benchmarks/results_issue7.py [--threads 1] [--only denoise superres lowdose anomaly meanteacher
                                        pretrain stacked] [--quick]

1. Denoising: a convolutional denoising autoencoder (Gondara 2016) vs median filters (3x3, 5x5) on 64x64 phantoms
   with Gaussian noise (sigma 0.1): PSNR and SSIM on 32 held-out phantoms (target: the DAE beats the better median
   filter in both).
2. Super-resolution 2x: RED-Net-10 on the bicubic up-sampling vs bicubic alone (target: RED-Net beats bicubic).
3. Low-dose CT: RED-Net-10 on the FBP of a 5%-dose acquisition vs that FBP (target: RED-Net improves on FBP).
4. Anomaly detection (Baur et al. 2019): an autoencoder trained on 200 healthy images; image- and pixel-level
   AUROC on 60 lesion + 20 healthy images (target: image-level AUROC >= 0.9); then a U-Net on 6 ground-truth masks
   + anomaly pseudo-labels vs on the 6 masks alone (Dice of the lesion class; target: pseudo-labels help).
5. Mean teacher (Perone et al. 2019): U-Net on phantoms with 10% of 100 images labeled, mean teacher vs the same
   network on the labeled images only, three seeds (target: mean teacher improves the mean Dice).
6. Autoencoder pretraining on 300 unlabeled lesion images, then fine-tuning on 3/5/10 labels per class, vs the
   same classifier from scratch (target: pretraining wins when labels are scarce).
7. Stacked autoencoder on digits: greedy layer-wise pretraining (+ end-to-end), fine-tuned on 5 labels per class,
   vs scratch (reported; the lecture's claim for the historical method).

Every figure is measured in this run, seeds fixed. ``--quick`` shrinks every experiment to a smoke test of the
script (its figures say nothing about the claims). One intra-op thread by default (a shared 2-core machine runs
two threads many times slower).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_results, results_parser  # noqa: E402

from trainsdk.training.recipes.anomaly import AnomalyExperiment, run_anomaly_experiment  # noqa: E402
from trainsdk.training.recipes.autoencode import (PretrainExperiment, RestorationExperiment,  # noqa: E402
                                                  StackedAEExperiment, run_pretraining_experiment,
                                                  run_restoration_experiment, run_stacked_ae_experiment)
from trainsdk.training.recipes.mean_teacher import MeanTeacherExperiment, run_mean_teacher_experiment  # noqa: E402

SEEDS = (0, 1, 2)
REDNET = {"model": "rednet10", "model_kwargs": {"width": 32}}


def _fmt(m: dict) -> str:
    return f"{m['psnr']:.2f} dB / {m['ssim']:.4f}"


def _restoration(task: str, quick: bool, **kw) -> list:
    if quick:
        kw.update(n_train=8, n_test=4, epochs=1, angles=30)
    r = run_restoration_experiment(RestorationExperiment(task=task, device="cpu", **kw))
    for name, m in r.rows.items():
        print(f"  {name:<14} PSNR {m['psnr']:6.2f} dB   SSIM {m['ssim']:.4f}", flush=True)
    base_name, base = r.best_baseline
    ours = r.rows[r.model]
    return [f"{task}: {r.model} vs {base_name}", "higher PSNR and SSIM", f"{_fmt(ours)} vs {_fmt(base)}",
            ours["psnr"] > base["psnr"] and ours["ssim"] > base["ssim"]]


def denoise(quick: bool) -> list:
    return _restoration("denoise", quick)


def superres(quick: bool) -> list:
    return _restoration("superres", quick, **REDNET)


def lowdose(quick: bool) -> list:
    return _restoration("lowdose", quick, n_train=64, n_test=16, **REDNET)


def anomaly(quick: bool) -> list:
    kw = dict(n_healthy=16, n_healthy_val=8, n_test_per_class=4, n_pool_per_class=6, n_masks=3, ae_epochs=1,
              seg_epochs=1) if quick else {}
    r = run_anomaly_experiment(AnomalyExperiment(device="cpu", **kw))
    for name, value in r.rows():
        print(f"  {name:<32} {value:.3f}", flush=True)
    return [["Anomaly AE: image-level AUROC", ">= 0.90", f"{r.image_auroc:.3f} (pixel-level {r.pixel_auroc:.3f})",
             r.image_auroc >= 0.9],
            [f"Pseudo-labels: {r.n_masks} masks + pseudo vs masks only", "higher lesion Dice",
             f"{r.dice_masks_plus_pseudo:.3f} vs {r.dice_masks_only:.3f}",
             r.dice_masks_plus_pseudo > r.dice_masks_only]]


def mean_teacher(quick: bool) -> list:
    arms: dict[str, list[float]] = {"supervised": [], "student": [], "teacher": []}
    for seed in SEEDS[:1] if quick else SEEDS:
        exp = MeanTeacherExperiment(seed=seed, device="cpu")
        if quick:
            exp = dataclasses.replace(exp, n_train=20, n_test=4, epochs=1)
        r = run_mean_teacher_experiment(exp)
        for arm, d in (("supervised", r.supervised), ("student", r.student), ("teacher", r.teacher)):
            arms[arm].append(d["dice"])
        print(f"  seed {seed}: {r.labeled} labeled / {r.unlabeled} unlabeled; Dice (organ, lesion) " + "; ".join(
            f"{name} {row[1]:.3f} ({row[2]:.3f}, {row[3]:.3f})" for name, row in zip(
                ("supervised", "MT student", "MT teacher"), r.rows())), flush=True)
    sup, stu, tea = (statistics.mean(arms[k]) for k in ("supervised", "student", "teacher"))
    per_seed = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(arms["student"], arms["supervised"]))
    return ["Mean teacher vs supervised, 10% labels", "higher mean Dice",
            f"student {stu:.3f} / teacher {tea:.3f} vs {sup:.3f} (per seed {per_seed})", stu > sup]


def pretrain(quick: bool) -> list:
    kw = dict(labels_per_class=(3,), n_unlabeled_per_class=6, n_test_per_class=4, ae_epochs=1,
              classifier_epochs=2) if quick else {}
    r = run_pretraining_experiment(PretrainExperiment(device="cpu", **kw))
    for per, acc in r.accuracy.items():
        print(f"  {per:>2} labels/class: " + ", ".join(f"{k} {v:.1%}" for k, v in acc.items()), flush=True)
    cells = ", ".join(f"{per}/class {a['AE-pretrained']:.1%} vs {a['from scratch']:.1%}"
                      for per, a in r.accuracy.items())
    return [f"AE pretraining ({r.n_unlabeled} unlabeled) vs scratch", "pretrained wins", cells,
            all(a["AE-pretrained"] > a["from scratch"] for a in r.accuracy.values())]


def stacked(quick: bool) -> list:
    kw = dict(greedy_epochs=1, finetune_ae_epochs=1, classifier_epochs=2) if quick else {}
    r = run_stacked_ae_experiment(StackedAEExperiment(**kw))
    for log in r.layerwise:
        print(f"  greedy {log.layer}: reconstruction MSE {log.initial_loss:.3f} -> {log.final_loss:.3f}", flush=True)
    a = r.accuracy
    return [f"Stacked AE on digits, {r.n_labeled} labels", "pretrained wins",
            f"greedy {a['greedy pretraining']:.1%}, greedy+e2e {a['greedy + end-to-end AE']:.1%} vs scratch "
            f"{a['from scratch']:.1%}", max(a["greedy pretraining"], a["greedy + end-to-end AE"]) > a["from scratch"]]


EXPERIMENTS = {"denoise": denoise, "superres": superres, "lowdose": lowdose, "anomaly": anomaly,
               "meanteacher": mean_teacher, "pretrain": pretrain, "stacked": stacked}


def main(argv=None) -> list[list]:
    parser = results_parser(__doc__, EXPERIMENTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only:
        t0 = time.perf_counter()
        print(f"[{name}] running ...", flush=True)
        out = EXPERIMENTS[name](args.quick)
        out = out if isinstance(out[0], list) else [out]
        rows += out
        print(f"[{name}] " + "; ".join(r[2] for r in out) + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_results(7, rows, args.threads, args.quick)
    return rows


if __name__ == "__main__":
    main()
