"""Segmentation phantoms: contract, label/intensity consistency, configuration."""
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from trainsdk.data import PHANTOM_CLASSES, PhantomConfig, make_phantoms


@pytest.fixture(scope="module")
def phantoms2d():
    return make_phantoms(48, size=(96, 96), seed=0)


def test_contract_2d(phantoms2d):
    p = phantoms2d
    assert p.images.shape == (48, 1, 96, 96) and p.images.dtype == np.float32
    assert p.masks.shape == (48, 96, 96) and p.masks.dtype == np.int64
    assert set(np.unique(p.masks)) == {0, 1, 2}
    assert p.class_names == PHANTOM_CLASSES == ("background", "organ", "lesion") and p.num_classes == 3
    assert p.spacing == (1.0, 1.0)
    assert 0.0 <= p.images.min() and p.images.max() <= 1.0
    assert p.lesion_counts.dtype == np.int64 and set(np.unique(p.lesion_counts)) <= {0, 1, 2, 3}
    assert len(set(p.lesion_counts.tolist())) == 4  # all counts 0..3 occur in 48 draws


def test_masks_agree_with_lesion_counts_and_organs(phantoms2d):
    p = phantoms2d
    has_lesion = p.lesion_masks.reshape(len(p), -1).any(1)
    np.testing.assert_array_equal(has_lesion, p.lesion_counts > 0)
    assert p.organ_masks.reshape(len(p), -1).any(1).all()
    np.testing.assert_array_equal(p.organ_masks, p.masks >= 1)


def test_labels_match_intensities(phantoms2d):
    """Each label is its own intensity population: what a segmentation network has to learn."""
    p = phantoms2d
    deviations = []
    for img, mask in zip(p.images[:, 0], p.masks):
        organ, background = img[mask == 1], img[mask == 0]
        assert organ.mean() - background.mean() > 0.15  # organ brighter than body and air
        components, count = ndimage.label(mask == 2)
        for k in range(1, count + 1):
            lesion = components == k
            ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion) & (mask == 1)
            if ring.sum() < 10:
                continue
            level, spread = img[ring].mean(), np.abs(img[ring] - img[ring].mean()).mean()
            # hypo- or hyper-dense: lesion pixels sit away from the organ around them, beyond its noise and texture
            deviations.append(np.abs(img[lesion] - level).mean() / spread)
    assert len(deviations) > 30 and min(deviations) > 1.5


def test_3d_and_spacing():
    p = make_phantoms(3, size=(32, 48, 48), seed=2, config=PhantomConfig(spacing=(2.5, 0.8, 0.8)))
    assert p.images.shape == (3, 1, 32, 48, 48) and p.masks.shape == (3, 32, 48, 48)
    assert p.spacing == (2.5, 0.8, 0.8)
    assert (p.masks == 1).reshape(3, -1).any(1).all()
    cube = make_phantoms(1, size=32, ndim=3, seed=0)
    assert cube.images.shape == (1, 1, 32, 32, 32)


def test_healthy_phantoms_and_one_organ():
    healthy = make_phantoms(8, size=(64, 64), seed=1, config=PhantomConfig(lesions=(0, 0), organs=(1, 1)))
    assert not (healthy.masks == 2).any() and np.all(healthy.lesion_counts == 0)
    assert all(ndimage.label(m == 1)[1] == 1 for m in healthy.masks)  # one organ: one connected component
    two = make_phantoms(8, size=(64, 64), seed=1, config=PhantomConfig(lesions=(0, 0), organs=(2, 2)))
    assert all(ndimage.label(m == 1)[1] == 2 for m in two.masks)


