"""Intensity transforms: statistics, references (scipy's Gaussian filter), per-sample draws, masks untouched."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from trainsdk.augment import BiasField, BrightnessContrast, GaussianBlur, GaussianNoise, RandomGamma, gaussian_blur
from trainsdk.augment.intensity import bias_field_basis

ALL = [GaussianNoise(0.1), RandomGamma(), GaussianBlur(), BiasField(), BrightnessContrast()]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_mask_is_returned_untouched_and_results_are_deterministic(t):
    x = torch.rand(3, 2, 12, 14, dtype=torch.float64)
    mask = torch.randint(0, 3, (3, 12, 14))
    out, m = t(x, mask, generator=_gen(5))
    assert m is mask and out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, t(x, generator=_gen(5)))
    assert not torch.equal(out, t(x, generator=_gen(6)))
    assert not torch.equal(out, x)


@pytest.mark.parametrize("t", [type(t)(p=0.0) for t in ALL], ids=lambda t: type(t).__name__)
def test_probability_zero_is_bit_identical(t):
    x = torch.rand(2, 1, 8, 9, 10)
    assert torch.equal(t(x, generator=_gen()), x)


def test_noise_has_the_configured_std_per_sample():
    x = torch.full((4, 1, 96, 96), 0.5, dtype=torch.float64)
    out = GaussianNoise(std=(0.1, 0.1))(x, generator=_gen())
    resid = (out - x).flatten(1)
    torch.testing.assert_close(resid.std(1), torch.full((4,), 0.1, dtype=torch.float64), rtol=0.04, atol=0)
    assert resid.mean(1).abs().max() < 0.005
    varied = (GaussianNoise(std=(0.0, 0.2))(x, generator=_gen()) - x).flatten(1).std(1)
    assert varied.max() <= 0.2 * 1.05 and varied.max() - varied.min() > 0.01  # per-sample std, in range


def test_gamma_is_a_power_curve_inside_each_channels_range():
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64) * 3 + 1
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    out = RandomGamma(gamma=(2.0, 2.0))(x)
    torch.testing.assert_close(out, lo + (hi - lo) * ((x - lo) / (hi - lo)) ** 2)
    rnd = RandomGamma(gamma=(0.5, 2.0))(x, generator=_gen())
    torch.testing.assert_close(rnd.amin((2, 3), keepdim=True), lo)
    torch.testing.assert_close(rnd.amax((2, 3), keepdim=True), hi)
    const = torch.full((1, 1, 4, 4), 0.3)
    assert torch.equal(RandomGamma(gamma=(2.0, 2.0))(const), const)


@pytest.mark.parametrize("spatial", [(20, 17), (9, 10, 11)])
def test_blur_equals_scipy_gaussian_filter(spatial):
    x = torch.rand(3, 2, *spatial, dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.7, 2.3], dtype=torch.float64)
    out = gaussian_blur(x, sigma)
    for i in range(3):
        for c in range(2):
            ref = ndimage.gaussian_filter(x[i, c].numpy(), float(sigma[i]), mode="nearest", truncate=4.0)
            np.testing.assert_allclose(out[i, c].numpy(), ref, rtol=0, atol=1e-12)


def test_blur_accepts_one_sigma_for_all_and_rejects_bad_ones():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(x, 1.0), gaussian_blur(x, torch.tensor([1.0, 1.0])))
    with pytest.raises(ValueError, match=r"sigma must be one number or \(N=2,\) finite values >= 0"):
        gaussian_blur(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"sigma must be one number or \(N=2,\)"):
        gaussian_blur(x, [1.0, 2.0, 3.0])


def test_blur_transform_with_a_fixed_sigma_and_an_impulse():
    x = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    x[0, 0, 20, 20] = 1.0
    out = GaussianBlur(sigma=(2.0, 2.0))(x)[0, 0]
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-12)  # normalized kernel, impulse far from the edges
    d = torch.arange(41, dtype=torch.float64) - 20
    var_x = float((out.sum(0) * d ** 2).sum())
    assert var_x == pytest.approx(4.0, rel=0.01)  # sampled Gaussian, sigma^2 up to truncation


@pytest.mark.parametrize("spatial", [(16, 24), (6, 8, 10)])
def test_bias_field_is_a_smooth_positive_polynomial_exponential(spatial):
    x = torch.ones(2, 2, *spatial, dtype=torch.float64)
    out = BiasField(coefficients=0.3, order=3)(x, generator=_gen())
    assert torch.equal(out[:, 0], out[:, 1])  # one field per sample, shared by its channels
    log_field = out[:, 0].log().reshape(2, -1)  # (N, P)
    basis = bias_field_basis(spatial, 3).reshape(-1, log_field.shape[1]).T  # (P, T)
    coef = torch.linalg.lstsq(basis, log_field.T).solution  # (T, N)
    torch.testing.assert_close(basis @ coef, log_field.T, rtol=0, atol=1e-10)
    assert coef.abs().max() <= 0.3 + 1e-9 and not torch.equal(out[0], out[1])


def test_brightness_contrast_moves_mean_and_scales_spread():
    x = torch.rand(3, 2, 16, 16, dtype=torch.float64)
    out = BrightnessContrast(brightness=(0.2, 0.2), contrast=(1.5, 1.5))(x)
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)) + 0.2)
    torch.testing.assert_close(out.std((2, 3)), x.std((2, 3)) * 1.5)


def test_policy_limits_report_the_configured_ranges():
    assert GaussianNoise(0.05).policy_limits() == {"noise_std": (0.0, 0.05)}
    assert RandomGamma(0.2).policy_limits() == {"gamma": (0.8, 1.2)}
    assert GaussianBlur((0.5, 1.5)).policy_limits() == {"blur_sigma": (0.5, 1.5)}
    assert BiasField(0.4).policy_limits() == {"bias_field": (-0.4, 0.4)}
    assert BrightnessContrast(0.1, (0.8, 1.1)).policy_limits() == {"brightness": (-0.1, 0.1), "contrast": (0.8, 1.1)}


def test_bad_configs_and_inputs_raise():
    with pytest.raises(ValueError, match="std must be >= 0"):
        GaussianNoise(std=(-0.1, 0.1))
    with pytest.raises(ValueError, match="gamma must stay > 0"):
        RandomGamma(gamma=(0.0, 2.0))
    with pytest.raises(ValueError, match="order must be an int in 1..6"):
        BiasField(order=0)
    with pytest.raises(ValueError, match="p must be a probability"):
        GaussianBlur(p=-0.1)
    with pytest.raises(ValueError, match="contrast must stay >= 0"):
        BrightnessContrast(contrast=(-0.5, 1.0))
    with pytest.raises(TypeError, match="std must be a number, a \\(low, high\\) pair"):
        GaussianNoise(std="big")
    with pytest.raises(TypeError, match="GaussianNoise: image must be a floating-point tensor"):
        GaussianNoise()(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="GaussianBlur: image must be a .*got shape \\(4, 4\\)"):
        GaussianBlur()(torch.zeros(4, 4))
