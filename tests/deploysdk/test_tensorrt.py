"""TensorRT builder, sidecar and runner. What is decided without TensorRT (profiles, precision, workspace, Q/DQ
detection, sidecar checks, profile ranges, lazy imports, errors when TensorRT or CUDA is absent) is tested everywhere;
tests that build and run real engines are marked ``tensorrt``/``gpu`` and skip, saying why, without TensorRT or a GPU.
"""
import json
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploysdk import BackendUnavailableError, EngineMismatchError, InputError, ModelLoadError
from deploysdk.runtime import _cuda
from deploysdk.runtime.base import TensorSpec
from deploysdk.runtime.trt import TensorRTRunner, _np_dtype, engine_up_to_date, tensor_json, write_engine
from deploysdk.tensorrt import (ShapeRange, asymmetric_qdq, build_engine, check_precision, check_sidecar, count_qdq,
                                derive_profiles, load_sidecar, normalize_profiles, parse_workspace, plan_precision,
                                read_onnx, select_profile, sidecar_path)

UNET_SAME = {"channels": 1, "spatial_dims": 2, "default_size": [128, 128], "min_size": 16, "multiple": 16,
             "fixed_size": False, "dynamic_spatial": True}


def spec(*shape, name="input"):
    return TensorSpec(name, np.dtype(np.float32), tuple(shape))


# --- ONNX graphs built by hand ------------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), metadata=None):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime and TensorRT parser the SDK supports
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def relu_model(contract=None):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, 8, 8])
    meta = {"sdk.model_name": "relu", "sdk.input_contract": json.dumps(contract)} if contract else {}
    return _model([helper.make_node("Relu", ["input"], ["output"])], [x], [y], metadata=meta)


def qdq_conv_model(asymmetric=False):
    """input -> Q -> DQ -> Conv(DQ(int8 weights)) -> output: explicitly quantized; ``asymmetric``: uint8 activations."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 6, 6])
    x_zero = (TensorProto.UINT8, [], [128]) if asymmetric else (TensorProto.INT8, [], [0])
    inits = [helper.make_tensor("x_scale", TensorProto.FLOAT, [], [1 / 64]), helper.make_tensor("x_zero", *x_zero),
             helper.make_tensor("zero", TensorProto.INT8, [], [0]),
             helper.make_tensor("w_scale", TensorProto.FLOAT, [], [1 / 64]),
             helper.make_tensor("w_q", TensorProto.INT8, [2, 1, 3, 3], rng.integers(-64, 64, 18).tolist())]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xdq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "zero"], ["w"]),
             helper.make_node("Conv", ["xdq", "w"], ["output"])]
    return _model(nodes, [x], [y], inits)


@pytest.fixture
def relu_onnx(tmp_path):
    path = tmp_path / "relu.onnx"
    onnx.save(relu_model({**UNET_SAME, "default_size": [8, 8], "min_size": 4, "multiple": 4}), path)
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    """``import tensorrt`` fails, as on a machine without it (here and on GPU machines alike)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# --- imports ------------------------------------------------------------------------------------------------------
def test_importing_the_tensorrt_modules_imports_neither_tensorrt_nor_torch():
    code = ("import sys, deploysdk.tensorrt, deploysdk.runtime.trt, deploysdk.runtime._cuda; "
            "bad = [m for m in ('tensorrt', 'torch') if m in sys.modules]; assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_without_tensorrt_build_and_load_name_what_to_install(no_tensorrt, relu_onnx, tmp_path):
    engine = tmp_path / "relu.engine"
    with pytest.raises(BackendUnavailableError, match=r"needs the 'tensorrt' package.*pip install tensorrt"):
        build_engine(relu_onnx, engine)
    assert not engine.exists() and not os.path.exists(sidecar_path(engine))
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        TensorRTRunner(tmp_path / "model.engine")
    with pytest.raises(ModelLoadError, match="is an ONNX model.*build_engine"):
        TensorRTRunner(relu_onnx)
    with pytest.raises(BackendUnavailableError, match="CUDA GPUs only"):
        TensorRTRunner(tmp_path / "model.engine", device="cpu")


def test_argument_errors_come_before_tensorrt_is_needed(no_tensorrt, relu_onnx, tmp_path):
    engine = tmp_path / "relu.engine"
    with pytest.raises(ValueError, match="quantize_int8"):
        build_engine(relu_onnx, engine, precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        build_engine(relu_onnx, engine, precision="fp8")
    with pytest.raises(ValueError, match="workspace"):
        build_engine(relu_onnx, engine, workspace="lots")
    with pytest.raises(InputError, match="unknown"):
        build_engine(relu_onnx, engine, profiles={"image": ((1, 1, 8, 8),) * 3})
    with pytest.raises(ModelLoadError, match="not found"):
        build_engine(tmp_path / "missing.onnx", engine)
    with pytest.raises(ValueError, match="must differ"):
        build_engine(relu_onnx, relu_onnx)


def test_cuda_device_and_missing_cudart(monkeypatch):
    monkeypatch.setattr(_cuda, "_lib", None)
    monkeypatch.setattr(_cuda, "LIBRARY_NAMES", ("libcudart-that-does-not-exist.so",))
    monkeypatch.setattr(_cuda, "_wheel_candidates", lambda: [])
    with pytest.raises(BackendUnavailableError, match="libcudart.*nvidia-cuda-runtime"):
        _cuda.cudart()
    assert [_cuda.device_index(d) for d in (0, 3, "cuda", "cuda:2")] == [0, 3, 0, 2]
    with pytest.raises(BackendUnavailableError, match="CUDA GPUs only"):
        _cuda.device_index("cpu")
    for bad in ("gpu0", -1):
        with pytest.raises(ValueError):
            _cuda.device_index(bad)


# --- workspace ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [
    (None, None), (1 << 30, 1 << 30), ("4GiB", 4 << 30), ("512MiB", 512 << 20), ("2g", 2 << 30),
    ("1.5GB", 1_500_000_000), ("1024", 1024), (" 64 KiB ", 64 << 10), ("1TiB", 1 << 40),
])
def test_parse_workspace(value, expected):
    assert parse_workspace(value) == expected


