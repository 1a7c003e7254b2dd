"""PSNR and SSIM against scikit-image's numbers (recorded in tests/fixtures/metric_golden.json) and by hand."""
import json
import pathlib

import numpy as np
import pytest
import torch

from tests.fixtures.make_metric_golden import golden_images
from trainsdk.metrics import infer_data_range, psnr, ssim

GOLDEN = json.loads((pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "metric_golden.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN["cases"]))
def test_ssim_psnr_match_scikit_image(name):
    case = GOLDEN["cases"][name]
    clean, noisy = golden_images(tuple(case["shape"]), case["scale"])
    assert [clean.sum(), noisy.sum()] == pytest.approx(case["input_sums"], rel=1e-12)  # inputs rebuilt exactly
    got = ssim(clean, noisy, data_range=case["data_range"], sigma=case["sigma"], win_size=case["win_size"])
    assert got == pytest.approx(case["ssim"], abs=1e-9)
    assert psnr(clean, noisy, data_range=case["data_range"]) == pytest.approx(case["psnr"], abs=1e-9)


def test_psnr_by_hand_and_identical_images():
    x = np.linspace(0, 1, 64).reshape(8, 8)
    assert psnr(x + 0.1, x, data_range=1.0) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(x + 0.1, x) == pytest.approx(20.0)  # inferred range: target max - min = 1
    assert psnr(x * 255 + 2, x * 255, data_range=255) == pytest.approx(10 * np.log10(255 ** 2 / 4))
    assert psnr(x, x, data_range=1.0) == np.inf
    assert psnr(torch.tensor(x + 0.1), torch.tensor(x), data_range=1.0) == pytest.approx(20.0)


def test_ssim_properties_2d_3d():
    clean, noisy = golden_images((24, 24, 24))
    assert ssim(clean, clean, data_range=1.0) == pytest.approx(1.0)
    assert ssim(clean, noisy, data_range=1.0) == pytest.approx(ssim(noisy, clean, data_range=1.0))  # symmetric
    assert ssim(clean, noisy, data_range=1.0) == pytest.approx(  # invariant to a common intensity scale
        ssim(100 * clean, 100 * noisy, data_range=100.0))
    worse = np.clip(noisy + 0.1 * np.random.default_rng(1).standard_normal(noisy.shape), 0, 1)
    assert ssim(clean, worse, data_range=1.0) < ssim(clean, noisy, data_range=1.0)
    t = torch.tensor(clean, dtype=torch.float32)
    assert ssim(t, torch.tensor(noisy), data_range=1.0) == pytest.approx(ssim(clean, noisy, data_range=1.0), abs=1e-6)


def test_ssim_batched_is_mean_of_images():
    pairs = [golden_images((20, 22), seed=s) for s in range(3)]
    batch_p = np.stack([p[0] for p in pairs])[:, None]  # (3, 1, 20, 22)
    batch_t = np.stack([p[1] for p in pairs])[:, None]
    expected = np.mean([ssim(a, b, data_range=1.0) for a, b in pairs])
    assert ssim(batch_p, batch_t, data_range=1.0, spatial_dims=2) == pytest.approx(expected)


def test_infer_data_range_rule():
    assert infer_data_range(np.array([-1000.0, 200.0, 3000.0])) == 4000.0
    assert infer_data_range(np.zeros(3), 2.5) == 2.5


@pytest.mark.parametrize("call, match", [
    (lambda: psnr(np.ones((4, 4)), np.ones((4, 4))), "constant target"),
    (lambda: psnr(np.ones((4, 4)), np.ones((4, 5)), data_range=1.0), "same shape"),
    (lambda: psnr(np.ones(3), np.array([0.0, np.nan, 1.0]), data_range=1.0), "finite"),
    (lambda: psnr(np.ones(3), np.ones(3), data_range=0), "data_range must be"),
    (lambda: ssim(np.ones((8, 20)), np.ones((8, 20)), data_range=1.0), "win_size=11"),
    (lambda: ssim(np.ones((2, 1, 16, 16)), np.ones((2, 1, 16, 16)), data_range=1.0), "spatial_dims"),
    (lambda: ssim(np.ones((16, 16)), np.ones((16, 16)), data_range=1.0, win_size=4), "odd"),
])
def test_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
