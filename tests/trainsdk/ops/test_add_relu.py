"""Fused residual add + ReLU against relu(a + b): values, gradients, layouts, tracing, errors."""
import pytest
import torch

from trainsdk import ops
from trainsdk.models.fused import AddReLU

from ._helpers import assert_close, layouts, leaf


def _both(a, b, g):
    """(out, grad a, grad b) of the fused op and of eager relu(a + b)."""
    res = []
    for fn in (ops.add_relu, lambda p, q: torch.relu(p + q)):
        pa, pb = leaf(a), leaf(b)
        y = fn(pa, pb)
        y.backward(g)
        res.append((y.detach(), pa.grad, pb.grad))
    return res


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 17), (1,), (2, 3, 4, 5, 6), (0, 4, 3, 3)])
def test_matches_eager(ext, dtype, shape):
    a, b, g = (torch.randn(*shape, dtype=dtype) for _ in range(3))
    fused, eager = _both(a, b, g)
    for f, e in zip(fused, eager):
        assert_close(f, e)


@pytest.mark.parametrize("la", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("lb", ["contiguous", "channels_last", "transposed"])
def test_layouts(ext, la, lb):
    a, b = layouts(torch.randn(2, 8, 5, 7))[la], layouts(torch.randn(2, 8, 5, 7))[lb]
    fused, eager = _both(a, b, torch.randn(2, 8, 5, 7))
    for f, e in zip(fused, eager):
        assert_close(f, e)
    if la == "channels_last":  # the output keeps a's memory format, like eager's a + b
        assert ops.add_relu(a, b).is_contiguous(memory_format=torch.channels_last)


def test_nan_propagates_and_same_tensor_twice(ext):
    a = torch.tensor([float("nan"), -1.0, 2.0])
    assert torch.equal(ops.add_relu(a, a).isnan(), torch.tensor([True, False, False]))
    x = torch.randn(10, requires_grad=True)
    ops.add_relu(x, x).sum().backward()
    assert_close(x.grad, 2.0 * (x > 0).float())


def test_gradcheck_float64(ext):
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.add_relu, (a, b))


def test_opcheck(ext):
    for fmt in (torch.contiguous_format, torch.channels_last):
        a = torch.randn(2, 3, 4, 5, requires_grad=True).contiguous(memory_format=fmt).detach().requires_grad_()
        torch.library.opcheck(ext.add_relu, (a, torch.randn(2, 3, 4, 5)))
    out = torch.relu(torch.randn(3, 7))
    torch.library.opcheck(ext.relu_backward, (torch.randn(3, 7), out))


def test_torch_compile_and_export(ext):
    mod = AddReLU()
    a, b = torch.randn(2, 4, 6, 6, requires_grad=True), torch.randn(2, 4, 6, 6)
    y = torch.compile(mod, backend="aot_eager", fullgraph=True)(a, b)
    y.sum().backward()
    assert_close(y, torch.relu(a + b))
    prog = torch.export.export(mod, (a.detach(), b))
    assert "medcnn.add_relu" in str(prog.graph)


@pytest.mark.parametrize("a,b,exc,match", [
    (torch.randn(2, 3), torch.randn(3, 2), ValueError, "same shape"),
    (torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64), TypeError, "same dtype"),
    (torch.ones(2, 3, dtype=torch.int32), torch.ones(2, 3, dtype=torch.int32), TypeError, "floating-point"),
    (torch.randn(2, 3), 1.0, TypeError, "must be a torch.Tensor"),
])
def test_bad_arguments(a, b, exc, match):
    with pytest.raises(exc, match=match):
        ops.add_relu(a, b)


def test_kernel_checks_its_arguments_too(ext):
    with pytest.raises(ValueError, match="medcnn::add_relu: a and b must have the same shape"):
        ext.add_relu(torch.randn(2, 3), torch.randn(2, 4))


def test_double_backward_matches_eager(ext):
    """backward(create_graph=True) through add_relu (gradient penalties) gives eager's second-order gradients."""
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, 5, dtype=torch.float64)

    def penalty_grad(fn):
        (g,) = torch.autograd.grad((fn(x * x, 0.5 * x) * w).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad((g ** 2).sum(), x)
        return h

    assert_close(penalty_grad(ops.add_relu), penalty_grad(lambda a, b: torch.relu(a + b)))
