import json
import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploysdk.cli import main
from deploysdk.errors import InputError, ModelLoadError
from deploysdk.triton import triton_config, write_triton_repo


# --- a tiny protobuf text-format parser (tritonclient is not installed) -------------------------------------------
_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?\s*)*("(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+)')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while True:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            assert not text[pos:].strip(), f"unparsed: {text[pos:pos + 40]!r}"
            return out
        out.append(m.group(1))
        pos = m.end()


def _value(tok: str):
    if tok.startswith('"'):
        return json.loads(tok)
    return int(tok) if re.fullmatch(r"-?\d+", tok) else tok  # enums (TYPE_FP32, KIND_GPU) stay names


def _parse_fields(toks, i, end):
    """Fields until ``end``; repeated fields become lists. Returns (dict, index after the closing token)."""
    msg: dict = {}
    while toks[i] != end:
        key = toks[i]
        i += 1
        if toks[i] == ":":
            i += 1
        if toks[i] == "{":
            value, i = _parse_fields(toks, i + 1, "}")
        elif toks[i] == "[":
            value, i = [], i + 1
            while toks[i] != "]":
                if toks[i] == "{":
                    item, i = _parse_fields(toks, i + 1, "}")
                else:
                    item, i = _value(toks[i]), i + 1
                value.append(item)
                i += toks[i] == ","
            i += 1
        else:
            value, i = _value(toks[i]), i + 1
        msg.setdefault(key, []).append(value) if key in msg else msg.__setitem__(key, value)
    return msg, i + 1


def parse_pbtxt(text: str) -> dict:
    toks = _tokens(text) + ["<end>"]
    msg, _ = _parse_fields(toks, 0, "<end>")
    return msg


def test_parser_itself():
    text = 'a: "x\\"y"  # comment\nb [ 1, -1 ]\nc { d: E f: 2 }\ng [ { h: 1 }, { h: 2 } ]\n'
    assert parse_pbtxt(text) == {"a": 'x"y', "b": [1, -1], "c": {"d": "E", "f": 2}, "g": [{"h": 1}, {"h": 2}]}


# --- models -------------------------------------------------------------------------------------------------------
def _onnx_model(path, *, batch="N", external=False):
    """y = x + bias (float32, (batch, 1, H, W)) and a second output: the int64 shape of x."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, "H", "W"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1, "H", "W"])
    s = helper.make_tensor_value_info("shape", TensorProto.INT64, [4])
    bias = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "bias")
    graph = helper.make_graph([helper.make_node("Add", ["image", "bias"], ["logits"]),
                               helper.make_node("Shape", ["image"], ["shape"])], "g", [x], [y, s], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, os.fspath(path), save_as_external_data=external, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    return str(path)


def _onnx_two_outputs(path, batch="N"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [batch, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [batch, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), os.fspath(path))
    return str(path)


def _engine(folder, *, sidecar=True, max_batch=16):
    path = os.path.join(folder, "unet.engine")
    with open(path, "wb") as f:
        f.write(b"not really a plan")
    if sidecar:
        data = {"format": 1, "tensorrt_version": "10.9.0", "gpu_name": "NVIDIA H100", "compute_capability": "9.0",
                "precision": "fp16", "profiles": [{"input": {"min": [1, 1, 64, 64], "opt": [4, 1, 128, 128],
                                                             "max": [max_batch, 1, 256, 256]}}],
                "inputs": [{"name": "input", "dtype": "float32", "shape": [None, 1, None, None]}],
                "outputs": [{"name": "output", "dtype": "float16", "shape": [None, 2, None, None]}]}
        with open(path + ".json", "w") as f:
            json.dump(data, f)
    return path


def _config(folder) -> dict:
    with open(os.path.join(folder, "config.pbtxt"), encoding="utf-8") as f:
        return parse_pbtxt(f.read())


# --- tests --------------------------------------------------------------------------------------------------------
def test_output_without_batch_dim_disables_batching(tmp_path, caplog):
    cfg = _config(write_triton_repo(_onnx_model(tmp_path / "seg.onnx"), tmp_path / "repo"))
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg
    assert cfg["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [-1, 1, -1, -1]}]
    assert cfg["output"][1] == {"name": "shape", "data_type": "TYPE_INT64", "dims": [4]}
    assert "'shape' has a fixed first dimension" in caplog.text


def test_dynamic_batch_config_fields(tmp_path):
    src = _onnx_two_outputs(tmp_path / "half.onnx")
    folder = write_triton_repo(src, tmp_path / "repo", max_batch_size=16, preferred_batch_sizes=[16, 4, 4],
                               max_queue_delay_us=250, instances=2, kind="gpu", gpus=[0, 1], version=3)
    assert sorted(os.listdir(folder)) == ["3", "config.pbtxt"] and os.listdir(os.path.join(folder, "3")) == [
        "model.onnx"]
    with open(os.path.join(folder, "3", "model.onnx"), "rb") as a, open(src, "rb") as b:
        assert a.read() == b.read()
    assert not any(f.startswith(".") for f in [*os.listdir(tmp_path), *os.listdir(tmp_path / "repo")])
    assert _config(folder) == {
        "name": "half", "platform": "onnxruntime_onnx", "max_batch_size": 16,
        "input": [{"name": "x", "data_type": "TYPE_FP16", "dims": [3]}],
        "output": [{"name": "y", "data_type": "TYPE_FP16", "dims": [3]}],
        "dynamic_batching": {"preferred_batch_size": [4, 16], "max_queue_delay_microseconds": 250},
        "instance_group": [{"count": 2, "kind": "KIND_GPU", "gpus": [0, 1]}],
    }
    text = open(os.path.join(folder, "config.pbtxt")).read()
    assert "# from half.onnx (sha256 " in text


def test_fixed_batch_one_gives_max_batch_size_zero(tmp_path, caplog):
    src = _onnx_two_outputs(tmp_path / "fixed.onnx", batch=1)
    cfg = _config(write_triton_repo(src, tmp_path / "repo", name="fixed_b1"))
    assert cfg["name"] == "fixed_b1" and cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg
    assert cfg["input"][0]["dims"] == [1, 3] and cfg["output"][0]["dims"] == [1, 3]
    assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert "Triton cannot batch" in caplog.text
    text = open(tmp_path / "repo" / "fixed_b1" / "config.pbtxt").read()
    assert "# note: 'x' has a fixed first dimension ([1, 3])" in text
    cfg0 = triton_config(_onnx_two_outputs(tmp_path / "dyn.onnx"), max_batch_size=0)
    assert cfg0.max_batch_size == 0 and cfg0.dims(cfg0.inputs[0]) == [-1, 3] and not cfg0.notes


def test_external_data_goes_into_a_model_onnx_folder(tmp_path):
    src = _onnx_model(tmp_path / "big.onnx", external=True)
    assert os.path.isfile(tmp_path / "weights.bin")
    folder = write_triton_repo(src, tmp_path / "repo", max_batch_size=0)
    inner = os.path.join(folder, "1", "model.onnx")
    assert os.path.isdir(inner) and sorted(os.listdir(inner)) == ["model.onnx", "weights.bin"]
    import onnxruntime as ort

    sess = ort.InferenceSession(os.path.join(inner, "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"image": np.zeros((1, 1, 2, 2), np.float32)})[0]
    np.testing.assert_array_equal(out, 0.5)  # the weights came along


def test_engine_with_sidecar(tmp_path, caplog):
    src = _engine(tmp_path)
    folder = write_triton_repo(src, tmp_path / "repo", kind="gpu", max_batch_size=16)
    assert os.listdir(os.path.join(folder, "1")) == ["model.plan"]
    cfg = _config(folder)
    assert cfg["platform"] == "tensorrt_plan" and cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, -1, -1]}]
    assert cfg["output"] == [{"name": "output", "data_type": "TYPE_FP16", "dims": [2, -1, -1]}]
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 100}
    assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    assert "TensorRT 10.9.0" in caplog.text and "NVIDIA H100" in caplog.text


def test_engine_errors(tmp_path):
    bare = _engine(tmp_path, sidecar=False)
    with pytest.raises(ModelLoadError, match="no sidecar .*unet.engine.json"):
        write_triton_repo(bare, tmp_path / "repo", kind="gpu")
    src = _engine(tmp_path, max_batch=4)
    with pytest.raises(InputError, match="exceeds the engine's largest profile batch 4"):
        write_triton_repo(src, tmp_path / "repo", kind="gpu", max_batch_size=8)
    with pytest.raises(InputError, match="only on a GPU"):
        write_triton_repo(src, tmp_path / "repo", kind="cpu", max_batch_size=4)
    with pytest.raises(InputError, match="needs an .onnx file"):
        write_triton_repo(src, tmp_path / "repo", platform="onnxruntime")
    assert not os.path.exists(tmp_path / "repo") or os.listdir(tmp_path / "repo") == []


def test_overwrite_refused_unless_asked(tmp_path):
    repo = tmp_path / "repo"
    first = write_triton_repo(_onnx_two_outputs(tmp_path / "m.onnx"), repo, max_batch_size=4)
    write_triton_repo(_onnx_two_outputs(tmp_path / "other.onnx"), repo)  # a second model beside it
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_triton_repo(_onnx_two_outputs(tmp_path / "m.onnx"), repo, max_batch_size=2)
    assert _config(first)["max_batch_size"] == 4
    write_triton_repo(_onnx_two_outputs(tmp_path / "m.onnx"), repo, max_batch_size=2, version=2, overwrite=True)
    assert _config(first)["max_batch_size"] == 2 and sorted(os.listdir(first)) == ["2", "config.pbtxt"]
    assert sorted(os.listdir(repo)) == ["m", "other"]
    assert not any(f.startswith(".") for f in os.listdir(tmp_path))


@pytest.mark.parametrize("kw, match", [
    ({"max_batch_size": -1}, "max_batch_size must be an integer >= 0"),
    ({"preferred_batch_sizes": [16]}, r"preferred batch sizes \[16\] exceed max_batch_size 8"),
    ({"instances": 0}, "instances must be"), ({"kind": "tpu"}, "kind must be"), ({"version": 0}, "version must be"),
    ({"platform": "tf"}, "platform must be"), ({"name": "a/b"}, "model name 'a/b'"), ({"name": ".."}, "model name"),
    ({"gpus": [0]}, "need kind='gpu'"), ({"gpus": [-1], "kind": "gpu"}, "GPU index"),
])
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        write_triton_repo(_onnx_two_outputs(tmp_path / "m.onnx"), tmp_path / "repo", **kw)
    assert not os.path.exists(tmp_path / "repo")


def test_cli(tmp_path, capsys):
    src = _onnx_two_outputs(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    argv = ["triton-repo", src, str(repo), "--name", "cls", "--max-batch-size", "4", "--preferred-batch-size", "2",
            "4", "--instances", "3", "--kind", "gpu", "--max-queue-delay-us", "50"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {repo / 'cls'}" in out and "tritonserver --model-repository=" in out
    cfg = _config(repo / "cls")
    assert cfg["max_batch_size"] == 4 and cfg["instance_group"] == [{"count": 3, "kind": "KIND_GPU"}]
    assert cfg["dynamic_batching"] == {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 50}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deploysdk triton-repo: error:") and "already exists" in err and err.count("\n") == 1
    assert main(argv + ["--overwrite"]) == 0
    assert main(["triton-repo", str(tmp_path / "missing.onnx"), str(repo)]) == 2
    assert "model not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["triton-repo", "--help"])
    assert info.value.code == 0 and "Exit status" in capsys.readouterr().out
