import numpy as np
import pytest

import deploysdk
from deploysdk import InputError, Runtime, compare
from deploysdk.compare import CompareReport
from deploysdk.runtime import Runner, TensorSpec


@pytest.fixture(scope="module")
def lenets(tmp_path_factory):
    """The same architecture exported twice from different weights, and once with another output name."""
    import torch

    from deploysdk.export import export_onnx
    from trainsdk.models import create_model

    folder = tmp_path_factory.mktemp("cmp")
    paths = {}
    for name, seed, out in (("a", 0, "output"), ("b", 1, "output"), ("logits", 0, "logits")):
        torch.manual_seed(seed)
        model = create_model("lenet5", num_classes=4)
        paths[name] = folder / f"{name}.onnx"
        export_onnx(model, paths[name], output_names=[out])
    return paths


def _feeds(n=3, batch=2):
    return [np.random.default_rng(i).standard_normal((batch, 1, 32, 32)).astype(np.float32) for i in range(n)]


class FakeRunner(Runner):
    """Returns fixed outputs whatever the feed; optionally fails."""

    backend = "fake"

    def __init__(self, outputs: dict, fail: bool = False, input_name: str = "input"):
        self.inputs = [TensorSpec(input_name, np.dtype(np.float32), (None, 4))]
        self.outputs = [TensorSpec(k, np.dtype(v.dtype), v.shape) for k, v in outputs.items()]
        self.values, self.fail = outputs, fail

    def run(self, feed, output_names=None):
        if self.fail or list(feed) != [self.inputs[0].name]:
            raise InputError("this runner refuses every feed")
        return dict(self.values)


def test_same_model_passes(lenets):
    with Runtime(lenets["a"]) as ref, Runtime(lenets["a"], io_binding=True) as other:
        report = compare([ref, other], _feeds())
    assert isinstance(report, CompareReport) and report.passed and report.feeds == 3
    row = report.rows[0]
    assert (row.output, row.shape, row.max_abs, row.mismatched) == ("output", (2, 4), 0.0, 0)
    assert "overall: PASS (1/1" in report.summary()


def test_different_weights_are_a_mismatch(lenets):
    with Runtime(lenets["a"]) as ref, Runtime(lenets["b"]) as other:
        report = compare([ref, other], _feeds(), atol=1e-4, rtol=1e-3)
        assert not report.passed
        row = report.failures()[0]
        assert row.max_abs > 1e-3 and row.mean_abs > 0 and row.max_rel > 0 and row.mismatched > 0
        assert row.elements == 3 * 2 * 4
        text = report.summary()
        assert "FAIL" in text and "elements out of tolerance" in text and "b.onnx" in text
        loose = compare([ref, other], _feeds(), tolerances={"output": (10.0, 10.0)})  # per-output override
        assert loose.passed and loose.rows[0].atol == 10.0


def test_output_names_matched_by_position(lenets):
    with Runtime(lenets["a"]) as ref, Runtime(lenets["logits"]) as other:
        report = compare([ref, other], _feeds(1))
    assert report.passed, report.summary()
    assert report.rows[0].matched_as == "logits" and "output=logits" in report.summary()


def test_names_and_shapes_mismatch_are_reported_not_raised():
    ref = FakeRunner({"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 2), np.float32)})
    other = FakeRunner({"a": np.zeros((1, 5), np.float32), "c": np.zeros((1, 2), np.float32)})
    report = compare([ref, other], np.zeros((1, 4), np.float32), labels=["ref", "other"])
    notes = {r.output: r.notes for r in report.rows}
    assert notes["a"] == ["shape (1, 5) vs reference (1, 4)"]
    assert "no output 'b'" in notes["b"][0]
    assert notes["c"] == ["output not in the reference"]
    assert not report.passed and report.summary().count("FAIL") == 4  # 3 rows + the verdict


def test_runtime_failures_are_reported():
    ref = FakeRunner({"a": np.ones((1, 4), np.float32)})
    report = compare([ref, FakeRunner({}, fail=True)], [{"input": np.zeros((1, 4), np.float32)}] * 2)
    assert not report.passed
    assert report.rows[0].notes == ["run failed: InputError: this runner refuses every feed"]
    with pytest.raises(deploysdk.DeploySDKError, match="reference .* failed"):
        compare([FakeRunner({}, fail=True), ref], np.zeros((1, 4), np.float32))


def test_tolerance_and_nan_semantics():
    ref = FakeRunner({"a": np.array([[1.0, np.nan, 100.0, 0.0]], np.float32)})
    same_nan = FakeRunner({"a": np.array([[1.0, np.nan, 100.05, 0.0]], np.float32)})
    report = compare([ref, same_nan], np.zeros((1, 4), np.float32), atol=1e-6, rtol=1e-3)
    assert report.passed  # 0.05 <= 1e-6 + 1e-3 * 100; NaN matches NaN
    assert report.rows[0].max_abs == pytest.approx(0.05, rel=1e-3)
    nan_vs_number = FakeRunner({"a": np.array([[1.0, 2.0, 100.0, 0.0]], np.float32)})
    assert not compare([ref, nan_vs_number], np.zeros((1, 4), np.float32)).passed


def test_feed_forms_and_arguments(lenets):
    with Runtime(lenets["a"]) as ref, Runtime(lenets["a"]) as other:
        x = _feeds(1)[0]
        assert compare([ref, other], x).feeds == 1
        assert compare([ref, other], {"input": x}).feeds == 1
        assert compare([ref, other], [x, {"input": x}]).feeds == 2
        with pytest.raises(ValueError, match="at least one runtime"):
            compare([ref], x)
        with pytest.raises(ValueError, match="at least one feed"):
            compare([ref, other], [])


def test_compare_is_module_and_callable(lenets):
    import importlib

    module = importlib.import_module("deploysdk.compare")
    assert module is deploysdk.compare and module.compare is not None and callable(module)
    with Runtime(lenets["a"]) as ref, Runtime(lenets["a"]) as other:
        assert deploysdk.compare([ref, other], _feeds(1)).passed
        assert deploysdk.compare.compare([ref, other], _feeds(1)).passed


def test_single_input_feeds_follow_each_runtimes_input_name():
    ref = FakeRunner({"a": np.ones((1, 4), np.float32)})
    other = FakeRunner({"a": np.ones((1, 4), np.float32)}, input_name="image")
    assert compare([ref, other], [{"input": np.zeros((1, 4), np.float32)}]).passed
