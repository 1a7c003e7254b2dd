"""The numpy building blocks against closed-form values."""
import numpy as np
import pytest

from trainsdk.data import _shapes as S


def test_ellipse_distance_is_one_on_the_semi_axes_and_rotation_turns_them():
    centers = np.array([[20.0, 30.0]], np.float32)
    radii = np.array([[5.0, 10.0]], np.float32)
    d = S.ellipsoid_distance((64, 64), centers, radii, np.eye(2, dtype=np.float32)[None])
    assert d.shape == (1, 64, 64) and d.dtype == np.float32
    assert d[0, 20, 30] == 0.0
    assert d[0, 25, 30] == pytest.approx(1.0) and d[0, 20, 40] == pytest.approx(1.0)
    assert d[0, 20, 35] == pytest.approx(0.5)
    rot90 = np.array([[[0.0, -1.0], [1.0, 0.0]]], np.float32)  # semi-axis 0 now runs along array axis 1
    d = S.ellipsoid_distance((64, 64), centers, radii, rot90)
    assert d[0, 20, 35] == pytest.approx(1.0) and d[0, 30, 30] == pytest.approx(1.0)


def test_random_rotations_are_proper_rotations_in_2d_and_3d():
    rng = np.random.default_rng(0)
    for ndim in (2, 3):
        for max_angle in (None, 0.3):
            r = S.random_rotations(rng, 16, ndim, max_angle).astype(np.float64)
            np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(ndim), r.shape), atol=1e-5)
            np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
    small = S.random_rotations(rng, 64, 3, 0.3)
    angle = np.arccos(np.clip((np.trace(small, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert angle.max() <= 0.3 + 1e-4


def test_smooth_field_is_standardized_and_smoother_for_larger_sigma():
    rng = np.random.default_rng(0)
    lag1 = []
    for sigma in (1.0, 4.0):
        f = S.smooth_field(rng, 8, (64, 64), sigma)
        np.testing.assert_allclose(f.mean(axis=(1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(f.std(axis=(1, 2)), 1.0, atol=1e-4)
        lag1.append(np.mean(f[:, :, 1:] * f[:, :, :-1]))
    # Gaussian-filtered white noise: correlation at lag 1 is exp(-1 / (4 sigma^2))
    assert lag1[0] == pytest.approx(np.exp(-1 / 4), abs=0.05)
    assert lag1[1] == pytest.approx(np.exp(-1 / 64), abs=0.03)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        S.smooth_field(rng, 1, (8, 8), 0)


def test_polynomial_bias_spans_exp_of_plus_minus_strength():
    b = S.polynomial_bias(np.random.default_rng(1), 4, (16, 24, 20), 0.3)
    log = np.log(b.reshape(4, -1))
    np.testing.assert_allclose(np.abs(log).max(1), 0.3, rtol=1e-5)  # the extreme reaches the strength exactly
    assert np.all(S.polynomial_bias(np.random.default_rng(1), 2, (8, 8), 0.0) == 1.0)


def test_soft_inside_is_half_on_the_surface():
    d = np.array([[0.0, 1.0, 2.0]], np.float32)
    w = S.soft_inside(d, np.array([4.0]), 0.5)
    assert w[0, 1] == pytest.approx(0.5) and w[0, 0] > 0.999 and w[0, 2] < 0.001


def test_pick_voxels_uniform_inside_and_fallback_to_the_deepest():
    rng = np.random.default_rng(2)
    d = np.tile(np.linspace(0.0, 1.9, 20, dtype=np.float32), (4000, 1))  # (N, 20): one axis, d grows along it
    picked = S.pick_voxels(rng, d[:, None, :].repeat(3, 1), np.full(4000, 0.55))[:, 1]  # (N,) column index
    assert picked.max() == 5 and d[0, 5] < 0.55 < d[0, 6]
    assert np.bincount(picked.astype(int), minlength=6).min() > 4000 / 6 * 0.85  # all six eligible columns, evenly
    none = S.pick_voxels(rng, d[:2, None, :] + 1.0, np.array([0.5, 0.5]))
    np.testing.assert_array_equal(none, [[0, 0], [0, 0]])  # no voxel deep enough: the deepest one


def test_radial_sample_is_constant_along_rays():
    field = np.arange(32 * 32, dtype=np.float32).reshape(1, 32, 32)
    out = S.radial_sample(field, np.array([[16.0, 16.0]]), np.array([5.0]))
    assert out[0, 16, 18] == out[0, 16, 25] == field[0, 16, 21]  # every voxel right of the center reads (16, 21)
    assert out[0, 10, 16] == field[0, 11, 16]


def test_noise_kinds():
    rng = np.random.default_rng(3)
    zero = np.zeros((2, 64, 64), np.float32)
    g = S.add_noise(rng, zero, np.array([0.1, 0.2]), "gaussian")
    np.testing.assert_allclose(g.std(axis=(1, 2)), [0.1, 0.2], rtol=0.05)
    r = S.add_noise(rng, zero, np.array([0.1, 0.1]), "rician")
    assert r.min() >= 0  # a magnitude: Rayleigh in the background, mean sigma * sqrt(pi / 2)
    assert r.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.05)
    with pytest.raises(ValueError, match="noise kind must be"):
        S.add_noise(rng, zero, np.array([0.1, 0.1]), "poisson")