@pytest.mark.parametrize("value", ["4 gigs", "GiB", "-1GiB", 0, -5, True, 1.5, "0MiB"])
def test_parse_workspace_rejects(value):
    with pytest.raises(ValueError, match="workspace"):
        parse_workspace(value)


# --- profile derivation -------------------------------------------------------------------------------------------
def test_static_inputs_and_dynamic_batch():
    assert derive_profiles([spec(1, 1, 32, 32)]) == []
    assert derive_profiles([spec(1, 1, 32, 32)], {"input": (1, 1, 32, 32)}) == []
    with pytest.raises(InputError, match=r"\(2, 1, 32, 32\).*does not fit"):
        derive_profiles([spec(1, 1, 32, 32)], {"input": (2, 1, 32, 32)})
    lenet = {"min_size": 32, "multiple": 1, "fixed_size": True, "default_size": [32, 32], "spatial_dims": 2}
    [p] = derive_profiles([spec(None, 1, 32, 32)], contract=lenet)
    assert p["input"] == ShapeRange((1, 1, 32, 32), (1, 1, 32, 32), (32, 1, 32, 32))
    [p] = derive_profiles([spec(None, 1, 32, 32)], (8, 1, 32, 32))  # a bare shape for a one-input model
    assert p["input"] == ShapeRange((1, 1, 32, 32), (8, 1, 32, 32), (32, 1, 32, 32))
    [p] = derive_profiles([spec(None, 1, 32, 32)], {"input": (64, 1, 32, 32)})
    assert p["input"].max == (64, 1, 32, 32)  # the default max grows to the example batch
    [p] = derive_profiles([spec(None, 1, 32, 32)], {"input": (8, 1, 32, 32)}, max_batch=128)
    assert p["input"].max[0] == 128
    with pytest.raises(InputError, match="max_batch=4 is below the example batch 8"):
        derive_profiles([spec(None, 1, 32, 32)], {"input": (8, 1, 32, 32)}, max_batch=4)
    with pytest.raises(ValueError, match="max_batch"):
        derive_profiles([spec(None, 1, 32, 32)], max_batch=0)
    with pytest.raises(InputError, match="dimension 1 must|does not fit"):
        derive_profiles([spec(None, 1, 32, 32)], {"input": (8, 3, 32, 32)})


