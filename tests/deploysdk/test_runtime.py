import subprocess
import sys
import threading

import numpy as np
import pytest

from deploysdk import BackendUnavailableError, InputError, ModelLoadError, Runtime
from deploysdk.runtime import OnnxRuntimeRunner, TensorSpec


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
    code = ("import sys, deploysdk, deploysdk.runtime; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
