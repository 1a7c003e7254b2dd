import json
import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

from deploysdk import BackendUnavailableError, InputError, ModelLoadError, Runtime, compare
from deploysdk.runtime import OnnxRuntimeRunner, TensorRTOptions, TensorSpec, plan_candidates, warmup_feed
from deploysdk.runtime.onnxrt import cuda_provider, providers_for_device, tensorrt_provider
from deploysdk.runtime.torch import TorchRunner, infer_config


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    from deploysdk.export import export_onnx
    from trainsdk.models import create_model

    path = tmp_path_factory.mktemp("rt") / "lenet.onnx"
    model = create_model("lenet5", num_classes=4)
    export_onnx(model, path)
    return path, model


def test_runtime_reports_backend_and_specs(lenet_onnx):
    path, _ = lenet_onnx
    with Runtime(path) as rt:
        assert rt.backend == "onnxruntime"
        assert rt.providers == ["CPUExecutionProvider"]
        assert rt.inputs == [TensorSpec("input", np.dtype(np.float32), (None, 1, 32, 32))]
        assert rt.outputs[0].shape == (None, 4)
        assert rt.metadata["sdk.model_name"] == "lenet5"


def test_runtime_matches_torch(lenet_onnx):
    import torch

    path, model = lenet_onnx
    x = np.random.default_rng(0).standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    with Runtime(path, backend="onnxruntime") as rt:
        np.testing.assert_allclose(rt(x), ref, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(rt.run({"input": x})["output"], ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("feed,match", [
    ({"inp": np.zeros((1, 1, 32, 32), np.float32)}, r"missing \['input'\], unexpected \['inp'\]"),
    ({"input": np.zeros((1, 1, 32, 32), np.float64)}, "expected dtype float32, got float64"),
    ({"input": np.zeros((1, 32, 32), np.float32)}, "expected rank 4"),
    ({"input": np.zeros((1, 3, 32, 32), np.float32)}, "dimension 1 must be 1"),
    ({"input": [[0.0]]}, "expected a numpy.ndarray, got list"),
])
def test_bad_feeds_are_explained(lenet_onnx, feed, match):
    with Runtime(lenet_onnx[0]) as rt:
        with pytest.raises(InputError, match=match):
            rt.run(feed)


def test_nan_inputs_flagged_when_asked(lenet_onnx):
    x = np.zeros((1, 1, 32, 32), np.float32)
    x[0, 0, 3, 3] = np.nan
    with Runtime(lenet_onnx[0], check_finite=True) as rt:
        with pytest.raises(InputError, match="1 NaN/inf"):
            rt(x)


def test_missing_and_corrupt_files(tmp_path, lenet_onnx):
    with pytest.raises(ModelLoadError, match="not found"):
        Runtime(tmp_path / "nope.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(lenet_onnx[0].read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="could not load"):
        Runtime(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError):
        Runtime(garbage)


def test_named_provider_that_cannot_load_raises(lenet_onnx):
    # This machine has no NVIDIA libraries: ONNX Runtime would quietly run on CPU; the runtime must refuse.
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        try:
            import ctypes

            ctypes.CDLL("libcudart.so.12")
            pytest.skip("CUDA libraries present: the CUDA provider may load")
        except OSError:
            pass
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        OnnxRuntimeRunner(lenet_onnx[0], device="cuda:0")
    with pytest.raises(BackendUnavailableError):
        Runtime(lenet_onnx[0], backend="onnxruntime", device="cuda")


def test_bad_arguments(lenet_onnx):
    with pytest.raises(ValueError, match="backend must be one of"):
        Runtime(lenet_onnx[0], backend="tensorflow")
    with pytest.raises(ValueError, match="device must be"):
        Runtime(lenet_onnx[0], device="gpu0")
    with pytest.raises(ValueError, match="threads"):
        Runtime(lenet_onnx[0], threads=0)


def test_thread_safe_shared_runtime(lenet_onnx):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 1, 32, 32)).astype(np.float32) for _ in range(8)]
    with Runtime(lenet_onnx[0], threads=1) as rt:
        expected = [rt(x) for x in xs]
        results = [None] * len(xs)

        def work(i):
            for _ in range(10):
                results[i] = rt(xs[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got, want in zip(results, expected):
            np.testing.assert_array_equal(got, want)


def test_benchmark_stats(lenet_onnx):
    with Runtime(lenet_onnx[0]) as rt:
        stats = rt.benchmark({"input": np.zeros((4, 1, 32, 32), np.float32)}, iterations=20, warmup=2)
    assert stats.iterations == 20 and stats.batch_size == 4
    assert 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.throughput > 0


def test_runtime_does_not_import_torch():
    code = ("import sys, deploysdk, deploysdk.runtime, deploysdk.compare, deploysdk.cli, deploysdk.runtime.torch; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _cuda_libs_present() -> bool:
    """Whether ONNX Runtime's CUDA provider library loads here (the libraries it needs are installed)."""
    import ctypes
    import os

    import onnxruntime

    lib = os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime_providers_cuda.so")
    try:
        ctypes.CDLL(lib)
        return True
    except OSError:
        return False


# --- backend selection --------------------------------------------------------------------------------------------
def test_auto_on_cpu_picks_ort_cpu_and_says_so(lenet_onnx, caplog):
    with caplog.at_level(logging.INFO, logger="deploysdk.runtime"):
        with Runtime(lenet_onnx[0], backend="auto", device="cpu") as rt:
            assert (rt.backend, rt.providers) == ("onnxruntime", ["CPUExecutionProvider"])
            assert rt.describe() == "onnxruntime on ['CPUExecutionProvider']"
    assert "trying onnxruntime CPU EP" in caplog.text
    assert "onnxruntime runs" in caplog.text and "CPUExecutionProvider" in caplog.text


def test_candidate_plan():
    labels = lambda *a, **k: [c.label for c in plan_candidates(*a, **k)]  # noqa: E731
    assert labels("onnx", "auto", "cpu") == ["onnxruntime CPU EP"]
    assert labels("onnx", "auto", "cuda:1") == ["onnxruntime TensorRT EP", "onnxruntime CUDA EP"]
    assert labels("onnx", "onnxruntime", "cuda") == ["onnxruntime CUDA EP"]
    assert labels("onnx", "tensorrt", "cuda:0") == ["onnxruntime TensorRT EP"]
    assert labels("engine", "auto", "cuda:0") == ["tensorrt engine"]
    assert labels("checkpoint", "auto", "cpu") == ["torch eager"] == labels("module", "torch", "cpu")
    assert plan_candidates("onnx", "auto", "cuda", providers=["CPUExecutionProvider"])[0].options == {
        "providers": ["CPUExecutionProvider"]}
    for args in [("engine", "auto", "cpu"), ("engine", "onnxruntime", "cuda:0"), ("onnx", "torch", "cpu"),
                 ("onnx", "tensorrt", "cpu"), ("checkpoint", "onnxruntime", "cpu")]:
        with pytest.raises(BackendUnavailableError):
            plan_candidates(*args)


def test_explicit_tensorrt_raises_here(lenet_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYSDK_TRT_CACHE", str(tmp_path / "trt-cache"))  # keep the engine cache out of $HOME
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        Runtime(lenet_onnx[0], backend="tensorrt")
    if _cuda_libs_present():
        pytest.skip("CUDA libraries present: TensorRT may load")
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        Runtime(lenet_onnx[0], backend="tensorrt", device="cuda:0")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailableError):
        Runtime(engine, backend="tensorrt", device="cuda:0")
    with pytest.raises(BackendUnavailableError):
        Runtime(engine, device="cuda:0")  # auto: an engine has no other backend


def test_auto_on_cuda_never_falls_back_to_cpu(lenet_onnx, caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYSDK_TRT_CACHE", str(tmp_path / "trt-cache"))
    if _cuda_libs_present():
        pytest.skip("CUDA libraries present")
    with caplog.at_level(logging.INFO, logger="deploysdk.runtime"):
        with pytest.raises(BackendUnavailableError, match="no backend could run") as info:
            Runtime(lenet_onnx[0], device="cuda:0")
    assert "CUDAExecutionProvider" in str(info.value) and "CPUExecutionProvider" in str(info.value)
    assert "skipped onnxruntime TensorRT EP" in caplog.text and "skipped onnxruntime CUDA EP" in caplog.text


def test_cuda_with_onnxruntime_names_the_missing_library(lenet_onnx):
    if _cuda_libs_present():
        pytest.skip("CUDA libraries present")
    with pytest.raises(BackendUnavailableError, match=r"CUDAExecutionProvider.*failed to load \(.*\.so") as info:
        Runtime(lenet_onnx[0], backend="onnxruntime", device="cuda:0")
    assert "would have run on ['CPUExecutionProvider']" in str(info.value)


# --- provider and session options -------------------------------------------------------------------------------
def test_cuda_provider_options():
    name, opts = cuda_provider(1, {"cudnn_conv_algo_search": "HEURISTIC", "gpu_mem_limit": 2**30, "use_tf32": False,
                                   "extra": {"do_copy_in_default_stream": 1}})
    assert name == "CUDAExecutionProvider"
    assert opts == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "gpu_mem_limit": str(2**30),
                    "use_tf32": "False", "do_copy_in_default_stream": "1"}
    assert cuda_provider() == ("CUDAExecutionProvider", {"device_id": "0"})  # None fields keep ORT's defaults
    with pytest.raises(ValueError, match="unknown option.*accepted"):
        cuda_provider(0, {"cudnn_algo": "x"})
    with pytest.raises(ValueError, match="cudnn_conv_algo_search"):
        cuda_provider(0, {"cudnn_conv_algo_search": "FAST"})


def test_tensorrt_provider_options(tmp_path, monkeypatch):
    profiles = {"input": ((1, 1, 32, 32), (4, 1, 32, 32), (8, 1, 32, 32))}
    name, opts = tensorrt_provider(2, TensorRTOptions(fp16=True, engine_cache_path=str(tmp_path), profiles=profiles,
                                                      workspace_bytes=2**30))
    assert name == "TensorrtExecutionProvider"
    assert opts["device_id"] == "2" and opts["trt_fp16_enable"] == "True" and opts["trt_int8_enable"] == "False"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_timing_cache_enable"] == "True" and opts["trt_max_workspace_size"] == str(2**30)
    assert (opts["trt_profile_min_shapes"], opts["trt_profile_max_shapes"]) == ("input:1x1x32x32", "input:8x1x32x32")
    monkeypatch.setenv("DEPLOYSDK_TRT_CACHE", str(tmp_path / "env"))
    assert tensorrt_provider()[1]["trt_engine_cache_path"] == str(tmp_path / "env")
    assert "trt_engine_cache_path" not in tensorrt_provider(0, {"engine_cache": False, "timing_cache": False})[1]
    with pytest.raises(ValueError, match=r"\(min, opt, max\)"):
        tensorrt_provider(0, {"profiles": {"input": ((1, 1, 32, 32),)}})


def test_providers_for_device():
    assert providers_for_device("cpu") == ["CPUExecutionProvider"]
    order = [p if isinstance(p, str) else p[0] for p in providers_for_device("cuda:3", tensorrt=True)]
    assert order == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for_device("cuda:3")[0] == ("CUDAExecutionProvider", {"device_id": "3"})
    with pytest.raises(BackendUnavailableError):
        providers_for_device("cpu", tensorrt=True)


def test_session_and_provider_options_reach_the_session(lenet_onnx):
    import onnxruntime as ort

    with Runtime(lenet_onnx[0], threads=1, optimization="basic") as rt:
        so = rt.runner.session.get_session_options()
        assert so.intra_op_num_threads == 1
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        assert rt.runner.provider_options() == {"CPUExecutionProvider": {}}
    with Runtime(lenet_onnx[0], providers=[("CPUExecutionProvider", {})]) as rt:
        assert rt.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="optimization must be one of"):
        Runtime(lenet_onnx[0], optimization="max")


# --- I/O binding --------------------------------------------------------------------------------------------------
def test_io_binding_parity_on_cpu(lenet_onnx):
    rng = np.random.default_rng(2)
    with Runtime(lenet_onnx[0]) as plain, Runtime(lenet_onnx[0], io_binding=True) as bound:
        assert bound.io_binding and not plain.io_binding
        assert "I/O binding" in bound.describe()
        kept = []
        for batch in (1, 3, 3, 1, 3):  # shape changes re-bind, repeats reuse the preallocated outputs
            x = rng.standard_normal((batch, 1, 32, 32)).astype(np.float32)
            got = bound(x)
            np.testing.assert_array_equal(got, plain(x))
            kept.append((x, got.copy(), got))
        for x, snapshot, got in kept:  # earlier results were not overwritten by later calls
            np.testing.assert_array_equal(got, snapshot)
        with pytest.raises(InputError):
            bound.run({"input": np.zeros((1, 1, 31, 32), np.float32)})


def test_io_binding_thread_safe(lenet_onnx):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 1, 32, 32)).astype(np.float32) for _ in range(6)]
    with Runtime(lenet_onnx[0], threads=1, io_binding=True) as rt:
        expected = [rt(x) for x in xs]
        results = [[] for _ in xs]
        threads = [threading.Thread(target=lambda i=i: results[i].extend(rt(xs[i]) for _ in range(20)))
                   for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for got, want in zip(results, expected):
        assert len(got) == 20
        for g in got:
            np.testing.assert_array_equal(g, want)


# --- warm-up ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unet_onnx(tmp_path_factory):
    from deploysdk.export import export_onnx
    from trainsdk.models import create_model

    path = tmp_path_factory.mktemp("unet") / "unet.onnx"
    model = create_model("unet", base_width=4, depth=2, num_classes=2)
    export_onnx(model, path)
    return path, model


def test_warmup_with_dynamic_spatial_dims(unet_onnx, monkeypatch):
    path, model = unet_onnx
    seen = []
    original = OnnxRuntimeRunner.run
    monkeypatch.setattr(OnnxRuntimeRunner, "run", lambda self, feed, names=None: (
        seen.append({k: v.shape for k, v in feed.items()}), original(self, feed, names))[1])
    with Runtime(path, warmup=2) as rt:
        assert rt.inputs[0].shape == (None, 1, None, None)
        size = tuple(model.default_input_size)
        assert seen == [{"input": (1, 1) + size}] * 2
        x = np.random.default_rng(0).standard_normal((1, 1, 48, 64)).astype(np.float32)
        assert rt(x).shape == (1, 2, 48, 64)


def test_warmup_skipped_without_a_shape(unet_onnx, tmp_path, caplog):
    import onnx

    proto = onnx.load(unet_onnx[0])
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    assert warmup_feed([TensorSpec("input", np.dtype(np.float32), (None, 1, None, None))], {}) is None
    with caplog.at_level(logging.DEBUG, logger="deploysdk.runtime"):
        with Runtime(bare) as rt:
            assert rt.metadata == {}
    assert "no warm-up" in caplog.text


def test_warmup_feed_from_contract():
    spec = TensorSpec("input", np.dtype(np.float32), (None, 1, None, None))
    meta = {"sdk.input_contract": json.dumps({"channels": 1, "default_size": [64, 96]})}
    feed = warmup_feed([spec], meta)
    assert feed["input"].shape == (1, 1, 64, 96) and feed["input"].dtype == np.float32
    assert warmup_feed([spec], {"sdk.input_contract": "not json"}) is None


# --- torch backend ------------------------------------------------------------------------------------------------
def test_torch_runner_from_module_matches_ort(lenet_onnx):
    path, model = lenet_onnx
    runner = TorchRunner(model)
    assert runner.backend == "torch" and runner.providers == ["torch-eager-cpu"]
    assert runner.inputs == [TensorSpec("input", np.dtype(np.float32), (None, 1, 32, 32))]
    assert runner.outputs == [TensorSpec("output", np.dtype(np.float32), (None, 4))]
    assert json.loads(runner.metadata["sdk.input_contract"])["default_size"] == [32, 32]
    feeds = [np.random.default_rng(i).standard_normal((2, 1, 32, 32)).astype(np.float32) for i in range(3)]
    with Runtime(path) as rt:
        report = compare([runner, rt], feeds, atol=1e-5, rtol=1e-4)
    assert report.passed, report.summary()
    with pytest.raises(InputError, match="dimension 2 must be 32"):
        runner(np.zeros((1, 1, 28, 28), np.float32))
    with Runtime(model, backend="torch", check_finite=True) as rt:  # an nn.Module through the facade
        assert rt.backend == "torch" and rt.path == "<LeNet5>"
        np.testing.assert_array_equal(rt(feeds[0]), runner(feeds[0]))
        with pytest.raises(InputError, match="NaN"):
            rt(np.full((1, 1, 32, 32), np.nan, np.float32))


def test_torch_runner_from_checkpoint(lenet_onnx, tmp_path):
    import torch

    _, model = lenet_onnx
    with_config, demo_style = tmp_path / "with_config.pt", tmp_path / "demo_style.pt"
    torch.save({"model_name": "lenet5", "config": model.config.to_dict(), "state_dict": model.state_dict()},
               with_config)
    torch.save({"model_name": "lenet5", "state_dict": model.state_dict()}, demo_style)  # trainsdk.demo's format
    assert infer_config(model.state_dict()) == {"num_classes": 4, "in_channels": 1}
    x = np.random.default_rng(5).standard_normal((3, 1, 32, 32)).astype(np.float32)
    want = TorchRunner(model)(x)
    for ckpt in (with_config, demo_style):
        with Runtime(ckpt, backend="torch") as rt:
            assert rt.backend == "torch"
            np.testing.assert_array_equal(rt(x), want)
    with Runtime(demo_style) as rt:  # auto: a checkpoint runs on torch
        assert rt.backend == "torch" and rt.metadata["sdk.model_name"] == "lenet5"


def test_torch_runner_bad_checkpoints(tmp_path):
    import torch
    from trainsdk.models import create_model

    with pytest.raises(ModelLoadError, match="not found"):
        TorchRunner(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ModelLoadError, match="not an SDK checkpoint"):
        TorchRunner(tmp_path / "plain.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(ModelLoadError, match="weights_only"):
        TorchRunner(tmp_path / "pickled.pt")
    unet = create_model("unet", base_width=4, depth=2)
    torch.save({"model_name": "unet", "state_dict": unet.state_dict()}, tmp_path / "unet.pt")
    with pytest.raises(ModelLoadError, match="has no 'config'"):
        TorchRunner(tmp_path / "unet.pt")
    with pytest.raises(TypeError, match="nn.Module or a checkpoint path"):
        TorchRunner(42)
