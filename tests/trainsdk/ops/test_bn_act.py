"""Fused batch norm + activation against BatchNorm2d + activation: values, gradients, running statistics, the
InPlace-ABN form and its memory, layouts, tracing, errors."""
import pytest
import torch
import torch.nn as nn

from trainsdk import ops
from trainsdk.models.fused import BatchNormAct2d
from trainsdk.ops import reference

from ._helpers import assert_close, layouts, leaf

ACTS = [("identity", 0.01), ("relu", 0.01), ("leaky_relu", 0.1)]


def _unfused(c, act, slope, dtype=torch.float32, **kw):
    acts = {"identity": nn.Identity(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(slope)}
    bn = nn.BatchNorm2d(c, dtype=dtype, **kw)
    return nn.Sequential(bn, acts[act])


def _pair(c, act, slope, dtype=torch.float32, inplace=False, **kw):
    """An unfused and a fused module with the same (random) affine parameters and running statistics."""
    ref = _unfused(c, act, slope, dtype, **kw)
    fused = BatchNormAct2d(c, act=act, negative_slope=slope, inplace=inplace, dtype=dtype, **kw)
    with torch.no_grad():
        if ref[0].affine:
            ref[0].weight.uniform_(0.5, 1.5)
            ref[0].bias.uniform_(-0.5, 0.5)
        if ref[0].track_running_stats:
            ref[0].running_mean.uniform_(-1, 1)
            ref[0].running_var.uniform_(0.5, 2)
    fused.load_state_dict(ref[0].state_dict())
    return ref, fused


def _grads(module, x, g):
    x = leaf(x)
    y = module(x * 1 if getattr(module, "inplace", False) else x)  # in-place needs a non-leaf input
    y.backward(g)
    params = [p.grad for p in module.parameters()]
    return y.detach(), x.grad, params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act,slope,inplace", [(a, s, i) for a, s in ACTS for i in (False, True)
                                               if not (i and a == "relu")])  # ReLU is not invertible
@pytest.mark.parametrize("training", [True, False])
def test_matches_batchnorm_and_activation(ext, dtype, act, slope, training, inplace):
    ref, fused = _pair(6, act, slope, dtype, inplace)
    ref.train(training), fused.train(training)
    x = torch.randn(3, 6, 5, 7, dtype=dtype) * 2 + 0.5
    g = torch.randn(3, 6, 5, 7, dtype=dtype)
    y, dx, dp = _grads(fused, x, g)
    yr, dxr, dpr = _grads(ref, x, g)
    assert_close(y, yr)
    assert_close(dx, dxr)
    for a, b in zip(dp, dpr):
        assert_close(a, b, rtol=1e-4 if dtype == torch.float32 else None)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(getattr(fused, name), getattr(ref[0], name))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_over_several_steps(ext, momentum):
    ref, fused = _pair(4, "relu", 0.0, momentum=momentum)
    for step in range(4):
        x = torch.randn(5, 4, 3, 3) * (step + 1) + step
        assert_close(fused(x), ref(x))
    assert_close(fused.running_mean, ref[0].running_mean)
    assert_close(fused.running_var, ref[0].running_var)
    assert int(fused.num_batches_tracked) == 4


@pytest.mark.parametrize("kw", [dict(affine=False), dict(track_running_stats=False)])
def test_without_affine_or_running_stats(ext, kw):
    ref, fused = _pair(4, "leaky_relu", 0.2, **kw)
    x = torch.randn(3, 4, 5, 5)
    for training in (True, False):
        ref.train(training), fused.train(training)
        y, dx, _ = _grads(fused, x, torch.ones_like(x))
        yr, dxr, _ = _grads(ref, x, torch.ones_like(x))
        assert_close(y, yr)
        assert_close(dx, dxr, atol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed"])
def test_layouts(ext, layout):
    ref, fused = _pair(8, "relu", 0.0)
    x = layouts(torch.randn(2, 8, 5, 7))[layout]
    g = layouts(torch.randn(2, 8, 5, 7))[layout]
    y, dx, dp = _grads(fused, x, g)
    yr, dxr, dpr = _grads(ref, x, g)
    assert_close(y, yr)
    assert_close(dx, dxr)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 7), (2, 3, 2, 3, 4), (3, 1, 5, 5)])
