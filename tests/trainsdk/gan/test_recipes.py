"""GAN recipes at tiny sizes: each runs end to end and returns finite metrics per arm, resumes a finished run
without retraining, the high-frequency measure is right on constructed images, the denoiser exports to ONNX and
runs in deploysdk.Runtime, and bad settings are refused with the field named."""
import math
import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from trainsdk.gan.quality import high_frequency_energy, high_frequency_ratio, image_quality
from trainsdk.gan.recipes import ContextGANRecipe, GANAugmentRecipe, WGANCTRecipe, export_denoiser, gan_recipe, \
    run_gan_task, sample_acgan, train_context_gan, train_gan_augmentation, train_wgan_ct
from trainsdk.models import create_model


def _finite(metrics):
    return all(math.isfinite(v) for m in metrics.values() for v in m.values())


# --- high-frequency energy -----------------------------------------------------------------------------------------
def _checkerboard(n=16):
    return np.where((np.add.outer(np.arange(n), np.arange(n)) % 2) == 0, 1.0, -1.0)


def test_laplacian_energy_of_a_checkerboard_is_64():
    # 5-point Laplacian of a +-1 checkerboard: four neighbours of the opposite sign minus 4x the pixel = -8 x value
    assert high_frequency_energy(_checkerboard(), method="laplacian") == pytest.approx(64.0)
    assert high_frequency_energy(np.full((8, 8), 3.0)) == 0.0
    ramp = np.add.outer(np.arange(8.0), 2 * np.arange(8.0))  # linear: zero Laplacian
    assert high_frequency_energy(ramp) == pytest.approx(0.0, abs=1e-20)


def test_fft_top_band_holds_a_nyquist_pattern_and_not_a_slow_wave():
    n = 32
    cols = np.arange(n)
    nyquist = np.tile(np.cos(np.pi * cols), (n, 1))  # (-1)^x: all energy at 0.5 cycles/pixel
    slow = np.tile(np.cos(2 * np.pi * 2 * cols / n), (n, 1))  # 2 cycles per image: 0.0625 cycles/pixel
    assert high_frequency_energy(nyquist, method="fft") == pytest.approx(1.0)  # Parseval: mean of squares
    assert high_frequency_energy(slow, method="fft") == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_energy(slow, method="fft", cutoff=0.05) == pytest.approx(0.5)  # mean of cos^2


@pytest.mark.parametrize("method", ["laplacian", "fft"])
def test_blurred_image_has_less_high_frequency_energy(method):
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((4, 1, 32, 32)), (0, 0, 0.7, 0.7)) + (rng.random((4, 1, 32, 32)) > 0.9)
    blurred = ndimage.gaussian_filter(image, (0, 0, 1.5, 1.5))
    assert high_frequency_energy(blurred, method=method) < 0.5 * high_frequency_energy(image, method=method)
    assert high_frequency_ratio(blurred, image, method=method) < 0.5
    assert high_frequency_ratio(torch.from_numpy(image), image, method=method) == pytest.approx(1.0)


def test_image_quality_of_identical_and_of_noisy_images():
    rng = np.random.default_rng(1)
    clean = ndimage.gaussian_filter(rng.random((3, 1, 24, 24)), (0, 0, 2, 2))
    q = image_quality(clean, clean, data_range=1.0)
    assert q["mae"] == 0.0 and q["ssim"] == pytest.approx(1.0) and q["psnr"] == math.inf
    assert q["hf_ratio"] == pytest.approx(1.0) and q["hf_ratio_fft"] == pytest.approx(1.0)
    noisy = clean + 0.01 * rng.standard_normal(clean.shape)
    qn = image_quality(noisy, clean, data_range=1.0)
    assert qn["psnr"] == pytest.approx(40.0, abs=0.3)  # 10 log10(1 / 0.01^2)
    assert qn["hf_ratio"] > 1.0  # noise adds high-frequency energy