def test_dynamic_spatial_snaps_to_the_contract():
    unet = spec(None, 1, None, None)
    [p] = derive_profiles([unet], {"input": (2, 1, 96, 96)}, contract=UNET_SAME)
    assert p["input"] == ShapeRange((1, 1, 16, 16), (2, 1, 96, 96), (32, 1, 192, 192))
    [p] = derive_profiles([unet], contract=UNET_SAME)  # no example: the contract's default size
    assert p["input"] == ShapeRange((1, 1, 16, 16), (1, 1, 128, 128), (32, 1, 256, 256))
    [p] = derive_profiles([unet], {"input": (1, 1, 96, 96)}, spatial_range=(20, 300), contract=UNET_SAME)
    assert (p["input"].min[2:], p["input"].max[2:]) == ((32, 32), (288, 288))  # snapped inside the range
    with pytest.raises(InputError, match=r"size 100 .*multiple of 16; nearest valid above: 112"):
        derive_profiles([unet], {"input": (1, 1, 100, 100)}, contract=UNET_SAME)
    with pytest.raises(InputError, match="must include the example size 96"):
        derive_profiles([unet], {"input": (1, 1, 96, 96)}, spatial_range=(128, 512), contract=UNET_SAME)
    with pytest.raises(ValueError, match="spatial_range"):
        derive_profiles([unet], {"input": (1, 1, 96, 96)}, spatial_range=(64, 32), contract=UNET_SAME)


def test_dynamic_spatial_of_the_form_16k_minus_4_and_3d():
    valid_unet = {"spatial_dims": 2, "default_size": [188, 188], "min_size": 188, "multiple": 1, "size_step": 16,
                  "size_offset": -4}
    [p] = derive_profiles([spec(None, 1, None, None)], contract=valid_unet)
    assert p["input"] == ShapeRange((1, 1, 188, 188), (1, 1, 188, 188), (32, 1, 364, 364))  # 364 = 16*23 - 4
    unet3d = {**UNET_SAME, "spatial_dims": 3, "default_size": [32, 32, 32], "min_size": 32}
    [p] = derive_profiles([spec(None, 1, None, None, None)], {"input": (1, 1, 32, 48, 64)}, contract=unet3d)
    assert p["input"] == ShapeRange((1, 1, 32, 32, 32), (1, 1, 32, 48, 64), (32, 1, 64, 96, 128))
    [p] = derive_profiles([spec(None, 1, None, None)], {"input": (4, 1, 100, 60)})
    assert p["input"] == ShapeRange((1, 1, 100, 60), (4, 1, 100, 60), (32, 1, 100, 60))  # only the example size
    with pytest.raises(InputError, match="no size to tune for"):
        derive_profiles([spec(None, 1, None, None)])
    with pytest.raises(InputError, match="not model inputs"):
        derive_profiles([spec(None, 1, 8, 8)], {"image": (1, 1, 8, 8)})


def test_explicit_profiles():
    specs = [spec(None, 1, None, None), spec(1, 4, name="meta")]
    prof = {"input": ((1, 1, 64, 64), (4, 1, 128, 128), (8, 1, 256, 256))}
    [p] = normalize_profiles(prof, specs)
    assert p["input"] == ShapeRange((1, 1, 64, 64), (4, 1, 128, 128), (8, 1, 256, 256))
    assert p["meta"] == ShapeRange((1, 4), (1, 4), (1, 4))  # static inputs are filled in
    two = normalize_profiles([prof, {"input": {"min": [1, 1, 32, 32], "opt": [1, 1, 32, 32], "max": [1, 1, 32, 32]},
                                     "meta": ShapeRange((1, 4), (1, 4), (1, 4))}], specs)
    assert len(two) == 2 and two[1]["input"].max == (1, 1, 32, 32)


