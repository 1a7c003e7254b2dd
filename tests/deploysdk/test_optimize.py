import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploysdk import ExportError, InputError, ModelLoadError, ParityError
from deploysdk.export import OutputError, export_onnx
from deploysdk.optimize import convert_fp16, graph_inputs, nonstandard_ops, op_counts, optimize_graph
from trainsdk.models import create_model

CONTRACT = {"channels": 1, "spatial_dims": 2, "default_size": [16, 16], "min_size": 8, "multiple": 1,
            "fixed_size": False, "dynamic_spatial": True}


def _conv_bn(rng, name: str, x: str, cin: int, cout: int, k: int) -> tuple[list, list]:
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.5).astype(np.float32), f"{name}_w")
    stats = [numpy_helper.from_array(v.astype(np.float32), f"{name}_{n}") for n, v in
             (("scale", rng.uniform(0.5, 2, cout)), ("bias", rng.standard_normal(cout)),
              ("mean", rng.standard_normal(cout) * 0.1), ("var", rng.uniform(0.5, 2, cout)))]
    nodes = [helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_c"], pads=[k // 2] * 4),
             helper.make_node("BatchNormalization", [f"{name}_c"] + [t.name for t in stats], [f"{name}_bn"])]
    return nodes, [w] + stats


def conv_bn_model(path, *, contract: bool = True) -> str:
    """Conv-BN-Relu-Identity-Conv-BN with dynamic batch and spatial dims: what an older exporter writes."""
    rng = np.random.default_rng(0)
    n1, w1 = _conv_bn(rng, "a", "input", 1, 4, 3)
    n2, w2 = _conv_bn(rng, "b", "id", 4, 2, 1)
    nodes = n1 + [helper.make_node("Relu", ["a_bn"], ["r"]), helper.make_node("Identity", ["r"], ["id"])] + n2
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(nodes, "convbn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2, "H", "W"])], w1 + w2)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    meta = {"sdk.model_name": "convbn", "sdk.config": json.dumps({"num_classes": 2})}
    if contract:
        meta["sdk.input_contract"] = json.dumps(CONTRACT)
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return os.fspath(path)


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("lenet") / "lenet5.onnx"
    export_onnx(create_model("lenet5_modern", num_classes=10), path, metadata={"class_labels": list("0123456789")})
    return os.fspath(path)


def _meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_batchnorm_folded_standard_ops_parity_and_metadata(tmp_path):
    src = conv_bn_model(tmp_path / "convbn.onnx")
    out = tmp_path / "opt.onnx"
    report = optimize_graph(src, out)
    proto = onnx.load(out)
    ops = op_counts(proto)
    assert report.ops_before["BatchNormalization"] == 2 and "BatchNormalization" not in ops, ops
    assert "Identity" not in ops, "redundant nodes are eliminated"
    assert report.nodes_after < report.nodes_before and report.op_changes["BatchNormalization"] == -2
    assert nonstandard_ops(proto) == [] and {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert all(e.ok for e in report.errors) and report.errors[0].max_abs < 1e-4
    # dynamic batch checked at 1 and 2, dynamic spatial dims at the contract's default size
    assert report.checked_shapes == [(1, 1, 16, 16), (2, 1, 16, 16)]
    assert _meta(out) == _meta(src)
    assert graph_inputs(proto)[0].shape == (None, 1, None, None), "dynamic dims stay dynamic"
    assert "BatchNormalization -2" in report.summary()


def test_exported_model_keeps_metadata_and_parity(lenet_onnx, tmp_path):
    out = tmp_path / "opt.onnx"
    report = optimize_graph(lenet_onnx, out, samples=[np.zeros((3, 1, 32, 32), np.float32)])
    onnx.checker.check_model(os.fspath(out))
    meta = _meta(out)
    assert meta == _meta(lenet_onnx) and json.loads(meta["sdk.class_labels"])[0] == "0"
    assert (3, 1, 32, 32) in report.checked_shapes and all(e.ok for e in report.errors)
    assert report.bytes_after > 0 and nonstandard_ops(onnx.load(out)) == []


def test_dynamic_spatial_dims_without_contract_need_samples(tmp_path):
    src = conv_bn_model(tmp_path / "convbn.onnx", contract=False)
    with pytest.raises(InputError, match="dynamic dim 2.*pass samples"):
        optimize_graph(src, tmp_path / "opt.onnx")
    assert not (tmp_path / "opt.onnx").exists()
    report = optimize_graph(src, tmp_path / "opt.onnx", samples=[np.ones((1, 20, 24), np.float32)])
    assert report.checked_shapes[-1] == (1, 1, 20, 24)
    optimize_graph(src, tmp_path / "unverified.onnx", verify=False)


def _fail_parity(*args, **kwargs):
    return [OutputError("output", 1.0, 1.0, 1e-4, 1e-3)]


def test_parity_failure_raises_and_leaves_no_file(tmp_path, monkeypatch):
    src = conv_bn_model(tmp_path / "convbn.onnx")
    monkeypatch.setattr("deploysdk.optimize.compare_models", _fail_parity)
    with pytest.raises(ParityError, match="optimized model disagrees.*max abs 1.000e\\+00"):
        optimize_graph(src, tmp_path / "opt.onnx")
    assert os.listdir(tmp_path) == ["convbn.onnx"], "a failed optimization leaves nothing behind"
    (tmp_path / "opt.onnx").write_bytes(b"previous model")
    with pytest.raises(ParityError):
        optimize_graph(src, tmp_path / "opt.onnx")
    assert (tmp_path / "opt.onnx").read_bytes() == b"previous model"


def test_real_parity_check_catches_a_wrong_graph(tmp_path, monkeypatch):
    src = conv_bn_model(tmp_path / "convbn.onnx")
    wrong = tmp_path / "wrong.onnx"
    proto = onnx.load(src)
    proto.graph.node[2].op_type = "Sigmoid"  # Relu -> Sigmoid: same shapes, other numbers
    onnx.save(proto, wrong)
    monkeypatch.setattr("deploysdk.optimize._ort_rewrite", lambda s, d, level: shutil.copy(wrong, d))
    with pytest.raises(ParityError, match="output: max abs"):
        optimize_graph(src, tmp_path / "opt.onnx")


def test_nonstandard_ops_are_rejected(tmp_path, monkeypatch):
    src = conv_bn_model(tmp_path / "convbn.onnx")
    contrib = onnx.load(src)
    contrib.graph.node[2].domain = "com.microsoft"
    contrib.graph.node[2].op_type = "FusedConv"
    assert nonstandard_ops(contrib) == ["com.microsoft::FusedConv"]
    monkeypatch.setattr("deploysdk.optimize._ort_rewrite", lambda s, d, level: onnx.save(contrib, d))
    with pytest.raises(ExportError, match="non-standard ops \\['com.microsoft::FusedConv'\\]"):
        optimize_graph(src, tmp_path / "opt.onnx")
    assert not (tmp_path / "opt.onnx").exists()


def test_bad_arguments(tmp_path):
    src = conv_bn_model(tmp_path / "convbn.onnx")
    with pytest.raises(ValueError, match="level must be one of \\['basic'\\].*com.microsoft"):
        optimize_graph(src, tmp_path / "o.onnx", level="extended")
    with pytest.raises(ModelLoadError, match="not found"):
        optimize_graph(tmp_path / "missing.onnx", tmp_path / "o.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        convert_fp16(tmp_path / "junk.onnx", tmp_path / "o.onnx")
    with pytest.raises(InputError, match="dimension 1 must be 1"):
        optimize_graph(src, tmp_path / "o.onnx", samples=[np.zeros((1, 3, 16, 16), np.float32)])
    assert sorted(os.listdir(tmp_path)) == ["convbn.onnx", "junk.onnx"]


def test_fp16_weights_with_float32_io(lenet_onnx, tmp_path):
    out = tmp_path / "fp16.onnx"
    report = convert_fp16(lenet_onnx, out)
    proto = onnx.load(out)
    floats = [t for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert op_counts(proto)["Cast"] >= 2 and nonstandard_ops(proto) == []
    onnx.checker.check_model(os.fspath(out))  # nodes topologically sorted again after the converter
    meta = _meta(out)
    assert json.loads(meta.pop("sdk.precision")) == {"weights": "float16", "io_float32": True}
    assert meta == _meta(lenet_onnx)
    assert report.errors and all(e.ok for e in report.errors) and 0 < report.errors[0].max_abs < 5e-2
    assert report.bytes_after < 0.6 * report.bytes_before
    assert "fp16 of" in report.summary()


def test_fp16_with_float16_io(tmp_path):
    src = optimize_graph(conv_bn_model(tmp_path / "convbn.onnx"), tmp_path / "opt.onnx").path
    report = convert_fp16(src, tmp_path / "half.onnx", keep_io_types=False)
    proto = onnx.load(tmp_path / "half.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert report.level == "fp16 (float16 I/O)" and all(e.ok for e in report.errors)


def test_fp16_tolerance_failure_leaves_no_file(lenet_onnx, tmp_path):
    with pytest.raises(ParityError, match="FP16 model disagrees"):
        convert_fp16(lenet_onnx, tmp_path / "fp16.onnx", atol=0.0, rtol=0.0)
    assert os.listdir(tmp_path) == []


def test_fp16_with_a_float32_only_input_shared_by_two_nodes(tmp_path):
    """Two Resizes share one scales tensor (float32 only): the converter's duplicate Casts must not break SSA."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Resize", ["input", "", "scales"], ["up1"], mode="linear"),
             helper.make_node("Relu", ["up1"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["output"], mode="linear")]
    graph = helper.make_graph(nodes, "resize2", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, 16, 16])],
                              [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "resize.onnx")
    report = convert_fp16(tmp_path / "resize.onnx", tmp_path / "half.onnx")
    onnx.checker.check_model(os.fspath(tmp_path / "half.onnx"))
    assert all(e.ok for e in report.errors)
