"""Dice/IoU against hand counts; Hausdorff distances against geometry and a brute-force surface reference."""
import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from trainsdk.metrics import dice_score, hausdorff_distance, hausdorff_distance_95, iou_score, surface_distances


def _concentric(ndim, size=16, inner=(6, 10), outer=(3, 13)):
    """Two cubes/squares sharing a centre; the outer one ``m = 3`` voxels larger on every side."""
    a, b = np.zeros((size,) * ndim, bool), np.zeros((size,) * ndim, bool)
    a[(slice(*inner),) * ndim] = True
    b[(slice(*outer),) * ndim] = True
    return a, b


def _brute_surface_distances(a, b, spacing):
    """Reference: surface = mask voxel with a face neighbour outside the mask or the image; all-pairs distances."""
    def surface(m):
        padded = np.pad(m, 1)
        core = tuple(slice(1, -1) for _ in range(m.ndim))
        edge = np.zeros_like(m)
        for ax, step in itertools.product(range(m.ndim), (-1, 1)):
            edge |= ~np.roll(padded, step, axis=ax)[core]
        return np.argwhere(m & edge) * np.asarray(spacing)

    pa, pb = surface(a), surface(b)
    d = cdist(pa, pb)
    return d.min(1), d.min(0)


def test_dice_and_iou_per_class_hand_counted():
    target = np.array([[0, 0, 1, 1],
                       [0, 2, 2, 1],
                       [0, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 1, 1],
                     [0, 0, 2, 0]])
    # class 0: |P|=5 |T|=5 inter 4; class 1: |P|=5 |T|=3 inter 3; class 2: |P|=2 |T|=4 inter 2
    np.testing.assert_allclose(dice_score(pred, target), [8 / 10, 6 / 8, 4 / 6])
    np.testing.assert_allclose(iou_score(pred, target), [4 / 6, 3 / 5, 2 / 4])
    dice, iou = dice_score(pred, target), iou_score(pred, target)
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou))  # the identity between the two
    np.testing.assert_allclose(dice_score(torch.tensor(pred), torch.tensor(target)), dice)


def test_dice_3d_and_boolean_masks():
    a, b = _concentric(3)
    inner, outer = 4 ** 3, 10 ** 3
    assert dice_score(a, b) == pytest.approx(2 * inner / (inner + outer))  # bool masks: foreground float
    assert iou_score(a, b) == pytest.approx(inner / outer)
    per_class = dice_score(a.astype(np.int64), 2 * b.astype(np.int64), num_classes=3)
    assert per_class[1] == 0.0 and per_class[2] == 0.0  # class 1 only in pred, class 2 only in target


def test_empty_vs_empty_convention():
    pred = np.zeros((4, 4), np.int64)
    target = np.zeros((4, 4), np.int64)
    target[0, 0] = 1
    np.testing.assert_allclose(dice_score(pred, pred, num_classes=2), [1.0, 1.0])  # default: 1.0
    got = dice_score(pred, pred, num_classes=2, empty_value=float("nan"))
    assert got[0] == 1.0 and np.isnan(got[1])
    assert dice_score(pred, target)[1] == 0.0 and iou_score(pred, target)[1] == 0.0  # one side empty: 0


@pytest.mark.parametrize("ndim", [2, 3])
def test_hausdorff_concentric_analytic(ndim):
    a, b = _concentric(ndim)
    m = 3
    d_ab, d_ba = surface_distances(a, b)
    np.testing.assert_allclose(d_ab, m)  # every inner surface voxel is m straight out from the outer surface
    assert d_ba.max() == pytest.approx(m * np.sqrt(ndim))  # outer corner to inner corner
    assert hausdorff_distance(a, b) == pytest.approx(m * np.sqrt(ndim))
    assert hausdorff_distance(a, b, method="max") == pytest.approx(m * np.sqrt(ndim))
    hd95 = hausdorff_distance_95(a, b)
    assert hd95 == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    assert m <= hd95 < m * np.sqrt(ndim)
    assert hausdorff_distance_95(a, b, method="max") == pytest.approx(max(m, np.percentile(d_ba, 95)))


@pytest.mark.parametrize("spacing", [(2.0, 0.5), (1.5, 1.0, 3.0)])
def test_hausdorff_anisotropic_spacing(spacing):
    a, b = _concentric(len(spacing))
    m = 3
    assert hausdorff_distance(a, b, spacing=spacing) == pytest.approx(m * np.linalg.norm(spacing))
    ref_ab, ref_ba = _brute_surface_distances(a, b, spacing)
    assert hausdorff_distance_95(a, b, spacing=spacing) == pytest.approx(
        np.percentile(np.concatenate([ref_ab, ref_ba]), 95))
    assert hausdorff_distance_95(a, b, spacing=spacing, method="max") == pytest.approx(
        max(np.percentile(ref_ab, 95), np.percentile(ref_ba, 95)))


def test_hausdorff_irregular_shapes_match_brute_force():
    rng = np.random.default_rng(0)
    grid = np.indices((20, 18, 14)).astype(float)
    centre = np.array([9.0, 8.0, 6.0])[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    a = r < 6 + rng.random(r.shape)
    b = (r < 5.5) | (grid[0] > 17)  # touches the image border: border voxels are surface
    spacing = (0.8, 1.0, 2.5)
    ref_ab, ref_ba = _brute_surface_distances(a, b, spacing)
    d_ab, d_ba = surface_distances(a, b, spacing=spacing)
    np.testing.assert_allclose(np.sort(d_ab), np.sort(ref_ab))
    np.testing.assert_allclose(np.sort(d_ba), np.sort(ref_ba))
    assert hausdorff_distance_95(torch.tensor(a), torch.tensor(b), spacing=spacing) == pytest.approx(
        np.percentile(np.concatenate([ref_ab, ref_ba]), 95))


def test_hausdorff_identical_and_empty_masks():
    a, _ = _concentric(2)
    empty = np.zeros_like(a)
    assert hausdorff_distance_95(a, a) == 0.0
    assert np.isnan(hausdorff_distance_95(empty, empty))
    assert hausdorff_distance_95(a, empty) == np.inf and hausdorff_distance_95(empty, a) == np.inf


@pytest.mark.parametrize("call, exc, match", [
    (lambda: dice_score(np.zeros((2, 3), int), np.zeros((3, 2), int)), ValueError, "same shape"),
    (lambda: dice_score(np.array([0, 3]), np.array([0, 1]), num_classes=3), ValueError, "label 3 found"),
    (lambda: dice_score(np.array([0.5, 1.0]), np.array([0, 1])), ValueError, "integer class labels"),
    (lambda: hausdorff_distance(np.array([[0, 2]]), np.array([[0, 1]])), ValueError, "labels == k"),
    (lambda: hausdorff_distance(np.ones((3, 3)), np.ones((3, 3)), spacing=(1, 1, 1)), ValueError, "2 numbers"),
    (lambda: hausdorff_distance(np.ones((3, 3)), np.ones((3, 3)), spacing=(1, 0)), ValueError, "> 0"),
    (lambda: hausdorff_distance(np.ones((3, 3)), np.ones((3, 3)), method="mean"), ValueError, "method"),
    (lambda: hausdorff_distance(np.ones((3, 3)), np.ones((3, 3)), percentile=101), ValueError, "percentile"),
])
def test_errors_name_the_problem(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
