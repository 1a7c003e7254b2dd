import json
import subprocess
import sys
import types

import numpy as np
import pytest

from deploysdk import Runtime
from deploysdk.cli import build_parser, main, parse_profile

COMMANDS = ["export", "optimize", "quantize", "build-engine", "run", "bench", "compare", "inspect"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An SDK checkpoint (with config), its ONNX export, a model with other weights, and an input."""
    import torch

    from trainsdk.models import create_model

    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=4)
    ckpt = folder / "lenet.pt"
    torch.save({"model_name": "lenet5", "config": model.config.to_dict(), "state_dict": model.state_dict()}, ckpt)
    torch.manual_seed(1)
    other = create_model("lenet5", num_classes=4)
    other_ckpt = folder / "other.pt"
    torch.save({"model_name": "lenet5", "state_dict": other.state_dict()}, other_ckpt)
    x = folder / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((2, 1, 32, 32)))  # float64, as np.save writes by default
    onnx_path = folder / "lenet.onnx"
    assert main(["export", str(ckpt), str(onnx_path)]) == 0
    return {"dir": folder, "ckpt": ckpt, "other": other_ckpt, "onnx": onnx_path, "x": x}


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: deploysdk {command}" in out and "Exit status" in out
    assert len(out.split("\n\n")[1]) > 60, "the description explains the command"


def test_python_m_deploysdk_help():
    out = subprocess.run([sys.executable, "-m", "deploysdk", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(c in out.stdout for c in COMMANDS)


def test_export_run_inspect_bench(files, capsys):
    code, out, _ = _run(capsys, ["inspect", files["onnx"]])
    assert code == 0 and "input:     input: float32[?, 1, 32, 32]" in out and "sdk.model_name = lenet5" in out
    npz = files["dir"] / "out" / "y.npz"
    code, out, err = _run(capsys, ["run", files["onnx"], "--input", files["x"], "--output", npz])
    assert code == 0 and "output output: float32[2, 4]" in out and "cast from float64 to float32" in err
    x = np.load(files["x"]).astype(np.float32)
    with Runtime(files["onnx"]) as rt:
        np.testing.assert_array_equal(np.load(npz)["output"], rt(x))
    code, out, _ = _run(capsys, ["run", files["ckpt"], "--input", f"input={files['x']}"])  # torch backend
    assert code == 0 and "torch on" in out
    code, out, _ = _run(capsys, ["bench", files["onnx"], "--batch", 2, "--iterations", 5, "--threads", 1])
    assert code == 0 and "p50" in out and "(2, 1, 32, 32)" in out


def test_export_static(files, capsys):
    path = files["dir"] / "static.onnx"
    code, out, _ = _run(capsys, ["export", files["ckpt"], path, "--static", "--opset", 18])
    assert code == 0 and "opset 18" in out
    with Runtime(path) as rt:
        assert rt.inputs[0].shape == (1, 1, 32, 32)


def test_compare_passes_and_fails(files, capsys):
    code, out, _ = _run(capsys, ["compare", files["ckpt"], files["onnx"], "--samples", 2])
    assert code == 0 and "overall: PASS" in out and "2 feed(s)" in out
    code, out, _ = _run(capsys, ["compare", files["onnx"], files["other"], "--input", files["x"]])
    assert code == 1 and "overall: FAIL" in out
    code, out, _ = _run(capsys, ["compare", files["onnx"], files["other"], "--tol", "output=100,100"])
    assert code == 0


@pytest.mark.parametrize("argv,match", [
    (["run", "{dir}/missing.onnx", "--input", "{x}"], "not found"),
    (["run", "{onnx}", "--input", "{dir}/missing.npy"], "cannot read"),
    (["run", "{onnx}", "--input", "{x}", "--device", "gpu"], "device must be"),
    (["inspect", "{dir}/missing.engine"], "not found"),
    (["export", "{dir}/missing.pt", "{dir}/m.onnx"], "checkpoint not found"),
    (["compare", "{onnx}", "{onnx}", "--tol", "output=1"], "--tol must be"),
    (["build-engine", "{onnx}", "{dir}/m.engine", "--profile", "input:1x1"], "--profile must be"),
    (["quantize", "{onnx}", "{dir}/q.onnx", "--calibration", "{x}", "--max-drop", "0.1"], "--max-drop needs"),
])
def test_user_errors_are_one_line(files, capsys, argv, match):
    code, _, err = _run(capsys, [a.format(**files) for a in argv])
    assert code == 2
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_cuda_request_fails_clearly(files, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYSDK_TRT_CACHE", str(tmp_path / "trt-cache"))
    pytest.importorskip("onnxruntime")
    import ctypes
    import os

    import onnxruntime

    try:
        ctypes.CDLL(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime_providers_cuda.so"))
        pytest.skip("the CUDA provider's libraries load here")
    except OSError:
        pass
    code, _, err = _run(capsys, ["run", files["onnx"], "--input", files["x"], "--backend", "onnxruntime",
                                 "--device", "cuda:0"])
    assert code == 2 and "CUDAExecutionProvider" in err and err.count("\n") == 1


def _fake(monkeypatch, module: str, **functions):
    """Stand-in for a backing module: records the calls the command makes."""
    calls = []
    fake = types.ModuleType(f"deploysdk.{module}")
    for name in functions:
        setattr(fake, name, lambda *a, _n=name, **k: calls.append((_n, a, k)) or f"{_n} done")
    monkeypatch.setitem(sys.modules, f"deploysdk.{module}", fake)
    return calls


def test_backing_functions_are_called_as_documented(files, capsys, monkeypatch):
    onnx, d = str(files["onnx"]), files["dir"]
    calls = _fake(monkeypatch, "optimize", optimize_graph=1, convert_fp16=1)
    assert _run(capsys, ["optimize", onnx, d / "o.onnx", "--level", "extended"])[:2] == (0, "optimize_graph done\n")
    assert calls[-1] == ("optimize_graph", (onnx, str(d / "o.onnx")), {"level": "extended"})
    assert _run(capsys, ["optimize", onnx, d / "h.onnx", "--level", "none", "--fp16", "--no-keep-io-types"])[0] == 0
    assert calls[-1] == ("convert_fp16", (onnx, str(d / "h.onnx")), {"keep_io_types": False})
    assert _run(capsys, ["optimize", onnx, d / "h.onnx", "--fp16"])[0] == 0  # both, graph first
    assert [c[0] for c in calls[-2:]] == ["optimize_graph", "convert_fp16"]
    calls = _fake(monkeypatch, "quantize", quantize_int8=1)
    assert _run(capsys, ["quantize", onnx, d / "q.onnx", "--calibration", d, "--target", "tensorrt"])[0] == 0
    name, args, kw = calls[-1]
    assert args == (onnx, str(d / "q.onnx"), str(d)) and kw["target"] == "tensorrt" and kw["per_channel"] is True
    assert _run(capsys, ["quantize", onnx, d / "q.onnx", "--calibration", files["x"], "--per-tensor"])[0] == 0
    assert isinstance(calls[-1][1][2], np.ndarray) and calls[-1][2]["per_channel"] is False
    calls = _fake(monkeypatch, "tensorrt", build_engine=1)
    argv = ["build-engine", onnx, d / "m.engine", "--precision", "fp16", "--workspace", "1GiB",
            "--profile", "input:1x1x32x32:4x1x32x32:8x1x32x32"]
    assert _run(capsys, argv)[0] == 0
    assert calls[-1][2] == {"precision": "fp16", "workspace": "1GiB", "timing_cache": None,
                            "profiles": [{"input": ((1, 1, 32, 32), (4, 1, 32, 32), (8, 1, 32, 32))}]}


def test_missing_backing_module_is_a_clear_error(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "deploysdk.optimize", None)  # import raises ImportError
    code, _, err = _run(capsys, ["optimize", files["onnx"], files["dir"] / "o.onnx"])
    assert code == 2 and "needs deploysdk.optimize.optimize_graph" in err and err.count("\n") == 1


def test_inspect_engine_prints_sidecar(files, capsys):
    engine = files["dir"] / "m.engine"
    engine.write_bytes(b"engine bytes")
    (files["dir"] / "m.engine.json").write_text(json.dumps({"tensorrt_version": "10.9", "precision": "fp16"}))
    code, out, _ = _run(capsys, ["inspect", engine])
    assert code == 0 and "engine:    tensorrt_version = 10.9" in out and "cannot open the engine here" in out


def test_parse_profile_and_parser():
    assert parse_profile("x:1x2:3x4:5x6") == ("x", ((1, 2), (3, 4), (5, 6)))
    assert build_parser().parse_args(["inspect", "m.onnx"]).device is None
