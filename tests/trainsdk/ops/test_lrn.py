"""Fused LRN against torch.nn.LocalResponseNorm and the reference: values, gradients, layouts, tracing, errors."""
import pytest
import torch
import torch.nn as nn

from trainsdk import ops
from trainsdk.ops import reference

from ._helpers import assert_close, layouts, leaf

PARAMS = [(1, 1e-4, 0.75, 1.0), (2, 1e-2, 0.75, 2.0), (3, 0.5, 0.5, 1.0), (4, 0.1, 1.0, 1.5), (5, 1e-4 * 5, 0.75, 2.0),
          (7, 0.3, 0.6, 1.2)]  # (size, alpha, beta, k): every closed form of x^-beta and the general pow


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,alpha,beta,k", PARAMS)
@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (2, 5, 11), (2, 6, 3, 4, 5), (2, 3, 4, 4), (1, 1, 3, 3)])
def test_matches_torch_forward_and_backward(ext, dtype, size, alpha, beta, k, shape):
    x = torch.randn(*shape, dtype=dtype) * 3
    g = torch.randn(*shape, dtype=dtype)
    xf, xt = leaf(x), leaf(x)
    y = ops.local_response_norm(xf, size, alpha, beta, k)
    yt = nn.LocalResponseNorm(size, alpha, beta, k)(xt)
    assert_close(y, yt)
    assert_close(reference.local_response_norm(x, size, alpha, beta, k), yt)
    y.backward(g)
    yt.backward(g)
    assert_close(xf.grad, xt.grad)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed"])
def test_layouts(ext, layout):
    x = layouts(torch.randn(2, 8, 5, 7))[layout]
    xf, xt = leaf(x), leaf(x)
    y, yt = ops.local_response_norm(xf, 5, 1e-3, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0)(xt)
    assert_close(y, yt)
    g = layouts(torch.randn(2, 8, 5, 7))[layout]  # a gradient with the same odd layout
    y.backward(g)
    yt.backward(g)
    assert_close(xf.grad, xt.grad)


def test_empty_batch_and_tiny_channel_counts(ext):
    x = torch.randn(0, 5, 4, 4, requires_grad=True)
    y = ops.local_response_norm(x, 3)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    for c in (1, 2):  # fewer channels than the window
        x = torch.randn(2, c, 3, 3, dtype=torch.float64)
        assert_close(ops.local_response_norm(x, 5, 1.0, 0.75, 1.0), nn.LocalResponseNorm(5, 1.0, 0.75, 1.0)(x))


def test_running_sum_survives_large_dynamic_range(ext):
    """A huge channel leaving the window must not leave rounding error behind for the small ones after it."""
    x = torch.full((1, 16, 2, 2), 1e-3)
    x[:, 3] = 3e4
    y = ops.local_response_norm(x, 3, 1e-4, 0.75, 1.0)
    yt = nn.LocalResponseNorm(3, 1e-4, 0.75, 1.0)(x.double()).float()
    assert_close(y, yt, rtol=1e-6, atol=0)


@pytest.mark.parametrize("size,beta", [(1, 0.75), (2, 0.5), (3, 1.0), (5, 0.75), (4, 0.6)])
def test_gradcheck_float64(ext, size, beta):
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.local_response_norm(t, size, 0.5, beta, 1.5), (x,))


def test_opcheck(ext):
    for x in (torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5, dtype=torch.float64, requires_grad=True),
              torch.randn(3, 4, 7).contiguous(memory_format=torch.contiguous_format)):
        torch.library.opcheck(ext.lrn, (x, 5, 1e-2, 0.75, 2.0))
    x = torch.randn(2, 6, 5, 5)
    torch.library.opcheck(ext.lrn_backward, (torch.randn_like(x), x, 3, 1e-2, 0.75, 2.0))


def test_torch_compile_and_export_keep_the_fused_op(ext):
    mod = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), __import__("trainsdk.models.fused", fromlist=["x"]).FusedLRN(5))
    x = torch.randn(2, 3, 9, 9)
    compiled = torch.compile(mod, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    assert_close(y, mod(x))
    y.sum().backward()
    prog = torch.export.export(mod.eval(), (x,))
    assert "medcnn.lrn" in str(prog.graph)
    assert_close(prog.module()(x), mod(x))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ops.local_response_norm(torch.randn(4, 5), 3), ValueError, "at least 3 dimensions"),
    (lambda: ops.local_response_norm(torch.ones(2, 3, 4, dtype=torch.int64), 3), TypeError, "floating-point"),
    (lambda: ops.local_response_norm(torch.randn(2, 3, 4), 0), ValueError, "size must be >= 1"),
    (lambda: ops.local_response_norm(torch.randn(2, 3, 4), 2.0), TypeError, "size must be an int"),
    (lambda: ops.local_response_norm(torch.randn(2, 3, 4), 3, alpha=float("nan")), ValueError, "alpha must be finite"),
    (lambda: ops.local_response_norm("x", 3), TypeError, "must be a torch.Tensor"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_kernel_checks_its_arguments_too(ext):
    """Direct torch.ops calls skip the Python checks; checks.h rejects the same inputs."""
    with pytest.raises(ValueError, match="medcnn::lrn: x must have at least 3 dimensions"):
        ext.lrn(torch.randn(4, 5), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="size must be >= 1"):
        ext.lrn(torch.randn(2, 4, 5), 0, 1e-4, 0.75, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        ext.lrn(torch.ones(2, 4, 5, dtype=torch.int32), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        ext.lrn_backward(torch.randn(2, 4, 6), torch.randn(2, 4, 5), 3, 1e-4, 0.75, 1.0)


def test_half_precision_uses_the_reference(ext):
    x = torch.randn(2, 6, 4, 4, dtype=torch.bfloat16)
    y = ops.local_response_norm(x, 5)  # torch's own LRN has no bfloat16 CPU kernel (avg_pool3d)
    assert y.dtype == torch.bfloat16
    assert_close(y.float(), nn.LocalResponseNorm(5)(x.float()), rtol=2e-2, atol=2e-2)