@pytest.mark.parametrize("call, match", [
    (lambda: high_frequency_energy(np.ones((8, 8)), method="wavelet"), "method must be one of"),
    (lambda: high_frequency_energy(np.ones((8, 8)), method="fft", cutoff=0.7), r"cutoff must be .*\(0, 0.5\]"),
    (lambda: high_frequency_energy(np.ones(8)), r"\(\.\.\., H, W\)"),
    (lambda: high_frequency_energy(np.full((4, 4), np.nan)), "NaN"),
    (lambda: high_frequency_ratio(np.ones((4, 4)), np.ones((4, 4))), "no high-frequency energy"),
    (lambda: high_frequency_ratio(np.ones((4, 4)), np.ones((5, 5))), "one shape"),
])
def test_high_frequency_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- recipes end to end -------------------------------------------------------------------------------------------
TINY_AUG = dict(n_per_class=4, n_test_per_class=3, size=32, synthetic_per_class=4, gan_epochs=1, gan_batch_size=4,
                gan_width=4, latent_dim=8, classifier_epochs=1, device="cpu")
TINY_CTX = dict(n_train=4, n_test=2, size=32, width=4, epochs=1, batch_size=2, disc_width=4, device="cpu")
TINY_WCT = dict(n_train=4, n_test=2, size=32, angles=16, width=4, depth=3, epochs=1, batch_size=2, critic_width=4,
                critic_depth=2, perceptual_epochs=1, perceptual_kwargs={"widths": (4, 8)}, device="cpu")


def test_gan_augmentation_recipe_end_to_end(tmp_path):
    r = train_gan_augmentation(GANAugmentRecipe(out_dir=str(tmp_path), **TINY_AUG))
    assert list(r.metrics) == ["classic", "classic+acgan"] and _finite(r.metrics)
    for arm in r.metrics.values():
        assert {"accuracy", "sensitivity", "specificity", "sensitivity/cyst", "specificity/hemangioma"} <= set(arm)
        assert all(0.0 <= v <= 1.0 for v in arm.values())
    assert r.details["num_real"] == 12 and r.details["num_synthetic"] == 12 and r.details["num_test"] == 9
    assert r.details["epochs"] == {"classic": 1, "classic+acgan": 1}
    assert os.path.isfile(r.files["grid_synthetic"]) and os.path.isfile(tmp_path / "acgan" / "last.pt")
    assert "classic+acgan" in r.table().splitlines()[0]


def test_sample_acgan_keeps_the_class_heads_choices_first():
    torch.manual_seed(0)
    G = create_model("acgan_generator", image_size=16, width=4, latent_dim=8, num_labels=3)
    D = create_model("acgan_discriminator", image_size=16, width=4, num_classes=3)
    images, labels, acceptance = sample_acgan(G, D, 5, seed=0, oversample=4)
    assert images.shape == (15, 1, 16, 16) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and 0.0 <= acceptance <= 1.0
    D.eval()
    with torch.no_grad():
        pred = D.discriminate(images * 2 - 1).classes.argmax(1)
    hits = (pred == labels).float().mean().item()
    assert hits >= min(acceptance, 1.0) - 1e-6  # filtering never keeps fewer hits than the raw draws hold
    again = sample_acgan(G, D, 5, seed=0, oversample=4)[0]
    torch.testing.assert_close(images, again)


def test_context_gan_recipe_end_to_end_and_resume(tmp_path):
    cfg = ContextGANRecipe(out_dir=str(tmp_path), ablation=True, **TINY_CTX)
    r = train_context_gan(cfg)
    assert list(r.metrics) == ["l2", "gan+gdl+cascade", "l2+cascade", "gan+gdl"] and _finite(r.metrics)
    for m in r.metrics.values():
        assert m["mae_hu"] == pytest.approx(2000 * m["mae"]) and {"psnr", "ssim", "hf_ratio"} <= set(m)
    assert type(r.models["gan+gdl+cascade"]).__name__ == "AutoContextCascade"
    assert type(r.models["l2"]).__name__ == "ContextGenerator"
    assert set(r.details["test_tissue_mae_hu"]["l2"]) >= {"air", "bone", "fat"}
    again = train_context_gan(ContextGANRecipe(out_dir=str(tmp_path), ablation=True, resume="auto", **TINY_CTX))
    assert again.metrics == r.metrics  # finished runs are loaded, not trained again