@pytest.mark.parametrize("profile,match", [
    ({"image": ((1, 1, 8, 8),) * 3}, r"unknown \['image'\], dynamic inputs missing \['input'\]"),
    ({}, r"dynamic inputs missing \['input'\]"),
    ({"input": ((1, 1, 8, 8), (4, 1, 8, 8))}, r"expected \(min, opt, max\)"),
    ({"input": ((1, 1, 8), (4, 1, 8), (8, 1, 8))}, r"min shape for input 'input' is \(1, 1, 8\), which does not fit"),
    ({"input": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}, r"does not fit input: float32\[\?, 1, \?, \?\]"),
    ({"input": ((4, 1, 8, 8), (1, 1, 8, 8), (8, 1, 8, 8))}, "min <= opt <= max.*dimension 0 has min 4, opt 1"),
    ({"input": ((0, 1, 8, 8), (1, 1, 8, 8), (8, 1, 8, 8))}, "dimension < 1"),
    ({"input": (("a", 1, 8, 8), (1, 1, 8, 8), (8, 1, 8, 8))}, "sequences of ints"),
    ([], "profiles is empty"),
    (["input"], "expected a dict"),
])
def test_bad_explicit_profiles_are_explained(profile, match):
    with pytest.raises(InputError, match=match):
        normalize_profiles(profile, [spec(None, 1, None, None)])


def test_profile_range_checks_name_input_shape_and_range():
    profiles = normalize_profiles([{"input": ((1, 1, 32, 32), (8, 1, 32, 32), (16, 1, 32, 32))},
                                   {"input": ((17, 1, 32, 32), (32, 1, 32, 32), (64, 1, 32, 32))}],
                                  [spec(None, 1, 32, 32)])
    assert select_profile(profiles, {"input": (3, 1, 32, 32)}) == 0
    assert select_profile(profiles, {"input": (20, 1, 32, 32)}) == 1
    assert select_profile([], {"input": (3, 1, 32, 32)}) == 0  # static engine
    with pytest.raises(InputError, match=r"input 'input' has shape \(65, 1, 32, 32\).*profile 0 takes 'input' from "
                                         r"min \(1, 1, 32, 32\) to max \(16, 1, 32, 32\); profile 1 .* max \(64,"):
        select_profile(profiles, {"input": (65, 1, 32, 32)})


# --- precision ----------------------------------------------------------------------------------------------------
def test_precision_flags_and_graph_checks():
    fp32 = plan_precision("fp32")
    assert (fp32.flags, fp32.cleared_flags, fp32.strongly_typed) == ((), ("TF32",), False)
    assert plan_precision("fp16").flags == ("FP16",)
    assert plan_precision("bf16", compute_capability="9.0").flags == ("BF16",)
    int8 = plan_precision("int8")
    assert (int8.flags, int8.strongly_typed) == ((), True)  # Q/DQ decide; no FP16 fallback
    with pytest.raises(BackendUnavailableError, match="compute capability >= 8.0"):
        plan_precision("bf16", compute_capability=(7, 5))
    with pytest.raises(ValueError, match="precision must be one of"):
        plan_precision("fp64")
    with pytest.raises(BackendUnavailableError, match="removed the FP16 builder flag.*AutoCast"):
        plan_precision("fp16", trt_major=11)
    plan = plan_precision("fp16", trt_major=11, graph_types=frozenset({"float16"}))
    assert (plan.flags, plan.strongly_typed) == ((), True)
    assert plan_precision("int8", trt_major=11).strongly_typed
    check_precision("fp32", has_qdq=False)
    check_precision("int8", has_qdq=True)
    with pytest.raises(ValueError, match="int8.*Q/DQ.*deploysdk.quantize.quantize_int8"):
        check_precision("int8", has_qdq=False)
    with pytest.raises(ValueError, match="quantized.*precision='int8'"):
        check_precision("fp16", has_qdq=True)


