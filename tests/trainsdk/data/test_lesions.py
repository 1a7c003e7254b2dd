"""Synthetic lesion classification: contract, determinism, and that the three types differ where they should."""
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from trainsdk.data import (HEALTHY, LESION_CLASSES, LesionConfig, make_healthy, make_lesion_classification)


@pytest.fixture(scope="module")
def lesions2d():
    return make_lesion_classification(n_per_class=60, size=64, seed=0)


def test_contract_2d(lesions2d):
    s = lesions2d
    assert s.images.shape == (180, 1, 64, 64) and s.images.dtype == np.float32
    assert s.labels.shape == (180,) and s.labels.dtype == np.int64
    assert s.lesion_masks.shape == s.organ_masks.shape == (180, 64, 64)
    assert s.lesion_masks.dtype == s.organ_masks.dtype == np.bool_
    assert s.class_names == LESION_CLASSES == ("cyst", "metastasis", "hemangioma")
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    assert set(np.unique(s.labels)) == {0, 1, 2}
    assert s.class_counts() == {"cyst": 60, "metastasis": 60, "hemangioma": 60}
    assert not np.all(s.labels[:60] == s.labels[0])  # shuffled, not in class blocks


def test_contract_3d_and_rectangular_sizes():
    s = make_lesion_classification(n_per_class=2, size=32, ndim=3, seed=1)
    assert s.images.shape == (6, 1, 32, 32, 32) and s.lesion_masks.shape == (6, 32, 32, 32)
    assert s.lesion_masks.reshape(6, -1).any(1).all()
    r = make_lesion_classification(n_per_class=1, size=(48, 64), seed=1)
    assert r.images.shape == (3, 1, 48, 64)


def test_every_lesion_is_inside_its_organ_and_visible(lesions2d):
    s = lesions2d
    areas = s.lesion_masks.reshape(len(s), -1).sum(1)
    assert areas.min() >= 20  # lesion_radius >= 0.09 * 64 gives ~5 px radius: never a speck
    assert np.all(s.lesion_masks <= s.organ_masks)
    ratios = []
    for img, lesion, organ in zip(s.images[:, 0], s.lesion_masks, s.organ_masks):
        parenchyma = img[organ & ~ndimage.binary_dilation(lesion, iterations=2)]
        level = parenchyma.mean()
        # lesion pixels deviate from the organ's mean level more than the organ's own texture, noise and shading do
        ratios.append(np.abs(img[lesion] - level).mean() / np.abs(parenchyma - level).mean())
    assert min(ratios) > 1.2 and np.median(ratios) > 2.0


def _stats(img, lesion, organ):
    core = ndimage.binary_erosion(lesion, iterations=2)
    shell = lesion & ~core
    ring = ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesion, iterations=1) & organ
    organ_mean = img[ring].mean()
    return {"contrast": img[lesion].mean() - organ_mean,  # cyst: clearly darkest
            "core_std": img[core].std(),  # cyst: homogeneous
            "rim_minus_core": img[shell].mean() - img[core].mean(),  # metastasis: target sign
            "bright_spots": np.percentile(img[lesion], 98) - organ_mean}  # hemangioma: nodules


def test_the_three_types_differ_in_the_statistic_that_defines_them(lesions2d):
    s = lesions2d
    stats = [_stats(i, l, o) for i, l, o in zip(s.images[:, 0], s.lesion_masks, s.organ_masks)]
    mean = {k: np.array([np.mean([st[k] for st, y in zip(stats, s.labels) if y == c]) for c in range(3)])
            for k in stats[0]}
    sem = {k: np.array([np.std([st[k] for st, y in zip(stats, s.labels) if y == c]) / np.sqrt(60) for c in range(3)])
           for k in stats[0]}

    def clearly_highest(key, cls, sign=1):
        others = [c for c in range(3) if c != cls]
        gap = sign * (mean[key][cls] - mean[key][others])
        assert np.all(gap > 3 * np.hypot(sem[key][cls], sem[key][others])), (key, mean[key], sem[key])

    clearly_highest("contrast", 0, sign=-1)  # cyst darkest
    clearly_highest("core_std", 0, sign=-1)  # cyst most homogeneous
    clearly_highest("rim_minus_core", 1)  # metastasis: bright rim around a dark core
    clearly_highest("bright_spots", 2)  # hemangioma: brightest nodules
    assert mean["contrast"][0] < 0 and mean["rim_minus_core"][1] > 0 and mean["bright_spots"][2] > 0