def test_noise_kinds_and_bias_field():
    cfg = dict(lesions=(0, 0), organs=(1, 1), bias_strength=0.0, texture_std=0.0)
    clean = make_phantoms(4, size=(64, 64), seed=5, config=PhantomConfig(noise="none", **cfg))
    noisy = make_phantoms(4, size=(64, 64), seed=5, config=PhantomConfig(noise="gaussian", noise_std=(0.05, 0.05),
                                                                          **cfg))
    rician = make_phantoms(4, size=(64, 64), seed=5, config=PhantomConfig(noise="rician", noise_std=(0.05, 0.05),
                                                                          **cfg))
    corner = np.zeros((64, 64), bool)
    corner[:4, :4] = corner[:4, -4:] = corner[-4:, :4] = corner[-4:, -4:] = True  # outside any body ellipse
    air = (slice(None), 0, corner)
    np.testing.assert_allclose(clean.images[air], 0.02, atol=1e-3)
    # Rician: the magnitude of (0.02 + n1, n2), a Rice distribution; Gaussian: N(0.02, 0.05) clipped at 0
    rng = np.random.default_rng(0)
    n1, n2 = rng.normal(0, 0.05, (2, 200_000))
    rice_mean, clipped_mean = np.hypot(0.02 + n1, n2).mean(), np.clip(0.02 + n1, 0, None).mean()
    assert rician.images[air].mean() == pytest.approx(rice_mean, abs=0.01)
    assert noisy.images[air].mean() == pytest.approx(clipped_mean, abs=0.01)
    shaded = make_phantoms(4, size=(64, 64), seed=5, config=PhantomConfig(
        noise="none", **{**cfg, "bias_strength": 0.3}))
    organ = clean.masks == 1
    ratio = shaded.images[:, 0][organ] / clean.images[:, 0][organ]
    assert ratio.min() >= np.exp(-0.3) - 1e-4 and ratio.max() <= np.exp(0.3) + 1e-4 and ratio.std() > 0.02


def test_polarity():
    for polarity, sign in (("hypo", -1), ("hyper", 1)):
        p = make_phantoms(6, size=(64, 64), seed=3, config=PhantomConfig(
            lesions=(1, 1), lesion_polarity=polarity, noise="none", bias_strength=0.0))
        for img, mask in zip(p.images[:, 0], p.masks):
            assert sign * (img[mask == 2].mean() - img[mask == 1].mean()) > 0.1


def test_deterministic_by_seed(phantoms2d):
    again = make_phantoms(48, size=(96, 96), seed=0)
    np.testing.assert_array_equal(again.images, phantoms2d.images)
    np.testing.assert_array_equal(again.masks, phantoms2d.masks)
    assert not np.array_equal(make_phantoms(48, size=(96, 96), seed=1).masks, phantoms2d.masks)


def test_split_and_dataloader(phantoms2d):
    train, test = phantoms2d.split(0.25, seed=0)
    assert len(train) + len(test) == 48 and len(test) == 12
    assert set(train.lesion_counts > 0) == set(test.lesion_counts > 0) == {False, True}
    x, y = next(iter(torch.utils.data.DataLoader(test.dataset(), batch_size=4)))
    assert x.shape == (4, 1, 96, 96) and y.shape == (4, 96, 96) and y.dtype == torch.int64


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, ValueError, "n must be >= 1"),
    ({"size": (16, 16)}, ValueError, "at least 32"),
    ({"size": 64}, ValueError, "also give ndim"),
    ({"config": PhantomConfig(lesions=(0, 4))}, ValueError, r"lesions must lie in \[0, 3\]"),
    ({"config": PhantomConfig(organs=(0, 1))}, ValueError, r"organs must lie in \[1, 2\]"),
    ({"config": PhantomConfig(lesions=(0.5, 2))}, TypeError, "integer ranges"),
    ({"config": PhantomConfig(noise="speckle")}, ValueError, "noise must be 'gaussian', 'rician' or 'none'"),
    ({"config": PhantomConfig(lesion_polarity="dark")}, ValueError, "lesion_polarity must be"),
    ({"config": PhantomConfig(spacing=(1.0,))}, ValueError, "spacing must be 2 positive numbers"),
    ({"config": PhantomConfig(lesion_radius=(0.05, 0.3))}, ValueError, "lesion_radius must lie in"),
])
def test_bad_arguments_name_what_was_wrong(kwargs, error, match):
    args = {"n": 2, "size": (48, 48), **kwargs}
    with pytest.raises(error, match=match):
        make_phantoms(**args)


def test_generation_is_fast():
    make_phantoms(4, size=(64, 64), seed=0)
    start = time.perf_counter()
    make_phantoms(512, size=(64, 64), seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 4.0, f"512 64x64 phantoms took {elapsed:.2f} s (budget: well under 2 s on a quiet core)"