def test_read_onnx_and_qdq_detection(relu_onnx, tmp_path):
    assert count_qdq(qdq_conv_model()) == (1, 2) and asymmetric_qdq(qdq_conv_model()) == []
    assert count_qdq(relu_model()) == (0, 0)
    assert asymmetric_qdq(qdq_conv_model(asymmetric=True)) == ["xq", "xdq"]  # ONNX Runtime's U8S8 form
    with pytest.raises(ValueError, match=r"2 Q/DQ nodes \(first: 'xq'\).*U8S8.*target='tensorrt'"):
        check_precision("int8", has_qdq=True, asymmetric=["xq", "xdq"])
    onnx.save(qdq_conv_model(), tmp_path / "q.onnx")
    info = read_onnx(tmp_path / "q.onnx")
    assert info.has_qdq and (info.quantize_nodes, info.dequantize_nodes) == (1, 2)
    assert [s.name for s in info.inputs] == ["input"]  # initializers are not inputs
    then = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    nested = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)], "g",
                               [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert count_qdq(helper.make_model(nested)) == (0, 2)  # subgraphs count too
    info = read_onnx(relu_onnx)
    assert info.inputs == [spec(None, 1, 8, 8)] and not info.has_qdq
    assert info.metadata["sdk.model_name"] == "relu" and info.contract["min_size"] == 4
    assert info.low_precision == frozenset()
    cast = helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT16)
    half = _model([cast], [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT16, [1, 4])])
    onnx.save(half, tmp_path / "half.onnx")
    assert read_onnx(tmp_path / "half.onnx").low_precision == frozenset({"float16"})
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(ModelLoadError, match="could not read"):
        read_onnx(tmp_path / "junk.onnx")


# --- sidecar ------------------------------------------------------------------------------------------------------
BUILT = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0",
         "onnx_path": "/models/unet.onnx", "precision": "fp16"}


def test_sidecar_written_atomically_next_to_the_engine(tmp_path):
    engine = tmp_path / "unet.engine"
    write_engine(engine, b"serialized engine bytes", dict(BUILT))
    assert engine.read_bytes() == b"serialized engine bytes"
    sidecar = load_sidecar(engine)
    assert sidecar_path(engine) == str(engine) + ".json"
    assert sidecar["engine_bytes"] == len(b"serialized engine bytes") and len(sidecar["engine_sha256"]) == 64
    assert {p.name for p in tmp_path.iterdir()} == {"unet.engine", "unet.engine.json"}  # no temporary files left
    check_sidecar(BUILT, trt_version="10.3.0", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
    check_sidecar(BUILT, trt_version="10.3.0", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0))


