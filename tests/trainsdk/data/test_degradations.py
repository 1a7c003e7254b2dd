"""Degradations and simulated CT: determinism by seed, noise statistics against their distributions, resampling
shapes, JPEG quality ordering, FBP accuracy, and dose-dependent CT noise."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from trainsdk.data import ct_sim
from trainsdk.data.degradations import (DEGRADATIONS, degrade, downsample, gaussian_noise, jpeg_artifacts,
                                        median_filter, poisson_noise, simulate_low_dose_ct, speckle_noise,
                                        ultrasound_speckle, upsample_bicubic)
from trainsdk.metrics import psnr

RANDOM = {"gaussian": dict(sigma=0.1), "poisson": dict(photons=50.0), "speckle": dict(sigma=0.2),
          "ultrasound_speckle": {}, "low_dose_ct": dict(dose_fraction=0.2, angles=30)}


@pytest.fixture(scope="module")
def phantom():
    return ct_sim.shepp_logan_phantom(64)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_degradations_are_deterministic_by_seed(name, phantom):
    x = np.stack([phantom, phantom[::-1]])[:, None]  # (2, 1, 64, 64)
    a = degrade(name, x, seed=3, **RANDOM[name])
    b = degrade(name, x, seed=3, **RANDOM[name])
    c = degrade(name, x, seed=4, **RANDOM[name])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    gen = np.random.default_rng(3)  # a Generator streams: consecutive calls differ, the stream is reproducible
    first, second = degrade(name, x, seed=gen, **RANDOM[name]), degrade(name, x, seed=gen, **RANDOM[name])
    np.testing.assert_array_equal(first, a)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_tensors_in_tensors_out(name, phantom):
    x = np.stack([phantom, phantom.T])[:, None].astype(np.float32)
    params = RANDOM.get(name, {"downsample": dict(factor=2), "jpeg": dict(quality=30)}.get(name))
    if name in RANDOM:
        params = dict(params, seed=0)
    ref = degrade(name, x, **params)
    out = degrade(name, torch.from_numpy(x), **params)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), ref)


def test_gaussian_noise_statistics():
    noisy = gaussian_noise(np.full((4, 128, 128), 0.5), 0.1, seed=0)
    noise = noisy - 0.5
    assert abs(noise.mean()) < 0.002 and abs(noise.std() - 0.1) < 0.002
    clipped = gaussian_noise(np.zeros((64, 64)), 1.0, seed=0, clip=(0.0, 1.0))
    assert clipped.min() == 0.0 and clipped.max() == 1.0


@pytest.mark.parametrize("level,photons", [(0.5, 200.0), (0.05, 1000.0)])
def test_poisson_variance_equals_mean_in_counts(level, photons):
    out = poisson_noise(np.full((4, 128, 128), level), photons, seed=1)
    counts = out * photons
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # whole photons
    mean, var = counts.mean(), counts.var()
    assert abs(mean / (level * photons) - 1) < 0.01
    assert abs(var / mean - 1) < 0.03, "Poisson: variance == mean"


def test_speckle_factor_has_mean_one():
    img = np.full((4, 128, 128), 2.0)
    factor = speckle_noise(img, 0.3, seed=0) / img
    assert abs(factor.mean() - 1) < 0.005 and abs(factor.std() - 0.3) < 0.005


def test_ultrasound_speckle_is_rayleigh_with_mean_one_and_anisotropic_grain():
    ones = np.ones((4, 128, 128))
    raw = ultrasound_speckle(ones, psf_sigma=(0.0, 0.0), seed=0)
    assert abs(raw.mean() - 1) < 0.01
    assert abs(raw.std() - np.sqrt(4 / np.pi - 1)) < 0.01, "Rayleigh envelope: SNR 1.91"
    assert raw.min() >= 0
    blurred = ultrasound_speckle(ones, psf_sigma=(1.0, 3.0), seed=0)
    assert abs(blurred.mean() - 1) < 0.01 and blurred.std() < raw.std()
    d = blurred - blurred.mean()
    axial = (d[:, 1:, :] * d[:, :-1, :]).mean() / d.var()  # neighbour correlation along H (axial)
    lateral = (d[:, :, 1:] * d[:, :, :-1]).mean() / d.var()
    assert lateral > axial > 0, "the lateral PSF is wider: longer grain laterally"


def test_downsample_shapes_and_area_means():
    x = np.arange(2 * 1 * 8 * 12, dtype=np.float64).reshape(2, 1, 8, 12)
    small = downsample(x, 4)
    assert small.shape == (2, 1, 2, 3)
    assert small[0, 0, 0, 0] == x[0, 0, :4, :4].mean()
    assert downsample(x, 3, method="bicubic").shape == (2, 1, 2, 4)
    assert upsample_bicubic(small, 4).shape == x.shape
    assert upsample_bicubic(small, size=(5, 7)).shape == (2, 1, 5, 7)
    np.testing.assert_allclose(upsample_bicubic(np.full((6, 6), 0.7), 3), 0.7, atol=1e-12)
    with pytest.raises(ValueError, match="divisible by factor 3"):
        downsample(x, 3)
    with pytest.raises(ValueError, match="exactly one of factor"):
        upsample_bicubic(small)


def test_bicubic_beats_pixel_replication_on_a_smooth_image(phantom):
    smooth = ndimage.gaussian_filter(phantom, 1.5)
    low = downsample(smooth, 2)
    bicubic = upsample_bicubic(low, 2)
    nearest = np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)
    assert psnr(bicubic, smooth, data_range=1.0) > psnr(nearest, smooth, data_range=1.0) + 1.0


def test_lower_jpeg_quality_gives_larger_error(phantom):
    x = np.stack([phantom, ndimage.gaussian_filter(phantom, 1.0)])
    errors = [np.abs(jpeg_artifacts(x, q) - x).mean() for q in (90, 50, 10)]
    assert errors[0] < errors[1] < errors[2]
    np.testing.assert_array_equal(jpeg_artifacts(x, 10), jpeg_artifacts(x, 10))
    scaled = jpeg_artifacts(x * 1000.0, 50, data_range=(0.0, 1000.0))
    np.testing.assert_allclose(scaled / 1000.0, jpeg_artifacts(x, 50), atol=1e-9)


def test_median_filter_removes_impulses_and_matches_scipy_per_plane(phantom):
    rng = np.random.default_rng(0)
    x = np.stack([phantom, phantom.T])[:, None].copy()
    salt = rng.random(x.shape) < 0.05
    x_noisy = np.where(salt, 1.0, x)
    out = median_filter(x_noisy, 3)
    for n in range(2):
        np.testing.assert_array_equal(out[n, 0], ndimage.median_filter(x_noisy[n, 0], size=3, mode="reflect"))
    assert np.abs(out - x).mean() < 0.5 * np.abs(x_noisy - x).mean()


# --- CT ----------------------------------------------------------------------------------------------------------
def test_radon_line_integrals_of_a_disk():
    n, r = 64, 20.0
    g = np.arange(n) - (n - 1) / 2
    disk = (g[None, :] ** 2 + g[:, None] ** 2 <= r ** 2).astype(float)
    sino = ct_sim.radon(disk, 36)
    assert sino.shape == (36, ct_sim.detector_bins(n)) == (36, 91)
    np.testing.assert_allclose(sino.sum(axis=1), disk.sum(), rtol=0.01)  # every view sees all the mass
    t = np.arange(91) - 45.0
    chord = 2 * np.sqrt(np.clip(r ** 2 - t ** 2, 0, None))
    assert np.abs(sino - chord).mean() < 0.5, "projections are the chord lengths through the disk"


def test_fbp_reconstructs_the_phantom(phantom):
    sino = ct_sim.radon(phantom, 180)
    for filt in ("ram-lak", "shepp-logan"):
        assert psnr(ct_sim.iradon_fbp(sino, filter=filt), phantom, data_range=1.0) > 25.0, filt
    sparse = ct_sim.iradon_fbp(ct_sim.radon(phantom, 20))
    assert psnr(sparse, phantom, data_range=1.0) < psnr(ct_sim.iradon_fbp(sino), phantom, data_range=1.0) - 3.0
    batch = ct_sim.iradon_fbp(ct_sim.radon(np.stack([phantom, phantom.T]), 180))
    np.testing.assert_allclose(batch[1], ct_sim.iradon_fbp(ct_sim.radon(phantom.T, 180)), atol=1e-12)


def test_low_dose_ct_has_more_noise_than_normal_dose(phantom):
    clean = ct_sim.iradon_fbp(ct_sim.radon(phantom, 180), filter="shepp-logan")
    noise = {dose: (simulate_low_dose_ct(phantom, dose, seed=0) - clean).std() for dose in (1.0, 0.1)}
    assert noise[0.1] > 2.5 * noise[1.0], noise  # quantum noise: std ~ 1/sqrt(dose), sqrt(10) = 3.2
    assert noise[0.1] < 4.0 * noise[1.0], noise
    assert psnr(simulate_low_dose_ct(phantom, 1.0, seed=0), phantom, data_range=1.0) > 20.0


def test_bad_inputs_are_explained(phantom):
    with pytest.raises(ValueError, match=r"square images of shape \(\.\.\., n, n\)"):
        ct_sim.radon(np.zeros((32, 48)))
    with pytest.raises(ValueError, match="non-negative attenuation"):
        simulate_low_dose_ct(phantom - 0.5, 0.5, seed=0)
    with pytest.raises(ValueError, match="dose_fraction must be at most 1"):
        simulate_low_dose_ct(phantom, 1.5, seed=0)
    with pytest.raises(ValueError, match="filter must be one of"):
        ct_sim.iradon_fbp(np.zeros((10, 91)), filter="butterworth")
    with pytest.raises(ValueError, match="10 projections but 12 angles"):
        ct_sim.iradon_fbp(np.zeros((10, 91)), angles=12)
    with pytest.raises(ValueError, match="non-negative for Poisson"):
        poisson_noise(phantom - 1.0, 10.0, seed=0)
    with pytest.raises(ValueError, match=r"quality must be an integer in \[1, 95\]"):
        jpeg_artifacts(phantom, 0)
    with pytest.raises(TypeError, match="seed must be"):
        gaussian_noise(phantom, 0.1, seed="abc")
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        gaussian_noise(phantom, -1.0, seed=0)
    with pytest.raises(ValueError, match="unknown degradation 'blur'.*gaussian"):
        degrade("blur", phantom)
    with pytest.raises(ValueError, match="at least 2 axes"):
        median_filter(np.zeros(5))
    with pytest.raises(ValueError, match="psf_sigma"):
        ultrasound_speckle(phantom, psf_sigma=(1.0,), seed=0)