def test_wgan_ct_recipe_end_to_end(tmp_path):
    r = train_wgan_ct(WGANCTRecipe(out_dir=str(tmp_path), **TINY_WCT))
    assert list(r.metrics) == ["fbp", "mse", "wgan+perceptual"] and _finite(r.metrics)
    assert r.details["generator_updates"] == {"mse": 2, "wgan+perceptual": 2}  # epochs * n_critic GAN epochs
    assert os.path.isfile(r.files["perceptual_extractor"]) and os.path.isfile(r.files["grid_test"])
    # the user's weights path replaces the in-SDK training of the extractor
    reuse = train_wgan_ct(WGANCTRecipe(perceptual_weights=r.files["perceptual_extractor"], **TINY_WCT))
    assert "perceptual_extractor" not in reuse.files
    assert reuse.metrics["fbp"] == r.metrics["fbp"]  # same simulated test scans
    assert reuse.metrics["wgan+perceptual"] == pytest.approx(r.metrics["wgan+perceptual"])


def test_denoiser_exports_to_onnx_and_runs_in_runtime(tmp_path):
    from deploysdk import Runtime

    torch.manual_seed(0)
    G = create_model("wgan_ct_generator", width=4, depth=3)
    path = tmp_path / "denoiser.onnx"
    export_denoiser(G, path, size=32)
    x = torch.rand(3, 1, 48, 40, generator=torch.Generator().manual_seed(1))  # another batch and size: dynamic
    with Runtime(str(path), backend="onnxruntime", device="cpu") as rt:
        out = rt.run({"input": x.numpy()})["output"]
    with torch.no_grad():
        ref = G.eval()(x).numpy()
    assert out.shape == (3, 1, 48, 40)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)


# --- weight averaging of the baselines ----------------------------------------------------------------------------
def test_baseline_weight_average_follows_the_decay():
    from trainsdk.gan.recipes import fit_pixel_baseline

    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    common = dict(loss="l2", epochs=2, batch_size=4, lr=1e-2, betas=(0.5, 0.999), seed=0, device="cpu",
                  out_dir=None, resume=None)
    G = create_model("wgan_ct_generator", width=4, depth=2)
    plain, history = fit_pixel_baseline(G, x, x, **common)
    assert plain is G and [r["epoch"] for r in history] == [1, 2]
    G = create_model("wgan_ct_generator", width=4, depth=2)
    start = [p.detach().clone() for p in G.parameters()]
    tracked, _ = fit_pixel_baseline(G, x, x, ema_decay=1e-9, **common)  # average = the last weights
    assert tracked is not G
    for a, b in zip(tracked.parameters(), G.parameters()):
        torch.testing.assert_close(a, b)
    G = create_model("wgan_ct_generator", width=4, depth=2)
    G.load_state_dict(dict(zip(dict(G.named_parameters()), start)))
    slow, _ = fit_pixel_baseline(G, x, x, ema_decay=0.999, **common)  # 4 steps: still near the start
    dist_start = sum(float((a - s).abs().sum()) for a, s in zip(slow.parameters(), start))
    dist_live = sum(float((a - b.detach()).abs().sum()) for a, b in zip(slow.parameters(), G.parameters()))
    assert dist_start < 0.01 * dist_live


