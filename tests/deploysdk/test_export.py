import json
import os

import numpy as np
import onnx
import pytest
import torch

from deploysdk import ParityError
from deploysdk.export import export_onnx, weights_checksum
from tests.zoo import small_model
from trainsdk.models import create_model, list_models

# Deep networks whose export alone takes tens of seconds on 2 cores; the default run covers each family once.
SLOW = {"resnet34", "resnet101", "resnet152", "plain34", "vgg13", "vgg13_bn", "vgg19", "vgg19_bn", "vgg11_bn",
        "vgg16", "googlenet_original", "fcn16s", "fcn32s"}


def _params(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


@pytest.mark.parametrize("name", [_params(n) for n in list_models()])
def test_every_model_exports_and_matches_onnxruntime(name, tmp_path):
    """opset >= 17, dynamic batch (and spatial dims for fully convolutional models), ORT == PyTorch."""
    model = small_model(name)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, opset=18)
    assert report.exporter == "dynamo", report.fallback_reason
    assert all(e.ok for e in report.errors)
    batches = {s[0] for s in report.checked_shapes}
    assert {1, 2, 3} <= batches
    proto = onnx.load(path)
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    assert inp[0].dim_param, "batch dimension must be dynamic"
    if model.dynamic_spatial:
        assert all(d.dim_param for d in inp[2:]), "spatial dims of a fully convolutional model must be dynamic"
        assert len({s[2:] for s in report.checked_shapes}) >= 2, "verified at a second spatial size"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["sdk.model_name"] == name
    assert json.loads(meta["sdk.config"])["num_classes"] == 3


def test_metadata_and_checksum(tmp_path):
    model = create_model("lenet5")
    report = export_onnx(model, tmp_path / "m.onnx", metadata={"class_labels": ["a", "b"]})
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert meta["sdk.weights_sha256"] == weights_checksum(model)
    assert json.loads(meta["sdk.class_labels"]) == ["a", "b"]
    assert json.loads(meta["sdk.input_contract"])["fixed_size"] is True
    assert report.metadata == meta


def test_parity_failure_raises_and_leaves_no_file(tmp_path):
    model = create_model("lenet5")
    path = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match="max abs"):
        export_onnx(model, path, atol=0.0, rtol=0.0, samples=[np.full((2, 1, 32, 32), 1e3, np.float32)])
    assert os.listdir(tmp_path) == [], "a failed export leaves nothing behind"


def test_existing_file_survives_a_failed_export(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous model")
    with pytest.raises(ParityError):
        export_onnx(create_model("lenet5"), path, atol=0.0, rtol=0.0,
                    samples=[np.full((2, 1, 32, 32), 1e3, np.float32)])
    assert path.read_bytes() == b"previous model"


def test_bad_export_arguments(tmp_path):
    model = create_model("lenet5")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        export_onnx(model, tmp_path / "m.onnx", example_input=np.zeros((1, 1, 32, 32)))
    with pytest.raises(ValueError, match="in_channels=1"):
        export_onnx(model, tmp_path / "m.onnx", example_input=torch.zeros(1, 3, 32, 32))


def test_training_mode_is_restored(tmp_path):
    model = create_model("lenet5").train()
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training


def test_external_data_export_keeps_weights_beside_the_file(tmp_path):
    from deploysdk import Runtime

    model = create_model("lenet5")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    assert os.path.getsize(path) < 50_000 < os.path.getsize(str(path) + ".data")
    x = np.zeros((2, 1, 32, 32), np.float32)
    with Runtime(path) as rt, torch.no_grad():
        np.testing.assert_allclose(rt(x), model.eval()(torch.from_numpy(x)).numpy(), atol=1e-5)


class _DataDependent(torch.nn.Module):
    """Python control flow on tensor values: torch.export refuses it, the TorchScript tracer records one branch."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


def test_torchscript_fallback_is_reported(tmp_path):
    x = torch.ones(2, 3)
    with pytest.warns(UserWarning, match="TorchScript exporter"):
        report = export_onnx(_DataDependent(), tmp_path / "m.onnx", example_input=x, dynamic=False)
    assert report.exporter == "torchscript" and report.fallback_reason
    assert "torchscript" in report.summary()


def test_checkpoint_round_trip_and_export(tmp_path):
    from trainsdk.training import CheckpointError, load_model_checkpoint, save_model_checkpoint

    model = create_model("resnet18", in_channels=1, num_classes=2, layers=(1, 1, 1, 1))
    save_model_checkpoint(model, tmp_path / "ckpt.pt", epoch=3)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["model_name"] == "resnet18" and ckpt["epoch"] == 3
    loaded, _ = load_model_checkpoint(tmp_path / "ckpt.pt")
    assert weights_checksum(loaded) == weights_checksum(model)
    torch.save({"state_dict": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="missing.*model_name"):
        load_model_checkpoint(tmp_path / "bare.pt")
