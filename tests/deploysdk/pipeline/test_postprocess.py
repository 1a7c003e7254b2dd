import math

import numpy as np
import pytest

from deploysdk.errors import InputError
from deploysdk.pipeline.postprocess import fill_holes, label_volumes, largest_component, probabilities, to_labels


# --- probabilities / to_labels --------------------------------------------------------------------------------------
def test_softmax_probabilities_match_the_formula_and_survive_huge_logits():
    x = np.array([[[1.0, 1000.0]], [[2.0, 0.0]], [[0.5, -1000.0]]], np.float32)  # (K=3, 1, 2)
    p = probabilities(x, kind="logits")
    e = np.exp([1.0, 2.0, 0.5])
    np.testing.assert_allclose(p[:, 0, 0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[:, 0, 1], [1.0, 0.0, 0.0], atol=1e-7)  # no overflow to NaN
    assert p.dtype == np.float32 and np.isfinite(p).all()


def test_sigmoid_probabilities():
    x = np.array([[[-2.0, 0.0, 3.0, -800.0]]], np.float32)  # (1, 1, 4)
    p = probabilities(x, kind="sigmoid_logits")
    np.testing.assert_allclose(p[0, 0], [1 / (1 + math.exp(2)), 0.5, 1 / (1 + math.exp(-3)), 0.0], rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_array_equal(probabilities(x[:, :, 1:3] * 0 + 0.3, kind="sigmoid"), np.float32(0.3))


@pytest.mark.parametrize("spatial", [(4, 5), (3, 4, 5)], ids=["2d", "3d"])
def test_argmax_for_exclusive_classes(spatial):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, *spatial)).astype(np.float32)
    labels = to_labels(scores, kind="logits")
    assert labels.shape == spatial and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, scores.argmax(0))
    # softmax probabilities give the same labels as their logits
    np.testing.assert_array_equal(to_labels(probabilities(scores), kind="softmax"), labels)


def test_binary_threshold_on_logits_equals_threshold_on_sigmoid():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 7)).astype(np.float32) * 3
    for t in (0.2, 0.5, 0.9):
        ref = (1 / (1 + np.exp(-x[0].astype(np.float64))) > t).astype(np.uint8)
        np.testing.assert_array_equal(to_labels(x, kind="logits", threshold=t), ref)
        np.testing.assert_array_equal(to_labels(probabilities(x), kind="sigmoid", threshold=t), ref)


def test_multilabel_sigmoid_most_probable_channel_wins():
    p = np.array([[[0.9, 0.2, 0.7, 0.1]],   # channel 0 -> label 1
                  [[0.6, 0.3, 0.8, 0.4]]], np.float32)  # channel 1 -> label 2
    np.testing.assert_array_equal(to_labels(p, kind="sigmoid", threshold=0.5), [[1, 0, 2, 0]])
    np.testing.assert_array_equal(to_labels(p, kind="sigmoid", threshold=0.75), [[1, 0, 2, 0]])
    np.testing.assert_array_equal(to_labels(p, kind="sigmoid", threshold=0.85), [[1, 0, 0, 0]])
    logits = np.log(p / (1 - p))
    np.testing.assert_array_equal(to_labels(logits, kind="sigmoid_logits"), [[1, 0, 2, 0]])


def test_label_dtype_grows_with_the_number_of_classes():
    scores = np.zeros((300, 2, 2), np.float32)
    scores[299] = 1.0
    labels = to_labels(scores)
    assert labels.dtype == np.uint16 and (labels == 299).all()


@pytest.mark.parametrize("scores, kw, match", [
    (np.zeros((2, 3)), {}, r"\(K, y, x\)"),
    (np.zeros((2, 3, 3), np.int64), {}, "floating point"),
    (np.zeros((1, 3, 3)), {"kind": "softmax"}, "one channel"),
    (np.zeros((2, 3, 3)), {"kind": "probs"}, "kind must be one of"),
    (np.zeros((1, 3, 3)), {"threshold": 1.0}, r"in \(0, 1\)"),
    (np.full((2, 3, 3), np.nan), {}, "NaN"),
    ([[0.0]], {}, "numpy array"),
])
def test_to_labels_rejects_bad_input(scores, kw, match):
    with pytest.raises(InputError, match=match):
        to_labels(scores, **kw)


# --- largest_component / fill_holes -------------------------------------------------------------------------------
def _two_islands_2d():
    lab = np.zeros((8, 10), np.uint8)
    lab[1:4, 1:4] = 1    # 9 px, label 1 (kept)
    lab[6, 8] = 1        # 1 px island of label 1 (dropped)
    lab[5:8, 1:3] = 2    # 6 px, label 2 (kept)
    lab[0, 9] = 2        # island of label 2 (dropped)
    return lab


def test_largest_component_per_label_2d():
    lab = _two_islands_2d()
    out = largest_component(lab)
    expected = lab.copy()
    expected[6, 8] = expected[0, 9] = 0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == lab.dtype and lab[6, 8] == 1, "a copy; the input is untouched"
    only2 = largest_component(lab, label=2)
    assert only2[6, 8] == 1 and only2[0, 9] == 0


