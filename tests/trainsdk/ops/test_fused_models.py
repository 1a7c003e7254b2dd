"""Zoo models with fused=True: same keys as fused=False (checkpoints interchangeable), same outputs, same loss curve
when trained from the same seed, and an ONNX export of standard operators that ONNX Runtime runs and matches."""
import collections

import onnx
import pytest
import torch
import torch.nn as nn

from deploysdk.export import export_onnx
from tests.zoo import small_model
from trainsdk.models.fused import AddReLU, BatchNormAct2d, FusedLRN

CASES = {  # name -> (extra config, input size, fused module types it must contain)
    "alexnet": (dict(lrn=True), 127, (FusedLRN,)),
    "alexnet_original": (dict(two_tower=True), 127, (FusedLRN,)),
    "resnet18": (dict(base_width=16), 64, (BatchNormAct2d, AddReLU)),
    "resnet50": (dict(base_width=8), 64, (BatchNormAct2d, AddReLU)),
    "plain18": (dict(base_width=8), 64, (BatchNormAct2d,)),
    "googlenet": (dict(), 64, (BatchNormAct2d,)),
    "googlenet_original": (dict(), 64, (FusedLRN,)),
    "vgg11_bn": (dict(), 64, (BatchNormAct2d,)),
}


def _twins(name, **kw):
    extra = CASES[name][0]
    torch.manual_seed(0)
    plain = small_model(name, **extra, **kw)
    torch.manual_seed(0)
    fused = small_model(name, fused=True, **extra, **kw)
    return plain, fused


@pytest.mark.parametrize("name", list(CASES))
def test_same_keys_same_weights_same_outputs(ext, name):
    plain, fused = _twins(name)
    size, kinds = CASES[name][1], CASES[name][2]
    assert list(plain.state_dict()) == list(fused.state_dict())
    for kind in kinds:
        assert any(isinstance(m, kind) for m in fused.modules()), kind
    for k, v in plain.state_dict().items():
        assert torch.equal(v, fused.state_dict()[k]), k  # same seed, same initial weights
    plain.load_state_dict(fused.state_dict(), strict=True)  # checkpoints load both ways
    fused.load_state_dict(plain.state_dict(), strict=True)
    x = plain.example_input(batch_size=2, size=(size, size))
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)


def _losses(model, steps=5, size=64):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps, 4, 1, size, size, generator=gen)
    y = torch.randint(0, 3, (steps, 4), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    torch.manual_seed(2)  # dropout masks: the fused ops draw no random numbers, so both runs see the same masks
    for i in range(steps):
        opt.zero_grad()
        out = model(x[i])
        loss = nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out, y[i])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("alexnet", 127)])
def test_training_gives_the_same_loss_curve(ext, name, size):
    plain, fused = _twins(name)
    lp, lf = _losses(plain, size=size), _losses(fused, size=size)
    assert lp[0] != lp[-1]  # it trained
    torch.testing.assert_close(torch.tensor(lf), torch.tensor(lp), rtol=1e-3, atol=1e-4)
    for (k, a), b in zip(plain.state_dict().items(), fused.state_dict().values()):
        if a.is_floating_point():  # parameters and running statistics after the steps
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=k)


def _op_types(path):
    proto = onnx.load(path)
    assert {n.domain for n in proto.graph.node} <= {""}, "only standard ONNX operators"
    return collections.Counter(n.op_type for n in proto.graph.node)


def test_fused_alexnet_exports_onnx_lrn(ext, tmp_path):
    _, fused = _twins("alexnet")
    report = export_onnx(fused, tmp_path / "alexnet.onnx", example_input=fused.example_input(2, size=(127, 127)))
    assert report.exporter == "dynamo", report.fallback_reason
    assert all(e.ok for e in report.errors)  # ONNX Runtime matched PyTorch on several batch sizes
    assert _op_types(tmp_path / "alexnet.onnx")["LRN"] == 2


def test_fused_resnet_exports_the_same_graph_as_unfused(ext, tmp_path):
    plain, fused = _twins("resnet18")
    x = plain.example_input(2, size=(64, 64))
    types = []
    for tag, model in (("plain", plain), ("fused", fused)):
        report = export_onnx(model, tmp_path / f"{tag}.onnx", example_input=x)
        assert report.exporter == "dynamo" and all(e.ok for e in report.errors)
        types.append(_op_types(tmp_path / f"{tag}.onnx"))
    assert types[0] == types[1] and types[1]["Add"] == 8


def test_fused_block_lowers_to_batchnorm_and_activation(ext):
    """No conv in front (the exporter folds batch norm into one): BatchNormalization + LeakyRelu, Add + Relu."""
    import onnxruntime as ort

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = BatchNormAct2d(4, act="leaky_relu", negative_slope=0.2)
            self.add = AddReLU()

        def forward(self, x):
            return self.add(self.bn(x), x)

    block = Block().eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 5, 5)
    prog = torch.onnx.export(block, (x,), dynamo=True, verbose=False)
    types = collections.Counter(n.op_type for n in prog.model_proto.graph.node)
    assert {"BatchNormalization", "LeakyRelu", "Add", "Relu"} <= set(types), types
    sess = ort.InferenceSession(prog.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), block(x), rtol=1e-4, atol=1e-5)


def test_fused_flag_must_be_a_bool():
    with pytest.raises(ValueError, match="fused must be True or False"):
        small_model("resnet18", fused="yes")


@pytest.mark.parametrize("size", [5, 4])
def test_lrn_exports_as_onnx_lrn_for_odd_sizes_only(ext, size):
    """ONNX centres an even window differently from PyTorch: even sizes export as the standard-op composite."""
    import onnxruntime as ort

    mod = FusedLRN(size, 1e-2, 0.75, 2.0).eval()
    x = torch.randn(2, 7, 5, 5)
    prog = torch.onnx.export(mod, (x,), dynamo=True, verbose=False)
    types = {n.op_type for n in prog.model_proto.graph.node}
    assert ("LRN" in types) == (size % 2 == 1), types
    sess = ort.InferenceSession(prog.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), mod(x), rtol=1e-4, atol=1e-5)
