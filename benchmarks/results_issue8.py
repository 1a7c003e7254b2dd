"""The results of issue 8 (GANs), measured by running the recipes with fixed seeds (nothing here is a recorded figure).

    python benchmarks/results_issue8.py [--threads 1] [--only augment context wgan] [--out runs/issue8] [--ablation]
                                        [--quick]

1. GAN-based augmentation (Frid-Adar et al. 2018): 30 synthetic lesions per type (32x32) train an AC-GAN; the
   same LeNet-5 is trained with classic augmentation on the real images alone and on real + AC-GAN lesions (equal
   optimizer steps), five classifier seeds; sensitivity and specificity (macro and per class) on 300 test lesions.
   Target: classic + AC-GAN beats classic alone in both.
2. Context-aware GAN (Nie et al. 2017), MR -> CT on paired synthetic slices (64x64, 96 train / 32 test): the
   auto-context cascade trained with adversarial + L1 + gradient-difference losses against the same (single-stage)
   generator trained with L2 alone (``--ablation`` adds the cascade with L2 alone and the single-stage GAN, about
   2 minutes more). Target: lower MAE and higher PSNR.
3. WGAN-GP + perceptual loss (Yang et al. 2018) for low-dose CT (phantoms at 10% dose, 64x64, 96 train / 32
   test): against the low-dose filtered back-projection and the same generator trained with MSE alone. Target:
   higher PSNR/SSIM than FBP, and a high-frequency energy ratio (output / truth; 1 = the truth's texture) above
   the MSE network's, i.e. less over-smoothing.

Sample grids (PNG) and checkpoints go to ``--out``. ``--quick`` shrinks everything to a smoke test of the script
(its figures say nothing about the claims). One intra-op thread by default: on a shared 2-core machine two threads
are often slower, not faster.
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_results, results_parser  # noqa: E402

from trainsdk.gan.recipes import ContextGANRecipe, GANAugmentRecipe, WGANCTRecipe, train_context_gan, \
    train_gan_augmentation, train_wgan_ct  # noqa: E402

QUICK_AUG = dict(n_per_class=4, n_test_per_class=4, synthetic_per_class=4, gan_epochs=1, gan_batch_size=4,
                 gan_width=8, latent_dim=8, classifier_epochs=1, seeds=(0,))
QUICK_CTX = dict(n_train=4, n_test=2, size=32, width=4, epochs=1, batch_size=2, disc_width=4)
QUICK_WCT = dict(n_train=4, n_test=2, size=32, angles=16, width=4, depth=3, epochs=1, batch_size=2, critic_width=4,
                 critic_depth=2, perceptual_epochs=1, perceptual_kwargs={"widths": (4, 8)})


def _print(result, names) -> None:
    print(result.table(names), flush=True)
    for name, path in result.files.items():
        print(f"  {name}: {path}")


def augmentation(out: str, quick: bool, ablation: bool) -> list:
    r = train_gan_augmentation(GANAugmentRecipe(device="cpu", out_dir=os.path.join(out, "gan-augment"),
                                                **(QUICK_AUG if quick else {"seeds": (0, 1, 2, 3, 4)})))
    _print(r, ["accuracy", "sensitivity", "specificity", "auroc"] +
           [f"{m}/{c}" for m in ("sensitivity", "specificity") for c in ("cyst", "metastasis", "hemangioma")])
    d = r.details
    print(f"  AC-GAN: {d['num_synthetic']} synthetic lesions ({d['filter_acceptance']:.0%} of draws classified as "
          f"intended by its own class head; the real-only classifier agrees on {d['synthetic_agreement']:.0%}); "
          f"diversity vs real: " + ", ".join(f"{k} {v['score']:.2f}" for k, v in d["diversity"].items()))
    per_seed = "; ".join(f"{arm}: " + ", ".join(f"{m['sensitivity']:.3f}/{m['specificity']:.3f}" for m in runs)
                         for arm, runs in d["per_seed"].items())
    print(f"  sensitivity/specificity per seed: {per_seed}")
    base, gan = r.metrics["classic"], r.metrics["classic+acgan"]
    met = gan["sensitivity"] > base["sensitivity"] and gan["specificity"] > base["specificity"]
    return ["GAN augmentation (sens/spec, macro)", "classic+AC-GAN > classic",
            f"{gan['sensitivity']:.3f}/{gan['specificity']:.3f} vs {base['sensitivity']:.3f}/"
            f"{base['specificity']:.3f} ({r.seconds:.0f} s)", met]


def context(out: str, quick: bool, ablation: bool) -> list:
    r = train_context_gan(ContextGANRecipe(device="cpu", out_dir=os.path.join(out, "context-gan"), ablation=ablation,
                                           **(QUICK_CTX if quick else {})))
    _print(r, ["mae_hu", "psnr", "ssim", "hf_ratio"])
    tissues = r.details["test_tissue_mae_hu"]
    for arm, per in tissues.items():
        print(f"  MAE (HU) per tissue, {arm}: " + ", ".join(f"{k} {v:.0f}" for k, v in per.items()))
    base, gan = r.metrics["l2"], r.metrics["gan+gdl+cascade"]
    met = gan["mae_hu"] < base["mae_hu"] and gan["psnr"] > base["psnr"]
    return ["Context-aware GAN MR->CT (MAE HU / PSNR)", "lower MAE, higher PSNR than L2",
            f"{gan['mae_hu']:.1f}/{gan['psnr']:.2f} dB vs {base['mae_hu']:.1f}/{base['psnr']:.2f} dB "
            f"({r.seconds:.0f} s)", met]


def wgan_ct(out: str, quick: bool, ablation: bool) -> list:
    r = train_wgan_ct(WGANCTRecipe(device="cpu", out_dir=os.path.join(out, "wgan-ct"), **(QUICK_WCT if quick else {})))
    _print(r, ["psnr", "ssim", "mae", "hf_ratio", "hf_ratio_fft"])
    fbp, mse, gan = (r.metrics[k] for k in ("fbp", "mse", "wgan+perceptual"))
    met = gan["psnr"] > fbp["psnr"] and gan["ssim"] > fbp["ssim"] and gan["hf_ratio"] > mse["hf_ratio"]
    return ["WGAN-GP + perceptual, low-dose CT", "PSNR/SSIM > FBP; HF ratio > MSE's",
            f"PSNR {gan['psnr']:.2f} vs FBP {fbp['psnr']:.2f} (MSE {mse['psnr']:.2f}); SSIM {gan['ssim']:.3f} vs "
            f"{fbp['ssim']:.3f}; HF ratio {gan['hf_ratio']:.2f} vs MSE {mse['hf_ratio']:.2f} ({r.seconds:.0f} s)",
            met]


EXPERIMENTS = {"augment": augmentation, "context": context, "wgan": wgan_ct}


def main(argv=None) -> list[list]:
    parser = results_parser(__doc__, EXPERIMENTS)
    parser.add_argument("--out", default=os.path.join("runs", "issue8"), help="sample grids and checkpoints")
    parser.add_argument("--ablation", action="store_true", help="context GAN: also the cascade with L2 alone and "
                        "the single-stage GAN")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only:
        t0 = time.perf_counter()
        print(f"[{name}] running ...", flush=True)
        rows.append(EXPERIMENTS[name](args.out, args.quick, args.ablation))
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s\n", flush=True)
    print_results(8, rows, args.threads, args.quick)
    return rows


if __name__ == "__main__":
    main()