def test_refresh_batch_norm_sets_the_statistics_of_the_data():
    from trainsdk.gan.recipes import refresh_batch_norm

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2)).eval()
    x = torch.randn(12, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1
    assert refresh_batch_norm(net, x, batch_size=4) is net and not net.training
    with torch.no_grad():
        feats = net[0](x)
    torch.testing.assert_close(net[1].running_mean, feats.mean((0, 2, 3)))  # equal batches: mean of batch means
    plain = torch.nn.Conv2d(1, 1, 1)
    assert refresh_batch_norm(plain, x, batch_size=4) is plain


# --- configs and the command-line entry ---------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: GANAugmentRecipe(size=48), "size must be one of"),
    (lambda: GANAugmentRecipe(seeds=()), "seeds must be a non-empty"),
    (lambda: GANAugmentRecipe(n_per_class=2, gan_batch_size=16), "exceeds the 6 training images"),
    (lambda: ContextGANRecipe(stages=1), "stages must be an integer >= 2"),
    (lambda: ContextGANRecipe(pixel_loss="huber"), "pixel_loss must be one of"),
    (lambda: ContextGANRecipe(data_config={"bones": 3}), "bones"),
    (lambda: WGANCTRecipe(dose_fraction=0.0), "dose_fraction must be a finite number > 0"),
    (lambda: ContextGANRecipe(ema_decay=1.0), "ema_decay must be a finite number > 0"),
    (lambda: WGANCTRecipe(perceptual_weights="/nonexistent/vgg.pt"), "perceptual_weights file not found"),
    (lambda: WGANCTRecipe(perceptual_layers="encoder.conv1"), "non-empty list of module names"),
])
def test_bad_recipe_settings_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_gan_recipe_from_command_line_values():
    cfg = gan_recipe("context-gan", {"width": 8, "betas": [0.5, 0.9]}, epochs=3, seed=None, out_dir="runs/x")
    assert (cfg.width, cfg.epochs, cfg.seed, cfg.betas, cfg.out_dir) == (8, 3, 0, (0.5, 0.9), "runs/x")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['widht'\]"):
        gan_recipe("context-gan", {"widht": 8})
    with pytest.raises(ValueError, match="unknown GAN task"):
        gan_recipe("cycle-gan")


def test_run_gan_task_prints_the_arms_side_by_side():
    lines = []
    result = run_gan_task("context-gan", {k: v for k, v in TINY_CTX.items() if k != "epochs"}, epochs=1,
                          print_fn=lines.append)
    lines = "\n".join(lines).splitlines()
    assert lines[0].startswith("context-gan: 2 arms")
    header = lines[1].split()
    assert header == ["metric", "l2", "gan+gdl+cascade"] and lines[2].split()[0] == "mae_hu"
    assert float(lines[2].split()[1]) == pytest.approx(result.metrics["l2"]["mae_hu"], abs=1e-4)


def test_trainsdk_train_runs_a_gan_task(tmp_path, capsys):
    from trainsdk.cli import main

    argv = ["train", "--task", "context-gan", "--model", "context_gan_cascade", "--data", "paired", "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path)]
    sizes = ["n_train=4", "n_test=2", "size=32"]
    widths = ["width=4", "disc_width=4"]
    argv += [a for s in sizes for a in ("--data-arg", s)] + [a for w in widths for a in ("--model-arg", w)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("context-gan: 2 arms") and "gan+gdl+cascade" in out
    assert os.path.isfile(tmp_path / "context_test.png") and os.path.isfile(tmp_path / "gan_gdl_cascade" / "last.pt")
    assert main(argv[:4] + ["wgan_ct_generator"] + argv[5:]) == 2
    assert "pass --model context_gan_cascade" in capsys.readouterr().err
    assert main(argv + ["--model-arg", "widht=4"]) == 2
    assert "unknown setting(s) ['widht']" in capsys.readouterr().err


def test_results_script_runs_every_experiment_in_quick_mode(tmp_path, capsys):
    import importlib.util

    script = os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks", "results_issue8.py")
    spec = importlib.util.spec_from_file_location("results_issue8", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick", "--out", str(tmp_path), "--threads", str(torch.get_num_threads())])
    assert [r[0].split()[0] for r in rows] == ["GAN", "Context-aware", "WGAN-GP"]
    assert all(isinstance(r[3], bool) for r in rows)
    out = capsys.readouterr().out
    assert "QUICK: not the claims" in out and "classic+acgan" in out and "wgan+perceptual" in out
    assert os.path.isfile(tmp_path / "wgan-ct" / "wgan_ct_test.png")