def test_other_ranks_and_a_single_channel(ext, shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    c = shape[1]
    w, b = torch.rand(c, dtype=torch.float64) + 0.5, torch.randn(c, dtype=torch.float64)
    y = ops.batch_norm_act(x, None, None, w, b, True, 0.1, 1e-5, "leaky_relu", 0.1)
    yr = reference.batch_norm_act(x, None, None, w, b, True, 0.1, 1e-5, "leaky_relu", 0.1)
    assert_close(y, yr)
    assert_close(*[torch.autograd.grad(t.sum(), x)[0] for t in (y, yr)])


def test_empty_batch_leaves_running_stats_alone(ext):
    ref, fused = _pair(3, "relu", 0.0)
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    y = fused(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    assert torch.equal(fused.weight.grad, torch.zeros(3))
    assert_close(fused.running_mean, ref[0].running_mean)
    assert int(fused.num_batches_tracked) == 1  # as nn.BatchNorm2d counts it


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act,save_output", [("relu", False), ("leaky_relu", True), ("identity", True)])
def test_gradcheck_float64(ext, training, act, save_output):
    x = torch.randn(3, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    rm, rv = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5

    def f(x, w, b):
        return ext.bn_act(x, w, b, rm, rv, training, 1e-5, act, 0.1, save_output)[0]

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_opcheck(ext):
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    w, b = torch.rand(4, requires_grad=True), torch.randn(4, requires_grad=True)
    rm, rv = torch.zeros(4), torch.ones(4)
    for training in (True, False):
        torch.library.opcheck(ext.bn_act, (x, w, b, rm, rv, training, 1e-5, "relu", 0.0, False))
    torch.library.opcheck(ext.bn_act, (x, None, None, None, None, True, 1e-5, "leaky_relu", 0.1, True))
    out, mean, var = ext.bn_act(x.detach(), w.detach(), b.detach(), rm, rv, True, 1e-5, "leaky_relu", 0.1, True)
    torch.library.opcheck(ext.bn_act_backward, (torch.randn_like(out), out, w.detach(), b.detach(), mean, var, True,
                                                1e-5, "leaky_relu", 0.1, True))
    torch.library.opcheck(ext.bn_act_, (x.detach().clone(), w.detach(), b.detach(), rm, rv, False, 1e-5, "relu", 0.0))


def test_inplace_overwrites_its_input_and_keeps_one_tensor_less(ext):
    shape = (4, 16, 32, 32)  # 256 KiB per tensor
    fused, std = BatchNormAct2d(16, act="leaky_relu", inplace=True), BatchNormAct2d(16, act="leaky_relu")
    h = torch.randn(*shape, requires_grad=True) * 1
    out = fused(h)
    assert out.data_ptr() == h.data_ptr()  # the same buffer: no second activation-sized allocation
    w = torch.randn(1, 16, 1, 1, requires_grad=True)
    x = torch.randn(*shape, requires_grad=True)
    unfused = nn.Sequential(nn.BatchNorm2d(16), nn.LeakyReLU(0.01, inplace=True))
    kept = {name: ops.saved_tensor_bytes(lambda t, m=m: m(t * 1) * w, x)  # the next layer (* w) keeps its input
            for name, m in (("unfused", unfused), ("fused", std), ("inplace", fused))}
    assert kept["unfused"] - kept["inplace"] == ops.inplace_abn_bytes_saved(shape) == 4 * 16 * 32 * 32 * 4
    assert kept["fused"] == kept["unfused"]


def test_inplace_rejects_zero_weight_and_relu(ext):
    fused = BatchNormAct2d(3, act="leaky_relu", inplace=True)
    with torch.no_grad():
        fused.weight[1] = 0
    y = fused(torch.randn(2, 3, 4, 4, requires_grad=True) * 1)
    with pytest.raises(ValueError, match="weight is 0"):
        y.sum().backward()
    with pytest.raises(ValueError, match="invertible activation"):
        BatchNormAct2d(3, act="relu", inplace=True)
    with pytest.raises(ValueError, match="invertible activation"):
        ops.batch_norm_act(torch.randn(2, 3, 4), None, None, training=True, act="relu", inplace=True)


def test_torch_compile_and_export(ext):
    mod = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8, act="relu"), BatchNormAct2d(8, act="leaky_relu",
                                                                                       inplace=True))
    twin = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8, act="relu"), BatchNormAct2d(8, act="leaky_relu"))
    twin.load_state_dict(mod.state_dict())
    x = torch.randn(4, 3, 9, 9)
    y = torch.compile(mod, backend="aot_eager", fullgraph=True)(x)
    y.sum().backward()
    assert_close(y, twin(x))
    assert_close(mod[1].running_mean, twin[1].running_mean)
    prog = torch.export.export(mod.eval(), (x,))
    assert "medcnn.bn_act" in str(prog.graph)
    assert_close(prog.module()(x), twin.eval()(x))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.randn(4)), ValueError, "at least 2 dimensions"),
    (dict(x=torch.ones(2, 3, 4, dtype=torch.int64)), TypeError, "floating-point"),
    (dict(weight=torch.ones(4)), ValueError, r"weight must have shape \(3,\)"),
    (dict(weight=torch.ones(3, dtype=torch.float64)), TypeError, "same dtype"),
    (dict(act="gelu"), ValueError, "act must be one of"),
    (dict(eps=0.0), ValueError, "eps must be positive"),
    (dict(training=False, running_mean=None), ValueError, "required when training=False"),
    (dict(x=torch.randn(1, 3, 1, 1)), ValueError, "more than 1 value per channel"),
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(x=torch.randn(2, 3, 4), running_mean=torch.zeros(3), running_var=torch.ones(3), weight=None,
                bias=None, training=True, momentum=0.1, eps=1e-5, act="relu")
    with pytest.raises(exc, match=match):
        ops.batch_norm_act(**{**args, **kwargs})


def test_kernel_checks_its_arguments_too(ext):
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"medcnn::bn_act: weight must have shape \(3,\)"):
        ext.bn_act(x, torch.ones(2), None, None, None, True, 1e-5, "relu", 0.0, False)
    with pytest.raises(ValueError, match="act must be one of"):
        ext.bn_act(x, None, None, None, None, True, 1e-5, "tanh", 0.0, False)
    with pytest.raises(ValueError, match="invertible"):
        ext.bn_act(x, None, None, None, None, True, 1e-5, "relu", 0.0, True)


def test_module_state_dict_is_batchnorm2d(ext):
    assert list(BatchNormAct2d(5).state_dict()) == list(nn.BatchNorm2d(5).state_dict())
    assert isinstance(BatchNormAct2d(5), nn.BatchNorm2d)
    assert "act=leaky_relu, negative_slope=0.2, inplace=True" in repr(BatchNormAct2d(5, act="leaky_relu",
                                                                                     negative_slope=0.2, inplace=True))
    with pytest.raises(ValueError, match="act must be one of"):
        BatchNormAct2d(5, act="tanh")
