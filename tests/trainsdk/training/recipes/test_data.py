import numpy as np
import pytest
import torch

from trainsdk.data import load_digits
from trainsdk.data.arrays import ArrayDataset
from trainsdk.training.recipes import resolve_data, stratified_subset


def test_stratified_subset_is_exact_balanced_and_seeded():
    strata = np.repeat([0, 1, 2], [10, 30, 60])
    idx = stratified_subset(strata, 100, 12, seed=3)
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    assert np.bincount(strata[idx]).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(idx, stratified_subset(strata, 100, 12, seed=3))
    assert not np.array_equal(idx, stratified_subset(strata, 100, 12, seed=4))
    # a class that runs out leaves the turn to the others
    assert np.bincount(strata[stratified_subset(strata, 100, 40, seed=0)]).tolist() == [10, 15, 15]


@pytest.mark.parametrize("n, match", [(0, "positive integer"), (101, "only 100 samples"), (2.5, "positive integer")])
def test_stratified_subset_errors(n, match):
    with pytest.raises(ValueError, match=match):
        stratified_subset(None, 100, n, seed=0)


def test_digits_splits_and_preprocessing_scale():
    s = resolve_data("digits", {"size": 32}, "classification", train_samples=50, val_fraction=0.2, seed=0)
    ref = load_digits(size=32, seed=0)
    assert (s.num_classes, s.in_channels, s.spatial_shape) == (10, 1, (32, 32))
    assert len(s.train) + len(s.val) == 50 and len(s.test) == len(ref.x_test)
    # the recorded scale maps raw 0..16 pixels to what the model saw: (p - offset) / divisor
    offset, divisor = s.preprocessing["scale"]
    raw = torch.tensor([0.0, 16.0])
    expected = (raw / 16 - ref.mean) / ref.std
    torch.testing.assert_close((raw - offset) / divisor, expected)


def test_phantoms_int_size_means_2d_and_spacing_is_kept():
    s = resolve_data("phantoms", {"n": 10, "size": 32}, "segmentation", seed=0)
    assert s.spatial_shape == (32, 32) and s.spacing == (1.0, 1.0)
    assert s.class_names == ("background", "organ", "lesion") and s.num_classes == 3
    x, y = s.train[0]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64


def test_lesions_segmentation_uses_lesion_masks():
    s = resolve_data("lesions", {"n_per_class": 4, "size": 32}, "segmentation", seed=0)
    assert s.class_names == ("background", "lesion")
    assert int(torch.stack([s.train[i][1] for i in range(len(s.train))]).max()) == 1


@pytest.mark.parametrize("name, task, match", [("phantoms", "classification", "segmentation dataset"),
                                               ("digits", "segmentation", "classification dataset")])
def test_task_mismatch_is_refused(name, task, match):
    with pytest.raises(ValueError, match=match):
        resolve_data(name, {}, task)


def test_unknown_dataset_and_argument():
    with pytest.raises(KeyError, match="did you mean 'digits'"):
        resolve_data("digit", {}, "classification")
    with pytest.raises(TypeError, match="unexpected argument"):
        resolve_data("digits", {"sise": 32}, "classification")


def test_a_dataset_is_split_by_test_fraction():
    images = torch.randn(40, 1, 8, 8)
    labels = torch.arange(40) % 4
    s = resolve_data(ArrayDataset(images, labels), None, "classification", test_fraction=0.25, seed=1)
    assert (len(s.train), len(s.test), s.num_classes, s.in_channels) == (30, 10, 4, 1)
    seen = sorted(int(s.train.indices[i]) for i in range(30)) + sorted(int(i) for i in s.test.indices)
    assert sorted(seen) == list(range(40))
    with pytest.raises(ValueError, match="data_kwargs"):
        resolve_data(ArrayDataset(images, labels), {"n": 3}, "classification")
    with pytest.raises(ValueError, match="test_fraction"):
        resolve_data(ArrayDataset(images, labels), None, "classification", test_fraction=1.0)