@pytest.mark.parametrize("running,differs", [
    (dict(trt_version="10.7.0", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0"), "TensorRT version"),
    (dict(trt_version="10.3.0", gpu_name="NVIDIA A100-PCIE-40GB", compute_capability="8.0"), "GPU"),
    (dict(trt_version="10.3.0", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability=(9, 0)), "compute capability"),
    (dict(trt_version="10.7.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0"),
     "TensorRT version and GPU and compute capability"),
])
def test_check_sidecar_mismatches_say_what_and_how_to_rebuild(running, differs):
    with pytest.raises(EngineMismatchError) as err:
        check_sidecar(BUILT, **running)
    msg = str(err.value)
    assert "built for TensorRT 10.3.0 on NVIDIA A100-SXM4-80GB (compute capability 8.0)" in msg
    assert f"runs TensorRT {running['trt_version']} on {running['gpu_name']}" in msg and f"{differs} differ" in msg
    assert "rebuild_from='/models/unet.onnx'" in msg and "deploysdk build-engine /models/unet.onnx" in msg


def test_missing_or_broken_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"no sidecar .*m\.engine\.json.*check=False"):
        load_sidecar(engine)
    (tmp_path / "m.engine.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_sidecar(engine)
    (tmp_path / "m.engine.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="expected a JSON object"):
        load_sidecar(engine)
    with pytest.raises(ModelLoadError, match=r"lacks \['gpu_name', 'compute_capability'\]"):
        check_sidecar({"tensorrt_version": "10.3.0"}, trt_version="10.3.0", gpu_name="g", compute_capability="8.0")


def test_engine_up_to_date_and_tensor_types(tmp_path):
    engine = tmp_path / "unet.engine"
    profiles = [{"input": {"min": [1, 1, 16, 16], "opt": [1, 1, 64, 64], "max": [8, 1, 128, 128]}}]
    write_engine(engine, b"engine", {**BUILT, "onnx_sha256": "abc", "profiles": profiles})
    a100 = SimpleNamespace(name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
    same = dict(onnx_sha256="abc", precision="fp16", profiles=profiles)
    assert engine_up_to_date(str(engine), "10.3.0", a100, **same)["onnx_sha256"] == "abc"
    assert engine_up_to_date(str(engine), "10.3.0", a100, **{**same, "precision": "fp32"}) is None
    assert engine_up_to_date(str(engine), "10.3.0", a100, **{**same, "onnx_sha256": "def"}) is None
    assert engine_up_to_date(str(engine), "10.4.0", a100, **same) is None
    engine.write_bytes(b"engin")  # truncated
    assert engine_up_to_date(str(engine), "10.3.0", a100, **same) is None
    assert _np_dtype(SimpleNamespace(name="FLOAT"), "x") == np.float32
    assert _np_dtype(SimpleNamespace(name="HALF"), "x") == np.float16
    with pytest.raises(ModelLoadError, match="tensor 'x' has TensorRT type BF16"):
        _np_dtype(SimpleNamespace(name="BF16"), "x")
    t = SimpleNamespace(name="logits", dtype=SimpleNamespace(name="HALF"), shape=(-1, 10))
    assert tensor_json(t) == {"name": "logits", "dtype": "float16", "shape": [None, 10]}


# --- on a GPU with TensorRT ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("TensorRT is not installed (pip install tensorrt)")
    try:
        return _cuda.device_info(0)
    except BackendUnavailableError as e:
        pytest.skip(f"no usable CUDA GPU: {e}")


@pytest.fixture(scope="module")
def lenet(gpu, tmp_path_factory):
    from deploysdk.export import export_onnx
    from trainsdk.models import create_model

    folder = tmp_path_factory.mktemp("trt")
    onnx_path = folder / "lenet5.onnx"
    export_onnx(create_model("lenet5"), onnx_path)
    report = build_engine(onnx_path, folder / "lenet5.engine", example_shapes={"input": (8, 1, 32, 32)},
                          workspace="1GiB", timing_cache=folder / "timing.cache")
    return onnx_path, folder / "lenet5.engine", report


def _ort(onnx_path, x):
    from deploysdk.runtime.onnxrt import OnnxRuntimeRunner

    with OnnxRuntimeRunner(onnx_path, device="cpu") as ort:
        return ort.run({"input": x})["output"]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_lenet_engine_matches_onnxruntime(lenet, gpu):
    onnx_path, engine, report = lenet
    assert not report.reused and report.gpu_name == gpu.name
    sidecar = json.loads(open(sidecar_path(engine)).read())
    assert sidecar["metadata"]["sdk.model_name"] == "lenet5" and sidecar["inputs"][0]["shape"] == [None, 1, 32, 32]
    assert sidecar["profiles"][0]["input"] == {"min": [1, 1, 32, 32], "opt": [8, 1, 32, 32], "max": [32, 1, 32, 32]}
    assert os.path.getsize(engine.parent / "timing.cache") > 0
    with TensorRTRunner(engine) as rt:
        assert rt.backend == "tensorrt" and rt.inputs == [spec(None, 1, 32, 32)]
        assert rt.metadata["sdk.model_name"] == "lenet5"
        for batch in (1, 5, 32):
            x = np.random.default_rng(batch).standard_normal((batch, 1, 32, 32)).astype(np.float32)
            np.testing.assert_allclose(rt.run({"input": x})["output"], _ort(onnx_path, x), atol=1e-3, rtol=1e-3)
        with pytest.raises(InputError, match=r"shape \(33, 1, 32, 32\).*max \(32, 1, 32, 32\)"):
            rt.run({"input": np.zeros((33, 1, 32, 32), np.float32)})
    again = build_engine(onnx_path, engine, example_shapes={"input": (8, 1, 32, 32)})
    assert again.reused


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_engine(lenet, tmp_path):
    import tensorrt

    onnx_path = lenet[0]
    if int(tensorrt.__version__.split(".")[0]) >= 11:  # no FP16 flag: the graph must carry FP16 (AutoCast)
        with pytest.raises(BackendUnavailableError, match="AutoCast"):
            build_engine(onnx_path, tmp_path / "fp16.engine", precision="fp16")
        return
    report = build_engine(onnx_path, tmp_path / "fp16.engine", precision="fp16")
    assert report.precision == "fp16"
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    with TensorRTRunner(tmp_path / "fp16.engine") as rt:
        np.testing.assert_allclose(rt(x), _ort(onnx_path, x), atol=5e-2, rtol=5e-2)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_int8_engine_from_qdq(gpu, tmp_path):
    onnx.save(qdq_conv_model(), tmp_path / "q.onnx")
    build_engine(tmp_path / "q.onnx", tmp_path / "q.engine", precision="int8")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 1, 8, 8)).astype(np.float32)
    with TensorRTRunner(tmp_path / "q.engine") as rt:
        np.testing.assert_allclose(rt(x), _ort(tmp_path / "q.onnx", x), atol=2e-2)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_one_runner_shared_by_threads(lenet):
    xs = [np.random.default_rng(i).standard_normal((1 + i % 4, 1, 32, 32)).astype(np.float32) for i in range(8)]
    with TensorRTRunner(lenet[1]) as rt:
        expected = [rt(x) for x in xs]
        results, errors = [None] * len(xs), []

        def work(i):
            try:
                for _ in range(20):
                    results[i] = rt(xs[i])
            except Exception as e:  # surfaced below; a thread's exception is otherwise lost
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(rt._states) == len(xs) + 1  # one context per thread, plus the main thread's
        for got, want in zip(results, expected):
            np.testing.assert_allclose(got, want, atol=1e-6)
    assert rt.engine is None and rt._states == []


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_mismatch_missing_sidecar_truncation_and_rebuild(lenet, tmp_path):
    onnx_path, engine, _ = lenet
    copy = tmp_path / "copy.engine"
    copy.write_bytes(engine.read_bytes())
    with pytest.raises(ModelLoadError, match="no sidecar.*check=False"):
        TensorRTRunner(copy)
    TensorRTRunner(copy, check=False).close()
    sidecar = json.loads(open(sidecar_path(engine)).read())
    with open(sidecar_path(copy), "w") as f:
        json.dump({**sidecar, "gpu_name": "Some Other GPU"}, f)
    with pytest.raises(EngineMismatchError, match="Some Other GPU.*rebuild_from="):
        TensorRTRunner(copy)
    with TensorRTRunner(copy, rebuild_from=onnx_path) as rt:  # explicit opt-in: rebuilt, logged
        assert rt.rebuilt is not None and not rt.rebuilt.reused
        assert load_sidecar(copy)["gpu_name"] == rt.device.name
    half = tmp_path / "half.engine"
    half.write_bytes(engine.read_bytes()[: os.path.getsize(engine) // 2])
    with open(sidecar_path(half), "w") as f:
        json.dump(sidecar, f)
    with pytest.raises(ModelLoadError, match="truncated"):
        TensorRTRunner(half)
    with pytest.raises(ModelLoadError, match="could not deserialize"):
        TensorRTRunner(half, check=False)
