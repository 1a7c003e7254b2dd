"""load_builtin by name, and the ArrayDataset that feeds the generated sets to a DataLoader."""
import numpy as np
import pytest
import torch

import trainsdk.data as data
from trainsdk.data import ArrayDataset, DigitsSplit, LesionSet, PhantomSet, UnknownDatasetError, load_builtin


def test_names_and_loaders():
    assert data.list_builtin() == ["digits", "lesions", "phantoms"]
    assert {n: e.task for n, e in data.BUILTIN_DATASETS.items()} == {
        "digits": "classification", "lesions": "classification", "phantoms": "segmentation"}
    assert isinstance(load_builtin("digits", size=8), DigitsSplit)
    lesions = load_builtin("lesions", n_per_class=2, size=32, seed=4)
    assert isinstance(lesions, LesionSet) and len(lesions) == 6
    np.testing.assert_array_equal(lesions.images, data.make_lesion_classification(2, 32, seed=4).images)
    phantoms = load_builtin("phantoms", n=2, size=(32, 32))
    assert isinstance(phantoms, PhantomSet) and phantoms.masks.shape == (2, 32, 32)


def test_unknown_name_and_argument():
    with pytest.raises(UnknownDatasetError, match="unknown built-in dataset 'lesion'; did you mean 'lesions'"):
        load_builtin("lesion")
    with pytest.raises(KeyError):  # a KeyError, for callers that catch that
        load_builtin("mnist")
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['n'\]; accepted: \['n_per_class', 'size'"):
        load_builtin("lesions", n=3)


def test_array_dataset():
    images = np.arange(24, dtype=np.float32).reshape(3, 1, 2, 4)
    masks = np.zeros((3, 2, 4), bool)
    masks[1, 0, 0] = True
    ds = ArrayDataset(images, masks)
    x, y = ds[1]
    assert len(ds) == 3 and torch.equal(x, torch.from_numpy(images[1])) and y.dtype == torch.int64 and y[0, 0] == 1
    flipped = ArrayDataset(images, masks, transform=lambda im, t: (im.flip(-1), t.flip(-1)))
    assert flipped[1][1][0, -1] == 1 and flipped[1][0][0, 0, 0] == images[1, 0, 0, -1]
    assert ArrayDataset(torch.ones(2, 3))[0].shape == (3,)
    with pytest.raises(ValueError, match="same length, got 3 images and 2 targets"):
        ArrayDataset(images, masks[:2])
    with pytest.raises(TypeError, match="images must be a numpy array or a torch tensor, got list"):
        ArrayDataset([[1.0]])
    with pytest.raises(ValueError, match=r"images must be \(N, C, \*spatial\)"):
        ArrayDataset(np.zeros(3))


def test_split_indices_are_stratified_and_disjoint():
    strata = np.repeat([0, 1, 2], [10, 20, 30])
    train, test = data.split_indices(strata, 0.1, seed=0)
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == 60
    assert np.bincount(strata[test]).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="test_fraction must be in"):
        data.split_indices(strata, 1.0, seed=0)
