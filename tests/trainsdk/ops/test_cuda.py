"""The CUDA kernels against the CPU ones, on a machine with a GPU and a CUDA build of torch (skipped otherwise: the
.cu files are then only compile-checked, by test_extension.py)."""
import pytest
import torch

from trainsdk import ops

from ._helpers import assert_close

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_ext(ext):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if "cuda" not in ops.extension_status().devices:
        pytest.skip("the extension was built without CUDA kernels (CPU torch or no CUDA toolkit)")
    return ext


def _check(fn, *inputs):
    """fn on CUDA == fn on the CPU, output and input gradients."""
    results = []
    for device in ("cpu", "cuda"):
        xs = [t.detach().to(device).requires_grad_(t.is_floating_point()) for t in inputs]
        y = fn(*xs)
        y.backward(torch.ones_like(y))
        results.append([y.detach().cpu()] + [x.grad.cpu() for x in xs])
    for a, b in zip(*results):
        assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,beta", [(5, 0.75), (4, 0.6), (1, 1.0)])
def test_lrn(cuda_ext, dtype, size, beta):
    _check(lambda x: ops.local_response_norm(x, size, 1e-2, beta, 2.0), torch.randn(3, 7, 5, 9, dtype=dtype))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act,inplace", [("relu", False), ("leaky_relu", False), ("leaky_relu", True)])
def test_bn_act(cuda_ext, training, act, inplace):
    rm, rv = torch.randn(6), torch.rand(6) + 0.5

    def fn(x, w, b):
        stats = (rm.to(x.device), rv.to(x.device))
        return ops.batch_norm_act(x * 1, *stats, w, b, training, 0.1, 1e-5, act, 0.1, inplace)

    _check(fn, torch.randn(4, 6, 5, 7), torch.rand(6) + 0.5, torch.randn(6))


def test_add_relu(cuda_ext):
    _check(ops.add_relu, torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7))
