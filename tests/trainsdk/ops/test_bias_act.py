"""Fused bias + activation with gain against act(x + b) * gain: values, gradients, layouts, tracing, errors, ONNX."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainsdk import ops
from trainsdk.ops import reference

from ._helpers import assert_close, layouts, leaf

ACTS = [("identity", 0.2), ("relu", 0.2), ("leaky_relu", 0.2), ("leaky_relu", 0.0)]
GAIN = math.sqrt(2)


def _eager(x, b, act, slope, gain):
    z = x if b is None else x + b.reshape((1, -1) + (1,) * (x.dim() - 2))
    z = {"identity": lambda t: t, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, slope)}[act](z)
    return z * gain


def _both(x, b, g, act="leaky_relu", slope=0.2, gain=GAIN):
    """(out, grad x[, grad b]) of the fused op and of the eager composite."""
    res = []
    for fn in (ops.bias_act, _eager):
        px = leaf(x)
        pb = None if b is None else b.detach().clone().requires_grad_(True)
        y = fn(px, pb, act, slope, gain)
        y.backward(g)
        res.append((y.detach(), px.grad) + (() if pb is None else (pb.grad,)))
    return res


@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 17), (2, 3, 4, 5, 6), (1, 5, 13), (0, 4, 3, 3), (2, 3, 1, 1)])
def test_matches_eager(ext, act, slope, dtype, shape):
    x, g = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)
    b = torch.randn(shape[1], dtype=dtype)
    fused, eager = _both(x, b, g, act, slope)
    for f, e in zip(fused, eager):
        assert_close(f, e, rtol=1e-4 if dtype == torch.float32 else None, atol=1e-5 if dtype == torch.float32 else None)


def test_reference_matches_eager():
    x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
    for act, slope in ACTS:
        assert_close(reference.bias_act(x, b, act, slope, GAIN), _eager(x, b, act, slope, GAIN))


@pytest.mark.parametrize("gain", [1.0, 0.5, 3])
def test_no_bias_and_gains(ext, gain):
    x, g = torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5)
    fused, eager = _both(x, None, g, "leaky_relu", 0.2, gain)
    for f, e in zip(fused, eager):
        assert_close(f, e)
    assert_close(ops.bias_act(x), F.leaky_relu(x, 0.2))  # defaults: leaky_relu 0.2, gain 1, no bias


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed"])
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_layouts(ext, layout, act):
    x = layouts(torch.randn(4, 8, 5, 7))[layout]
    fused, eager = _both(x, torch.randn(8), torch.randn(4, 8, 5, 7), act)
    for f, e in zip(fused, eager):
        assert_close(f, e, rtol=1e-4, atol=1e-5)
    if layout == "channels_last":  # the output keeps x's memory format
        assert ops.bias_act(x, torch.randn(8)).is_contiguous(memory_format=torch.channels_last)


def test_large_multithreaded(ext):
    x, g, b = torch.randn(8, 16, 33, 31), torch.randn(8, 16, 33, 31), torch.randn(16)
    for fmt in (torch.contiguous_format, torch.channels_last):
        fused, eager = _both(x.contiguous(memory_format=fmt), b, g)
        for f, e in zip(fused, eager):
            assert_close(f, e, rtol=1e-4, atol=1e-4)


def test_nan_propagates(ext):
    x = torch.tensor([[float("nan"), -1.0, 2.0]]).reshape(1, 3)
    assert torch.equal(ops.bias_act(x, None, "relu").isnan(), torch.tensor([[True, False, False]]))


@pytest.mark.parametrize("act,slope", ACTS)
def test_gradcheck_float64(ext, act, slope):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: ops.bias_act(p, q, act, slope, GAIN), (x, b))
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, q: ops.bias_act(p, q, act, slope, GAIN), (xc, b))


def test_opcheck(ext):
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 4, 5).contiguous(memory_format=fmt).requires_grad_()
        torch.library.opcheck(ext.bias_act, (x, torch.randn(3, requires_grad=True), "leaky_relu", 0.2, GAIN))
        torch.library.opcheck(ext.bias_act, (x, None, "relu", 0.2, 1.0))
    out = ops.bias_act(torch.randn(3, 7), torch.randn(7), "leaky_relu", 0.2, GAIN)
    torch.library.opcheck(ext.bias_act_backward, (torch.randn(3, 7), out, "leaky_relu", 0.2, GAIN))


class _BiasAct(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return ops.bias_act(x, self.bias, "leaky_relu", 0.2, GAIN)


def test_torch_compile_and_export(ext):
    mod = _BiasAct()
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y = torch.compile(mod, backend="aot_eager", fullgraph=True)(x)
    y.sum().backward()
    assert_close(y, _eager(x, mod.bias, "leaky_relu", 0.2, GAIN))
    assert mod.bias.grad is not None
    prog = torch.export.export(mod, (x.detach(),))
    assert "medcnn.bias_act" in str(prog.graph)


def test_onnx_export_matches_ort(ext, tmp_path):
    """Lowered to standard ops (Add + LeakyRelu + Mul); ONNX Runtime matches PyTorch."""
    import onnx
    import onnxruntime as ort
    from deploysdk.export import export_onnx

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.act = _BiasAct(4)

        def forward(self, x):
            return self.act(self.conv(x))

    mod = Tiny().eval()
    x = torch.randn(2, 3, 8, 8)
    report = export_onnx(mod, tmp_path / "tiny.onnx", example_input=x)
    assert all(e.ok for e in report.errors)
    types = {n.op_type for n in onnx.load(str(tmp_path / "tiny.onnx")).graph.node}
    assert {"Add", "LeakyRelu", "Mul"} <= types and not any("bias_act" in t for t in types), types
    sess = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), mod(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(bias=torch.randn(4)), ValueError, r"bias must have shape \(3,\)"),
    (dict(bias=torch.randn(3, dtype=torch.float64)), TypeError, "same dtype"),
    (dict(bias=torch.randn(3, device="meta")), ValueError, "same device"),
    (dict(act="tanh"), ValueError, "act must be one of"),
    (dict(gain=0.0), ValueError, "gain must be finite and > 0"),
    (dict(gain=-1.0), ValueError, "gain must be finite and > 0"),
    (dict(gain=float("inf")), ValueError, "gain must be finite and > 0"),
    (dict(gain="2"), TypeError, "gain must be a number"),
    (dict(negative_slope=-0.1), ValueError, "negative_slope must be >= 0"),
    (dict(negative_slope=float("nan")), ValueError, "negative_slope must be finite"),
])
def test_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        ops.bias_act(torch.randn(2, 3, 4, 4), **kw)


@pytest.mark.parametrize("x,exc,match", [
    (torch.randn(3), ValueError, "at least 2 dimensions"),
    (torch.ones(2, 3, dtype=torch.int32), TypeError, "floating-point"),
    ([1.0, 2.0], TypeError, "must be a torch.Tensor"),
])
def test_bad_inputs(x, exc, match):
    with pytest.raises(exc, match=match):
        ops.bias_act(x)


@pytest.mark.parametrize("args,exc,match", [
    ((torch.randn(2, 3), torch.randn(4), "relu", 0.2, 1.0), ValueError, r"medcnn::bias_act: bias must have shape"),
    ((torch.randn(2, 3), None, "tanh", 0.2, 1.0), ValueError, "medcnn::bias_act: act must be one of"),
    ((torch.randn(2, 3), None, "relu", 0.2, 0.0), ValueError, "medcnn::bias_act: gain must be finite and > 0"),
    ((torch.randn(2, 3), None, "leaky_relu", -0.2, 1.0), ValueError, "medcnn::bias_act: negative_slope must be >= 0"),
    ((torch.randn(3), None, "relu", 0.2, 1.0), ValueError, "at least 2 dimensions"),
    ((torch.ones(2, 3, dtype=torch.int32), None, "relu", 0.2, 1.0), TypeError, "float32 or float64"),
])
def test_kernel_checks_its_arguments_too(ext, args, exc, match):
    with pytest.raises(exc, match=match):
        ext.bias_act(*args)
    with pytest.raises(ValueError, match="medcnn::bias_act_backward: grad and out must have the same shape"):
        ext.bias_act_backward(torch.randn(2, 3), torch.randn(2, 4), "relu", 0.2, 1.0)


def test_bias_act_module_matches_composite_and_trains():
    from trainsdk.models.fused import BiasAct

    layer = BiasAct(5, gain=math.sqrt(2))
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 5))
    x = torch.randn(2, 5, 7, 3, requires_grad=True)
    out = layer(x)
    ref = F.leaky_relu(x + layer.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert layer.bias.grad is not None and layer.bias.grad.shape == (5,)
    assert list(layer.state_dict()) == ["bias"]
    assert BiasAct(3, bias=False).bias is None
    with pytest.raises(ValueError, match="channels"):
        BiasAct(0)


def test_double_backward_matches_eager(ext):
    """backward(create_graph=True) through the fused op (WGAN-GP's gradient penalty) gives eager's gradients."""
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, 5, dtype=torch.float64)

    def penalty_grads(fn):
        (g,) = torch.autograd.grad((fn(x * x) * w).sum(), x, create_graph=True)
        pen = (g ** 2 * torch.linspace(0, 1, g.numel(), dtype=g.dtype).view_as(g)).sum()
        grads = torch.autograd.grad(pen, [x, b], allow_unused=True)
        return [torch.zeros_like(t) if r is None else r for r, t in zip(grads, (x, b))]

    fused = penalty_grads(lambda t: ops.bias_act(t, b, "leaky_relu", 0.2, GAIN))
    eager = penalty_grads(lambda t: _eager(t, b, "leaky_relu", 0.2, GAIN))
    for f, e in zip(fused, eager):
        assert_close(f, e)