def test_deterministic_by_seed_and_seed_matters():
    a = make_lesion_classification(n_per_class=5, size=32, seed=7)
    b = make_lesion_classification(n_per_class=5, size=32, seed=7)
    c = make_lesion_classification(n_per_class=5, size=32, seed=8)
    for field in ("images", "labels", "lesion_masks", "organ_masks"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.images, c.images)


def test_global_rng_state_is_untouched():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    make_lesion_classification(n_per_class=2, size=32, seed=0)
    assert np.random.random() == before


def test_healthy_images_share_the_class_list_and_have_no_lesion():
    h = make_healthy(6, size=32, seed=3)
    assert h.class_names == LESION_CLASSES + (HEALTHY,) and np.all(h.labels == 3)
    assert not h.lesion_masks.any() and h.organ_masks.reshape(6, -1).any(1).all()
    with_healthy = make_lesion_classification(n_per_class=6, size=32, seed=3, include_healthy=True)
    assert with_healthy.num_classes == 4 and with_healthy.class_counts()["healthy"] == 6
    # same seed stream per class: the healthy part is exactly make_healthy's images, in another order
    mine = with_healthy.images[with_healthy.labels == 3]
    key = lambda x: np.argsort(x.reshape(len(x), -1).sum(1))  # noqa: E731
    np.testing.assert_array_equal(mine[key(mine)], h.images[key(h.images)])
    # and the lesion classes do not change when healthy images are added
    plain = make_lesion_classification(n_per_class=6, size=32, seed=3)
    cysts = lambda s: s.images[s.labels == 0]  # noqa: E731
    np.testing.assert_array_equal(np.sort(cysts(plain).sum((1, 2, 3))), np.sort(cysts(with_healthy).sum((1, 2, 3))))


def test_split_is_stratified_and_dataset_feeds_a_dataloader(lesions2d):
    train, test = lesions2d.split(0.25, seed=0)
    assert len(train) == 135 and len(test) == 45
    assert test.class_counts() == {"cyst": 15, "metastasis": 15, "hemangioma": 15}
    loader = torch.utils.data.DataLoader(test.dataset(), batch_size=8)
    x, y = next(iter(loader))
    assert x.shape == (8, 1, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    xm, m = test.dataset("lesion_mask")[0]
    assert m.shape == (64, 64) and m.dtype == torch.int64 and m.sum() > 0
    with pytest.raises(ValueError, match="target must be one of"):
        test.dataset("bbox")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_per_class": 0}, ValueError, "n_per_class must be >= 1"),
    ({"n_per_class": 2.5}, TypeError, "n_per_class must be an integer"),
    ({"size": 16}, ValueError, "at least 24"),
    ({"ndim": 4}, ValueError, "ndim must be 2 or 3"),
    ({"size": (32, 32, 32, 32)}, ValueError, "2 or 3 axes"),
    ({"size": "64"}, TypeError, "size must be an int or a tuple"),
    ({"config": LesionConfig(lesion_radius=(0.2, 0.1))}, ValueError, r"lesion_radius must have low <= high"),
    ({"config": LesionConfig(lesion_radius=(0.1, 0.25))}, ValueError, "lesions fit in the organ"),
    ({"config": LesionConfig(organ_radius=(0.3, 0.5))}, ValueError, "must stay inside body_radius"),
    ({"config": LesionConfig(noise_std=0.02)}, TypeError, r"noise_std must be a \(low, high\) pair"),
    ({"config": LesionConfig(cyst_contrast=(-0.1, 0.2))}, ValueError, r"cyst_contrast must lie in \[0.0, 1.0\]"),
    ({"config": LesionConfig(bias_strength=2)}, ValueError, "bias_strength must be in"),
])
def test_bad_arguments_name_what_was_wrong(kwargs, error, match):
    args = {"n_per_class": 2, "size": 32, **kwargs}
    with pytest.raises(error, match=match):
        make_lesion_classification(**args)


def test_generation_is_fast():
    make_lesion_classification(n_per_class=4, size=64, seed=0)  # warm-up (imports, FFT plans)
    start = time.perf_counter()
    s = make_lesion_classification(n_per_class=171, size=64, seed=0)  # 513 images
    elapsed = time.perf_counter() - start
    assert len(s) == 513
    assert elapsed < 4.0, f"513 64x64 images took {elapsed:.2f} s (budget: well under 2 s on a quiet core)"
