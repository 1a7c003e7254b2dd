import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from deploysdk import InputError, ModelLoadError
from deploysdk._feeds import as_feeds, rebatch
from deploysdk.export import export_onnx
from deploysdk.optimize import graph_inputs, nonstandard_ops, op_counts
from deploysdk.quantize import (TARGETS, TENSORRT_OPS, AccuracyGateError, QuantSettings, is_quantized,
                                quantize_int8)
from trainsdk.data import load_digits
from trainsdk.models import create_model
from trainsdk.training import fit_classifier


@pytest.fixture(scope="module")
def digits():
    return load_digits(size=32, seed=0)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory, digits):
    """LeNet-5 trained for a few epochs on digits: a model whose accuracy means something."""
    torch.manual_seed(0)
    model = create_model("lenet5_modern", num_classes=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread takes <1 s, two on a busy 2-core machine can take 20 s
    try:
        fit_classifier(model, digits.x_train, digits.y_train, epochs=4, batch_size=64, lr=3e-3)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("lenet") / "lenet5.onnx"
    export_onnx(model, path, metadata={"class_labels": list("0123456789")})
    return os.fspath(path)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    model = create_model("resnet18", num_classes=3, in_channels=1)
    path = tmp_path_factory.mktemp("resnet") / "resnet18.onnx"
    export_onnx(model, path, example_input=model.example_input(2, size=(32, 32)), verify=False)
    return os.fspath(path)


def _calib(digits, n=64) -> np.ndarray:
    return digits.x_train[:n].numpy()


def _meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def _weights_dq(proto):
    """DequantizeLinear nodes whose input is an int8 initializer (the stored weights)."""
    inits = {t.name: t for t in proto.graph.initializer}
    return [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == TensorProto.INT8 and len(inits[n.input[0]].dims) > 1]


def test_onnxruntime_cpu_target_is_u8s8_per_channel(lenet, digits, tmp_path):
    out = tmp_path / "int8.onnx"
    report = quantize_int8(lenet, out, _calib(digits))
    proto = onnx.load(out)
    ops = op_counts(proto)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and nonstandard_ops(proto) == []
    assert is_quantized(out) and not is_quantized(lenet)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    weights = _weights_dq(proto)
    assert len(weights) >= 4, "conv and gemm weights are stored as int8 initializers"
    for dq in weights:
        w, scale, zp = (inits[name] for name in dq.input)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert scale.shape == (w.shape[axis],) and w.shape[axis] > 1, "one scale per output channel"
        assert zp.dtype == np.int8 and not zp.any(), "weights are symmetric int8"
    activations = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(z.dtype == np.uint8 for z in activations), "activations are uint8"
    meta = _meta(out)
    record = json.loads(meta.pop("sdk.quantization"))
    assert meta == _meta(lenet)
    assert record["target"] == "onnxruntime-cpu" and record["label"] == "U8S8"
    assert record["activation_type"] == "uint8" and record["per_channel"] and record["calibration_samples"] == 64
    assert report.quantize_nodes == ops["QuantizeLinear"] and report.bytes_after < 0.5 * report.bytes_before
    assert report.eval_on == "calibration data" and report.max_abs_diff is not None
    assert "U8S8" in report.summary()


def test_tensorrt_target_is_symmetric_s8_on_supported_ops(resnet, tmp_path):
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    out = tmp_path / "trt.onnx"
    report = quantize_int8(resnet, out, x, target="tensorrt", method="percentile")
    proto = onnx.load(out)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    quant = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert quant and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in quant), \
        "every zero point is int8 0 (symmetric)"
    per_channel = [n for n in quant if inits[n.input[1]].size > 1]
    assert per_channel and all(inits[n.input[0]].dtype == np.float32 for n in per_channel), \
        "float weights with their own Q -> DQ pair, one scale per output channel"
    dq_out = {o: n for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers = [n for n in proto.graph.node if any(i in dq_out for i in n.input)]
    assert {n.op_type for n in consumers} <= set(TENSORRT_OPS), "Q/DQ only where TensorRT runs int8"
    assert any(n.op_type == "Add" for n in consumers), "residual adds are quantized"
    used = [o for n in proto.graph.node for o in n.input if o in dq_out]
    assert len(used) == len(set(used)), "one dedicated DequantizeLinear per consumer"
    record = json.loads(_meta(out)["sdk.quantization"])
    assert record["label"] == "S8S8" and record["activation_symmetric"] and record["method"] == "percentile"
    assert report.target == "tensorrt" and is_quantized(out)


def test_per_tensor_and_custom_settings(lenet, digits, tmp_path):
    s8 = dataclasses.replace(TARGETS["onnxruntime-cpu"], name="s8s8-cpu", activation_type="int8",
                             activation_symmetric=True)
    report = quantize_int8(lenet, tmp_path / "q.onnx", _calib(digits, 32), target=s8, per_channel=False,
                           method="entropy")
    assert report.method == "entropy" and report.settings["label"] == "S8S8"
    proto = onnx.load(tmp_path / "q.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert all(inits[n.input[1]].size == 1 for n in proto.graph.node if n.op_type == "DequantizeLinear")
    assert all(inits[n.input[2]].dtype == np.int8 for n in proto.graph.node if n.op_type == "QuantizeLinear")
    assert json.loads(_meta(tmp_path / "q.onnx")["sdk.quantization"])["target"] == "s8s8-cpu"
    with pytest.raises(ValueError, match="activation_type must be one of"):
        QuantSettings("x", activation_type="int4")


def test_calibration_input_forms(lenet, digits, tmp_path):
    specs = graph_inputs(onnx.load(lenet))
    x = _calib(digits, 20)
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(0, 20, 5):
        np.save(folder / f"{i:03d}.npy", x[i:i + 5])
    forms = {"array": x, "list of batches": [x[:7], x[7:]], "list of samples": list(x),
             "folder": os.fspath(folder), "npy file": os.fspath(folder / "000.npy"),
             "generator of dicts": ({"input": x[i:i + 4]} for i in range(0, 20, 4)), "float64": x.astype(np.float64),
             "torch tensor": torch.from_numpy(x)}
    counts = {name: as_feeds(data, specs, what=name)[1] for name, data in forms.items()}
    assert counts == {**{k: 20 for k in forms}, "npy file": 5}
    feeds, n = as_feeds([x[:7], x[7:]], specs, limit=9)
    assert n == 9 and [f["input"].shape[0] for f in feeds] == [7, 2]
    batches, kept = rebatch(feeds, 4)
    assert [b["input"].shape[0] for b in batches] == [4, 4, 1] and kept == list(range(9))
    assert rebatch(feeds, 4, exact=True)[1] == list(range(8))
    report = quantize_int8(lenet, tmp_path / "q.onnx", ({"input": s} for s in x), num_calibration=12)
    assert report.calibration_samples == 12
    assert quantize_int8(lenet, tmp_path / "q2.onnx", os.fspath(folder)).calibration_samples == 20


@pytest.mark.parametrize("data, match", [
    (None, "got None"),
    ([], "holds no samples"),
    (np.zeros((0, 1, 32, 32), np.float32), "holds no samples"),
    (np.zeros((4, 3, 32, 32), np.float32), "dimension 1 must be 1"),
    (np.zeros((4, 1, 28, 28), np.float32), "dimension 2 must be 32"),
    (np.zeros((4, 32, 32), np.float32), "dimension 1 must be 1 .*got shape \\(4, 32, 32\\) \\(read as one sample\\)"),
    (np.zeros((2, 4, 1, 32, 32), np.float32), "expected a batch shaped \\(N, 1, 32, 32\\)"),
    (np.zeros((4, 1, 32, 32), np.uint8), "floating-point values.*got dtype uint8"),
    (np.full((4, 1, 32, 32), np.nan, np.float32), "NaN/inf"),
    ([{"image": np.zeros((1, 1, 32, 32), np.float32)}], "dict keys \\['image'\\] do not match.*\\['input'\\]"),
    (["not an array"], "floating-point values"),
    (42, "got int"),
    ("/no/such/folder", "neither a folder of .npy files nor a .npy file"),
])
def test_bad_calibration_data(lenet, tmp_path, data, match):
    with pytest.raises(InputError, match=match):
        quantize_int8(lenet, tmp_path / "q.onnx", data)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(lenet, digits, tmp_path):
    x = _calib(digits, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .npy files"):
        quantize_int8(lenet, tmp_path / "q.onnx", tmp_path / "empty")
    with pytest.raises(ValueError, match="method must be one of \\['minmax', 'entropy', 'percentile'\\]"):
        quantize_int8(lenet, tmp_path / "q.onnx", x, method="kl")
    with pytest.raises(ValueError, match="target must be one of"):
        quantize_int8(lenet, tmp_path / "q.onnx", x, target="gpu")
    with pytest.raises(ValueError, match="max_drop needs eval_data and eval_labels"):
        quantize_int8(lenet, tmp_path / "q.onnx", x, eval_data=x, max_drop=1.0)
    with pytest.raises(ValueError, match="positive integer"):
        quantize_int8(lenet, tmp_path / "q.onnx", x, num_calibration=0)
    with pytest.raises(InputError, match="one label .* per eval sample \\(8\\), got shape \\(5,\\)"):
        quantize_int8(lenet, tmp_path / "q.onnx", x, eval_data=x, eval_labels=np.zeros(5, np.int64))
    with pytest.raises(ModelLoadError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", x)
    with pytest.raises(ModelLoadError, match="not found"):
        is_quantized(tmp_path / "missing.onnx")
    assert os.listdir(tmp_path) == ["empty"]
    quantize_int8(lenet, tmp_path / "q.onnx", x)
    with pytest.raises(ValueError, match="already holds QuantizeLinear"):
        quantize_int8(tmp_path / "q.onnx", tmp_path / "q2.onnx", x)


def test_accuracy_gate_passes(lenet, digits, tmp_path):
    out = tmp_path / "int8.onnx"
    report = quantize_int8(lenet, out, _calib(digits, 128), eval_data=digits.x_test.numpy(),
                           eval_labels=digits.y_test.numpy(), max_drop=3.0)
    assert out.exists() and report.passed
    assert report.metric == "top-1 accuracy" and report.eval_samples == len(digits.y_test)
    assert report.accuracy_fp32 > 0.85 and abs(report.accuracy_drop) <= 3.0
    assert report.max_abs_diff > 0 and report.mean_abs_diff <= report.max_abs_diff
    assert "gate max_drop 3: passed" in report.summary()


def test_accuracy_gate_failure_leaves_no_file(lenet, digits, tmp_path):
    """Calibration data 1000x too large (no preprocessing) squashes every activation to zero: the gate must stop it."""
    out = tmp_path / "int8.onnx"
    bad = _calib(digits, 32) * 1000.0
    kw = dict(eval_data=digits.x_test.numpy(), eval_labels=digits.y_test.numpy(), max_drop=1.0)
    with pytest.raises(AccuracyGateError, match="drop of .* points > max_drop 1; nothing was written") as info:
        quantize_int8(lenet, out, bad, **kw)
    assert info.value.report.accuracy_drop > 1.0 and info.value.report.passed is False
    assert os.listdir(tmp_path) == [], "no INT8 file and no temporary left behind"
    out.write_bytes(b"previous model")
    with pytest.raises(AccuracyGateError):
        quantize_int8(lenet, out, bad, **kw)
    assert out.read_bytes() == b"previous model" and os.listdir(tmp_path) == ["int8.onnx"]


def _segmenter(path) -> str:
    """Two convs, 2-class logit map, dynamic batch and spatial dims."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("Conv", ["r1", "w2"], ["output"])]
    graph = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2, "H", "W"])],
                              [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)
    return os.fspath(path)


def test_segmentation_gate_uses_pixel_accuracy_and_reports_dice(tmp_path):
    src = _segmenter(tmp_path / "seg.onnx")
    x = np.random.default_rng(1).standard_normal((6, 1, 16, 16)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int64)  # (N, H, W)
    report = quantize_int8(src, tmp_path / "q.onnx", x, eval_data=x, eval_labels=labels, max_drop=100.0)
    assert report.metric == "pixel accuracy" and 0 <= report.accuracy_int8 <= 1
    assert report.dice_fp32 is not None and 0 <= report.dice_int8 <= 1
    with pytest.raises(InputError, match="labels has shape \\(6, 8, 8\\), the model's predictions \\(6, 16, 16\\)"):
        quantize_int8(src, tmp_path / "q2.onnx", x, eval_data=x, eval_labels=labels[:, :8, :8])


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    model = create_model("unet", num_classes=2, in_channels=1, base_width=8, depth=2, padding="same",
                         upsample="bilinear")
    path = tmp_path_factory.mktemp("unet") / "unet.onnx"
    export_onnx(model, path, verify=False)
    return os.fspath(path)


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "tensorrt"])
def test_unet_with_dynamic_spatial_dims(unet, tmp_path, monkeypatch, target):
    """ORT's symbolic shape inference gives up on U-Net's dynamic skip connections and dumps files into the working
    directory; the pre-processing skips it, so nothing appears there."""
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    report = quantize_int8(unet, tmp_path / "q.onnx", x, target=target, eval_data=x,
                           eval_labels=np.zeros((4, 32, 32), np.int64))
    assert is_quantized(tmp_path / "q.onnx") and report.metric == "pixel accuracy"
    assert graph_inputs(onnx.load(tmp_path / "q.onnx"))[0].shape == (None, 1, None, None)
    assert os.listdir(tmp_path) == ["q.onnx"], "no temporary files in the working directory"
