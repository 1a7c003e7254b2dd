"""Geometry of the affine builders and RandomAffine, checked against torch.rot90/flip/roll and moments of disks."""
import math

import pytest
import torch

from trainsdk.augment import (RandomAffine, apply_affine, compose, flip, identity, random_translate, rotation,
                              scaling, shear, to_theta, translation)


def _disk(size, centre, radius, dtype=torch.float64):
    """Anti-aliased disk/ball (smooth edge, so bilinear moments are accurate), spatial shape ``size``."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=dtype) for s in size], indexing="ij")
    dist = torch.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    return (radius + 0.5 - dist).clamp(0, 1)


def _moments(img):
    """Mass, centroid (tensor order) and covariance of a non-negative spatial map."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=img.dtype) for s in img.shape], indexing="ij")
    mass = img.sum()
    mean = torch.stack([(g * img).sum() / mass for g in grids])
    d = [g - m for g, m in zip(grids, mean)]
    cov = torch.tensor([[(a * b * img).sum() / mass for b in d] for a in d], dtype=img.dtype)
    return mass, mean, cov


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, -1])
def test_rotation_by_quarter_turns_equals_rot90(k, align_corners):
    x = torch.rand(2, 3, 9, 9)
    mask = torch.randint(0, 5, (2, 1, 9, 9))
    out, m = apply_affine(x, rotation(90.0 * k, (9, 9)), mask, mode="nearest", align_corners=align_corners)
    assert torch.equal(out, torch.rot90(x, k, dims=(-2, -1)))
    assert torch.equal(m, torch.rot90(mask, k, dims=(-2, -1)))
    bilinear = apply_affine(x, rotation(90.0 * k, (9, 9)), align_corners=align_corners)
    torch.testing.assert_close(bilinear, torch.rot90(x, k, dims=(-2, -1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("axes, dims", [((0,), (-1,)), ((1,), (-2,)), ((0, 1), (-2, -1))])
def test_flips_equal_torch_flip(axes, dims):
    x = torch.rand(2, 2, 6, 11)
    mask = torch.randint(0, 3, (2, 6, 11))
    out, m = apply_affine(x, flip(axes, (6, 11)), mask, mode="nearest")
    assert torch.equal(out, x.flip(dims)) and torch.equal(m, mask.flip(dims))
    torch.testing.assert_close(apply_affine(x, flip(axes, (6, 11))), x.flip(dims), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_translation_by_k_pixels_shifts_by_k_pixels(mode):
    x = torch.rand(1, 1, 10, 13, dtype=torch.float64)
    out = apply_affine(x, translation((3, -2)), mode=mode)  # 3 px right (+x), 2 px up (-y)
    expected = torch.zeros_like(x)
    expected[..., :-2, 3:] = x[..., 2:, :-3]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_non_square_quarter_turn_matches_rot90_on_the_central_square():
    x = torch.rand(1, 1, 24, 40)
    out = apply_affine(x, rotation(90.0, (24, 40)), mode="nearest")
    assert torch.equal(out[..., 8:32], torch.rot90(x[..., 8:32], 1, dims=(-2, -1)))


@pytest.mark.parametrize("angle", [90.0, 37.0, -120.0])
def test_non_square_rotation_keeps_a_disk_a_disk(angle):
    size, centre, radius = (48, 80), (20.0, 52.0), 8.0  # off-centre disk on a wide image
    x = _disk(size, centre, radius)[None, None]
    matrix = rotation(angle, size)
    out = apply_affine(x, matrix)[0, 0]
    mass0, _, cov0 = _moments(x[0, 0])
    mass, mean, cov = _moments(out)
    assert mass == pytest.approx(float(mass0), rel=0.01)
    eig = torch.linalg.eigvalsh(cov)
    assert float(eig[1] / eig[0]) < 1.03  # a 48x80 aspect error would make this ~2.8
    assert torch.allclose(eig, torch.linalg.eigvalsh(cov0), rtol=0.03)
    src = torch.tensor([centre[1], centre[0], 1.0], dtype=torch.float64)  # x-first, homogeneous
    dst = matrix @ src
    torch.testing.assert_close(mean, torch.stack([dst[1], dst[0]]), rtol=0, atol=0.05)


def test_rotation_sign_counter_clockwise_on_display():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0  # right of the centre
    out = apply_affine(x, rotation(90.0, (9, 9)), mode="nearest")
    assert out[0, 0, 1, 4] == 1.0  # now above it (row 1)


def test_non_square_theta_matches_the_closed_form():
    h, w, a = 24, 40, math.radians(30)
    theta = to_theta(rotation(30.0, (h, w)), (h, w))
    c, s = math.cos(a), math.sin(a)
    expected = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(theta, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners, expected", [(False, -2.0 / 10), (True, -2.0 / 9)])
def test_to_theta_translation_and_identity(align_corners, expected):
    theta = to_theta(translation((1.0, 0.0)), (7, 10), align_corners)
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0.0, expected], [0.0, 1.0, 0.0]], dtype=torch.float64))
    eye = to_theta(identity(3, (2,)), (4, 5, 6), align_corners)
    torch.testing.assert_close(eye, torch.eye(3, 4, dtype=torch.float64).expand(2, 3, 4), rtol=0, atol=1e-15)


def test_scaling_doubles_a_disk_radius():
    size = (64, 64)
    x = _disk(size, (31.5, 31.5), 6.0)[None, None]
    out = apply_affine(x, scaling(2.0, size))[0, 0]
    _, _, cov0 = _moments(x[0, 0])
    mass, mean, cov = _moments(out)
    assert mass / x.sum() == pytest.approx(4.0, rel=0.02)
    torch.testing.assert_close(cov, 4 * cov0, rtol=0.03, atol=0.05)


def test_per_axis_scaling_and_shear_move_a_pixel_where_the_matrix_says():
    x = torch.zeros(1, 1, 17, 17)
    x[0, 0, 12, 8] = 1.0  # 4 px below the centre (8, 8)
    sheared = apply_affine(x, shear((0.5, 0.0), (17, 17)), mode="nearest")  # x' = x + 0.5 (y - 8)
    assert sheared[0, 0, 12, 10] == 1.0 and sheared.sum() == 1.0
    stretched = apply_affine(x, scaling((1.0, 1.5), (17, 17)), mode="nearest")  # y' = 8 + 1.5 * 4
    assert stretched[0, 0, 14, 8] == 1.0 and stretched.sum() == 1.0


def test_compose_applies_the_first_matrix_first():
    size = (8, 12)
    f, t = flip((0,), size), translation((3, 0))
    torch.testing.assert_close(compose(f, t), t @ f)
    x = torch.rand(1, 1, *size)
    once = apply_affine(x, compose(f, t), mode="nearest")
    twice = apply_affine(apply_affine(x, f, mode="nearest"), t, mode="nearest")
    assert torch.equal(once, twice)
    assert not torch.equal(once, apply_affine(x, compose(t, f), mode="nearest"))


@pytest.mark.parametrize("axis, dims", [(0, (-3, -2)), (1, (-1, -3)), (2, (-2, -1))])
def test_3d_quarter_turns_equal_rot90(axis, dims):
    x = torch.rand(1, 2, 7, 7, 7)
    mask = torch.randint(0, 4, (1, 7, 7, 7))
    angles = [0.0, 0.0, 0.0]
    angles[axis] = 90.0
    out, m = apply_affine(x, rotation(angles, (7, 7, 7)), mask, mode="nearest")
    assert torch.equal(out, torch.rot90(x, 1, dims=dims))
    assert torch.equal(m, torch.rot90(mask, 1, dims=dims))


def test_3d_flips_and_translation():
    x = torch.rand(1, 1, 5, 6, 7, dtype=torch.float64)
    assert torch.equal(apply_affine(x, flip((2,), (5, 6, 7)), mode="nearest"), x.flip(-3))
    assert torch.equal(apply_affine(x, flip((0, 1), (5, 6, 7)), mode="nearest"), x.flip(-1, -2))
    out = apply_affine(x, translation((1, 0, 2)), mode="nearest")  # +1 px along W, +2 slices along D
    expected = torch.zeros_like(x)
    expected[..., 2:, :, 1:] = x[..., :-2, :, :-1]
    assert torch.equal(out, expected)


def test_3d_non_cubic_rotation_keeps_a_ball_a_ball():
    size, centre = (16, 24, 32), (8.0, 10.0, 18.0)
    x = _disk(size, centre, 4.0)[None, None]
    out = apply_affine(x, rotation((30.0, 0.0, 0.0), size))[0, 0]  # about x: mixes the D and H axes
    mass, _, cov = _moments(out)
    eig = torch.linalg.eigvalsh(cov)
    assert mass == pytest.approx(float(x.sum()), rel=0.02)
    assert float(eig[-1] / eig[0]) < 1.05


def test_random_affine_keeps_image_and_mask_aligned():
    labels = torch.zeros(4, 1, 32, 40, dtype=torch.long)
    labels[:, :, 8:20, 10:25] = 1
    labels[:, :, 22:28, 5:35] = 2
    aug = RandomAffine(rotation_deg=25, translation=0.1, scale=(0.8, 1.2), shear=0.1, flip_axes=(0, 1),
                       mode="nearest")
    img, m = aug(labels.double(), labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(img, m.double()) and m.dtype == torch.long
    smooth, m2 = RandomAffine(rotation_deg=25, translation=0.1, scale=(0.8, 1.2))(
        (labels == 1).double(), labels, generator=torch.Generator().manual_seed(4))
    disagree = ((smooth[:, 0] > 0.5) != (m2[:, 0] == 1)).double().mean()
    assert disagree < 0.02  # only along the boundary


def test_random_affine_is_deterministic_by_seed_and_varies_per_sample():
    aug = RandomAffine(rotation_deg=20, translation=0.1, scale=0.1, shear=0.05, flip_axes=(0,))
    x = torch.rand(4, 1, 16, 16)
    a = aug(x, generator=torch.Generator().manual_seed(0))
    b = aug(x, generator=torch.Generator().manual_seed(0))
    c = aug(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    mats = aug.sample_matrices(4, (16, 16), torch.Generator().manual_seed(0))
    assert len({tuple(m.flatten().tolist()) for m in mats}) == 4


def test_random_affine_stays_in_its_ranges():
    aug = RandomAffine(rotation_deg=10, translation=0.25, scale=(0.9, 1.1))
    mats = aug.sample_matrices(500, (20, 40), torch.Generator().manual_seed(0))
    lin = mats[:, :2, :2]
    scale = torch.sqrt(torch.det(lin))
    angle = torch.rad2deg(torch.atan2(lin[:, 0, 1], lin[:, 0, 0]))
    assert scale.min() >= 0.9 - 1e-9 and scale.max() <= 1.1 + 1e-9
    assert angle.abs().max() <= 10 + 1e-9 and angle.abs().max() > 9  # also spans its range
    centre_moves = (mats[:, :2] @ torch.tensor([19.5, 9.5, 1.0], dtype=torch.float64)) - torch.tensor([19.5, 9.5])
    assert centre_moves[:, 0].abs().max() <= 0.25 * 40 + 1e-9 and centre_moves[:, 1].abs().max() <= 0.25 * 20 + 1e-9


def test_random_affine_fixed_quarter_turn_and_forced_flip_and_probabilities():
    x = torch.rand(3, 1, 8, 8)
    turned = RandomAffine(rotation_deg=(90, 90), mode="nearest")(x)
    assert torch.equal(turned, torch.rot90(x, 1, dims=(-2, -1)))
    flipped = RandomAffine(flip_axes=(0,), p_flip=1.0, mode="nearest")(x)
    assert torch.equal(flipped, x.flip(-1))
    off = RandomAffine(rotation_deg=45, translation=0.2, scale=0.2, shear=0.2, flip_axes=(0, 1), p_rotation=0,
                       p_translation=0, p_scale=0, p_shear=0, p_flip=0)
    torch.testing.assert_close(off.sample_matrices(3, (8, 8)), identity(2, (3,)))


def test_random_affine_3d_with_per_axis_rotation():
    aug = RandomAffine(rotation_deg=((0, 0), (0, 0), (90, 90)), mode="nearest")
    x = torch.rand(2, 1, 5, 6, 6)
    assert torch.equal(aug(x), torch.rot90(x, 1, dims=(-2, -1)))
    with pytest.raises(ValueError, match="rotation_deg has 3 per-axis ranges, this input needs 1"):
        aug(torch.rand(1, 1, 6, 6))


def test_bad_inputs_and_configs_raise_clear_errors():
    aug = RandomAffine(rotation_deg=10)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C, D, H, W\).*\(8, 8\)"):
        aug(torch.rand(8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        aug(torch.zeros(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must be .* spatial size \\(8, 8\\)"):
        aug(torch.rand(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="p_flip must be a probability"):
        RandomAffine(p_flip=1.5)
    with pytest.raises(ValueError, match="scale factors must stay > 0"):
        RandomAffine(scale=(0.0, 1.2))
    with pytest.raises(ValueError, match="flip_axes must be distinct"):
        RandomAffine(flip_axes=(0, 3))
    with pytest.raises(ValueError, match="low <= high"):
        RandomAffine(rotation_deg=(10, -10))
    with pytest.raises(ValueError, match="mode must be one of"):
        RandomAffine(mode="bicubic")
    with pytest.raises(ValueError, match="include an axis a 2D image does not have"):
        RandomAffine(flip_axes=(2,))(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"needs \(3, 3\) matrices"):
        to_theta(torch.eye(4), (8, 8))
    with pytest.raises(ValueError, match=r"2D shear needs \(\.\.\., 2\)"):
        shear((0.1, 0.2, 0.3), (8, 8))
    with pytest.raises(ValueError, match="nonzero"):
        scaling(0.0, (8, 8))
    with pytest.raises(ValueError, match=r"matrix must be \(k, k\) or \(N=2, k, k\)"):
        apply_affine(torch.rand(2, 1, 8, 8), identity(2, (3,)))


def test_random_translate_still_works():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    out = random_translate(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(random_translate(x, 0), x)
