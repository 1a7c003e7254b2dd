"""Tiled inference: exact stitching for shift-invariant models, overlap-tile for valid-convolution outputs, any
predictor (callable or Runtime), bounded batches, clear errors."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploysdk import Runtime
from deploysdk.errors import InputError
from deploysdk.pipeline import TileConfig, TiledInferer, importance_map, window_starts


def _box_valid(batch: np.ndarray, k: int = 3) -> np.ndarray:
    """A k x k (x k) mean filter without padding: output smaller by k // 2 on each side, like a valid conv."""
    nd, b = batch.ndim - 2, k // 2
    out_shape = batch.shape[:2] + tuple(s - 2 * b for s in batch.shape[2:])
    out = np.zeros(out_shape, np.float32)
    for offs in np.ndindex(*(k,) * nd):
        out += batch[(Ellipsis,) + tuple(slice(o, o + n) for o, n in zip(offs, out_shape[2:]))]
    return out / k ** nd


def test_window_starts_cover_the_axis():
    assert window_starts(10, 16, 0.5) == [0]
    assert window_starts(16, 16, 0.5) == [0]
    starts = window_starts(100, 32, 0.25)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_importance_map_is_cached_positive_and_peaked():
    w = importance_map((9, 12), "gaussian", 0.125)
    assert w is importance_map((9, 12), "gaussian", 0.125)
    assert w.max() == pytest.approx(1.0) and w.min() > 0 and not w.flags.writeable
    assert w[4, 5] > w[0, 0]
    assert np.all(importance_map((4, 4, 4), "constant") == 1)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("shape,roi", [((1, 50, 37), (16, 16)), ((2, 10, 12), (16, 16)), ((1, 9, 20, 17), (8, 8, 8))])
def test_identity_model_reconstructs_the_image(blend, shape, roi):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out = TiledInferer(lambda b: b, TileConfig(roi_size=roi, blend=blend, overlap=0.5))(image)
    np.testing.assert_allclose(out, image, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,roi", [((1, 45, 61), (20, 24)), ((1, 19, 23, 21), (10, 9, 12))])
def test_valid_conv_overlap_tile_equals_whole_image_on_mirror_padding(shape, roi):
    """Each output pixel sees the same context whatever tile it came from, so stitching is exact."""
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    inferer = TiledInferer(_box_valid, TileConfig(roi_size=roi, overlap=0.3, batch_size=3))
    out = inferer(image)
    assert out.shape == image.shape
    assert inferer.border_for(tuple(roi), 1) == (1,) * len(roi)  # measured with one probe
    expected = _box_valid(np.pad(image, [(0, 0)] + [(1, 1)] * (image.ndim - 1), mode="reflect")[None])[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_progress_and_batching():
    calls, seen = [], []
    def model(batch):
        seen.append(batch.shape[0])
        return batch
    image = np.zeros((1, 64, 64), np.float32)
    TiledInferer(model, TileConfig(roi_size=(16, 16), overlap=0.0, batch_size=5, border=0),
                 progress=lambda d, t: calls.append((d, t)))(image)
    assert calls[-1] == (16, 16) and len(calls) == 4 and max(seen) == 5


def _conv_onnx(path, fixed_batch=None):
    """A valid 3x3 mean-filter Conv as ONNX: output smaller by 1 pixel on each side."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [fixed_batch or "N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [fixed_batch or "N", 1, "h", "w"])
    w = numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"])], "box", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("fixed_batch", [None, 2])
def test_runtime_predictor(tmp_path, fixed_batch):
    path = _conv_onnx(str(tmp_path / "box.onnx"), fixed_batch)
    image = np.random.default_rng(2).normal(size=(1, 33, 47)).astype(np.float32)
    with Runtime(path, backend="onnxruntime") as rt:
        out = TiledInferer(rt, roi_size=(16, 16), batch_size=3)(image)
    expected = _box_valid(np.pad(image, [(0, 0), (1, 1), (1, 1)], mode="reflect")[None])[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_errors_name_what_was_wrong(tmp_path):
    with pytest.raises(InputError, match="overlap"):
        TiledInferer(lambda b: b, overlap=1.0)
    with pytest.raises(InputError, match="pad_mode"):
        TiledInferer(lambda b: b, pad_mode="wrap")
    with pytest.raises(InputError, match=r"\(C, H, W\)"):
        TiledInferer(lambda b: b, roi_size=(8, 8))(np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="roi_size"):
        TiledInferer(lambda b: b, roi_size=(8, 8))(np.zeros((1, 8, 8, 8), np.float32))
    with pytest.raises(InputError, match="roi_size is needed"):
        TiledInferer(lambda b: b)(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(InputError, match="expected"):
        TiledInferer(lambda b: b[..., :-1, :], roi_size=(8, 8), border=0)(np.zeros((1, 20, 20), np.float32))
    with pytest.raises(InputError, match="smaller by the same border"):
        TiledInferer(lambda b: b[..., :-1, :], roi_size=(8, 8))(np.zeros((1, 20, 20), np.float32))
    with pytest.raises(InputError, match="NaN"):
        TiledInferer(lambda b: b * np.nan, roi_size=(8, 8))(np.ones((1, 20, 20), np.float32))
    with pytest.raises(InputError, match="callable"):
        TiledInferer(42)