def test_connectivity_decides_whether_diagonal_voxels_touch():
    lab = np.zeros((3, 5, 5), np.uint8)
    lab[0, 0:2, 0:2] = 1     # 4 voxels
    lab[1, 2, 2] = 1         # touches the block only at a corner
    lab[2, 3:5, 3:5] = 1     # touches (1, 2, 2) only at a corner; 4 voxels
    faces = largest_component(lab, connectivity=1)
    assert faces.sum() == 4 and faces[0, 0, 0] == 1 and faces[2, 4, 4] == 0, "tie: first in raster order kept"
    np.testing.assert_array_equal(largest_component(lab, connectivity=3), lab)  # one 9-voxel piece
    np.testing.assert_array_equal(largest_component(lab), lab)  # None = full connectivity (ndim)


def test_largest_component_foreground_as_one():
    lab = np.zeros((6, 6), np.uint8)
    lab[0:3, 0:3] = 1
    lab[1, 3] = 2            # a tumour touching its organ survives
    lab[5, 5] = 1            # an island goes
    out = largest_component(lab, label=None, connectivity=1)
    assert out[1, 3] == 2 and out[5, 5] == 0 and (out[0:3, 0:3] == 1).all()


def test_largest_component_bool_and_errors():
    m = np.zeros((4, 4), bool)
    m[0, 0] = m[2:4, 2:4] = True
    out = largest_component(m)
    assert out.dtype == bool and out.sum() == 4 and not out[0, 0]
    with pytest.raises(InputError, match="connectivity"):
        largest_component(m, connectivity=3)
    with pytest.raises(InputError, match="integer"):
        largest_component(m.astype(np.float32))
    with pytest.raises(InputError, match="positive ints"):
        largest_component(m.astype(np.uint8), label=[0])


def test_fill_holes_fills_background_only():
    lab = np.zeros((7, 7), np.uint8)
    lab[1:6, 1:6] = 1
    lab[3, 3] = 0            # a hole
    lab[2, 2] = 2            # another label inside: stays
    lab[4, 4:6] = 0          # a bay open to the outside through (4, 6)
    out = fill_holes(lab)
    assert out[3, 3] == 1 and out[2, 2] == 2
    assert out[4, 4] == 0 and out[4, 5] == 0, "background connected to the outside is not a hole"
    assert out.dtype == np.uint8 and (out != lab).sum() == 1


def test_fill_holes_3d_needs_a_closed_cavity():
    cube = np.zeros((5, 5, 5), np.uint8)
    cube[1:4, 1:4, 1:4] = 3
    cube[2, 2, 2] = 0
    assert fill_holes(cube)[2, 2, 2] == 3
    cube[2, 2, :] = 0        # a tunnel open on both ends along x: not a 3D hole
    assert fill_holes(cube)[2, 2, 2] == 0


# --- label_volumes ------------------------------------------------------------------------------------------------
def test_label_volumes_3d_in_ml():
    lab = np.zeros((10, 20, 20), np.uint8)
    lab[0:4, 0:10, 0:10] = 1          # 400 voxels
    lab[5, 0:5, 0:2] = 3              # 10 voxels
    vols = label_volumes(lab, (2.5, 0.8, 0.8), names={1: "liver", 2: "spleen"})
    assert list(vols) == ["liver", "spleen", "label_3"]
    assert vols["liver"] == {"label": 1, "voxels": 400, "ml": pytest.approx(400 * 2.5 * 0.64 / 1000)}
    assert vols["spleen"] == {"label": 2, "voxels": 0, "ml": 0.0}
    assert vols["label_3"]["voxels"] == 10 and vols["label_3"]["ml"] == pytest.approx(0.016)


def test_label_volumes_2d_area_and_thickness():
    lab = np.zeros((4, 4), np.uint16)
    lab[:2, :] = 1
    vols = label_volumes(lab, (0.5, 0.5))
    assert vols == {"label_1": {"label": 1, "voxels": 8, "ml": None, "mm2": 2.0}}
    assert label_volumes(lab, (0.5, 0.5, 4.0))["label_1"]["ml"] == pytest.approx(8 * 0.25 * 4 / 1000)
    named = label_volumes(lab, (1, 1), names=["background", "lesion"])
    assert list(named) == ["background", "lesion"] and named["background"]["voxels"] == 8


@pytest.mark.parametrize("spacing, names, match", [
    ((1.0, 1.0), None, "needs 3"),
    ((1.0, -1.0, 1.0), None, "positive"),
    ((1.0, 1.0, 1.0), {1: "a", 2: "a"}, "unique"),
    ((1.0, 1.0, 1.0), "liver", "names must be"),
])
def test_label_volumes_rejects_bad_input(spacing, names, match):
    with pytest.raises(InputError, match=match):
        label_volumes(np.zeros((2, 2, 2), np.uint8), spacing, names)
    with pytest.raises(InputError, match=">= 0"):
        label_volumes(np.full((2, 2), -1, np.int32), (1, 1))
