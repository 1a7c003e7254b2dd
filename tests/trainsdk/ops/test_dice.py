"""Fused soft Dice loss against its composite reference and MONAI's DiceLoss: statistics, losses, gradients, layouts,
empty inputs, tracing, errors on both paths."""
import pytest
import torch

from trainsdk import ops
from trainsdk.ops import reference

from ._helpers import assert_close, layouts, leaf

ACTIVATIONS = ["softmax", "sigmoid", "none"]
SHAPES = [(2, 3, 5, 7), (3, 4, 17), (2, 3, 4, 5, 6), (1, 2, 33, 31), (2, 5, 1, 1), (1, 40, 9, 11)]  # 40: many classes


def _target(kind, shape, dtype=torch.float64, seed=0):
    """A target of the given kind for logits of `shape`: label map, label map with a channel, one-hot, soft."""
    gen = torch.Generator().manual_seed(seed)
    n, c, spatial = shape[0], shape[1], shape[2:]
    labels = torch.randint(0, c, (n, *spatial), generator=gen)
    if kind == "labels":
        return labels
    if kind == "labels_n1":
        return labels.unsqueeze(1)
    if kind == "onehot":
        return torch.nn.functional.one_hot(labels, c).movedim(-1, 1).to(dtype)
    return torch.rand(*shape, generator=gen, dtype=dtype)  # soft labels


def _logits(shape, dtype=torch.float64, seed=1, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def _stats_and_grads(fn, z, t, act, seed=2):
    """(I, P, G) and d(sum_k w_k . stat_k)/dz for random weights w: every statistic's gradient path at once."""
    zl = leaf(z)
    stats = fn(zl, t, act)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((s * torch.randn(s.shape, generator=gen, dtype=s.dtype).to(s.device)).sum() for s in stats)
    (grad,) = torch.autograd.grad(loss, zl)
    return [s.detach() for s in stats] + [grad]


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["labels", "labels_n1", "soft"])
def test_stats_match_reference(ext, act, dtype, shape, kind):
    z, t = _logits(shape, dtype), _target(kind, shape, dtype)
    if act == "none":
        z = torch.rand(shape, dtype=dtype)  # probabilities
    fused = _stats_and_grads(ops.soft_dice_stats, z, t, act)
    ref = _stats_and_grads(reference.soft_dice_stats, z, t, act)
    for f, r in zip(fused, ref):
        assert_close(f, r, rtol=1e-5 if dtype == torch.float32 else None, atol=1e-5 if dtype == torch.float32 else None)


LOSS_OPTIONS = [dict(), dict(include_background=False), dict(batch=True), dict(reduction="sum"),
                dict(reduction="none"), dict(reduction="none", batch=True), dict(weight=[0.5, 1.0, 2.0, 0.0]),
                dict(weight=[1.0, 2.0, 3.0], include_background=False),
                dict(weight=torch.tensor([1.0, 0.5, 2.0, 1.0]), include_background=False),
                dict(weight=2.0), dict(smooth_nr=0.0, smooth_dr=1.0)]


@pytest.mark.parametrize("kw", LOSS_OPTIONS)
@pytest.mark.parametrize("act", ["softmax", "sigmoid"])
def test_loss_matches_composite(ext, kw, act):
    z, t = _logits((2, 4, 6, 5)), _target("labels", (2, 4, 6, 5))
    zf, zr = z.clone().requires_grad_(), z.clone().requires_grad_()
    fused = ops.soft_dice_loss(zf, t, activation=act, **kw)
    w = kw.get("weight")
    w = None if w is None else torch.as_tensor(w, dtype=z.dtype)
    if w is not None and w.dim() == 1 and w.numel() == 4 and not kw.get("include_background", True):
        w = w[1:]
    ref = reference.soft_dice_loss(zr, t, activation=act, **{**kw, "weight": w})
    assert fused.shape == ref.shape
    assert_close(fused.detach(), ref.detach())
    fused.sum().backward()
    ref.sum().backward()
    assert_close(zf.grad, zr.grad)


def test_reference_formula_by_hand():
    """The composite against the formula written out for one image: probabilities, one-hot, sums."""
    z = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    t = torch.tensor([[[0, 1]]])
    p = torch.softmax(z, 1)[0, :, 0]  # (2 classes, 2 pixels)
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    per_class = 1 - (2 * (p * g).sum(1) + 1e-5) / (p.sum(1) + g.sum(1) + 1e-5)
    assert_close(reference.soft_dice_loss(z, t), per_class.mean())
    assert_close(reference.soft_dice_loss(z, t, reduction="none"), per_class.reshape(1, 2))


@pytest.mark.parametrize("case", ["softmax", "sigmoid", "no_background", "batch", "weight", "sum", "none", "soft",
                                  "binary", "3d"])
def test_matches_monai(ext, case):
    """Golden values from the peer: monai.losses.DiceLoss, forward and gradient."""
    monai = pytest.importorskip("monai.losses")
    shape = (2, 1, 7, 6) if case == "binary" else (2, 3, 4, 5, 6) if case == "3d" else (3, 4, 9, 7)
    z, labels = _logits(shape), _target("labels_n1", shape)
    ours = dict(activation="sigmoid" if case in ("sigmoid", "binary") else "softmax")
    theirs = dict(sigmoid=case in ("sigmoid", "binary"), softmax=case not in ("sigmoid", "binary"),
                  to_onehot_y=case != "soft")
    extra = {"no_background": dict(include_background=False), "batch": dict(batch=True), "sum": dict(reduction="sum"),
             "none": dict(reduction="none"), "weight": dict(weight=[0.5, 1.0, 2.0, 0.25])}.get(case, {})
    target = _target("onehot", shape) if case == "soft" else labels
    if case == "binary":
        target = torch.randint(0, 2, labels.shape, generator=torch.Generator().manual_seed(5))
    zf, zm = z.clone().requires_grad_(), z.clone().requires_grad_()
    got = ops.soft_dice_loss(zf, target, **ours, **extra)
    want = monai.DiceLoss(**theirs, **extra)(zm, target)
    assert_close(got.detach(), want.detach().reshape(got.shape))
    got.sum().backward()
    want.sum().backward()
    assert_close(zf.grad, zm.grad)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_gradcheck_float64(ext, act, kind):
    shape = (2, 3, 4, 5)
    z = (torch.rand(shape, dtype=torch.float64) if act == "none" else _logits(shape)).requires_grad_()
    t = _target(kind, shape)
    if kind == "soft":  # a dense target gets gradients too
        t.requires_grad_()
        args = (z, t)
        fn = lambda a, b: torch.stack(ops.soft_dice_stats(a, b, act))  # noqa: E731
    else:
        args = (z,)
        fn = lambda a: torch.stack(ops.soft_dice_stats(a, t, act))  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    zc = z.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ops.soft_dice_loss(a, _target("labels", shape), activation=act,
                                                                 include_background=False, batch=True), (zc,))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_double_backward_matches_composite(ext, act):
    """backward(create_graph=True) through the fused loss (a gradient penalty) gives the composite's second-order
    gradients; gradgradcheck on the statistics."""
    shape = (2, 3, 5, 4)
    base = torch.rand(shape, dtype=torch.float64) if act == "none" else _logits(shape)
    t = _target("labels", shape)
    res = []
    for fn in (ops.soft_dice_loss, reference.soft_dice_loss):
        z = base.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(z, t, activation=act), z, create_graph=True)
        g.square().sum().backward()
        res.append((g.detach(), z.grad))
    for a, b in zip(*res):
        assert_close(a, b)
    z = base.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a: torch.stack(ops.soft_dice_stats(a, t, act)), (z,))


def test_opcheck(ext):
    shape = (2, 3, 4, 5)
    z = _logits(shape, torch.float32).requires_grad_()
    for act in ACTIVATIONS:
        torch.library.opcheck(ext.soft_dice_stats, (z, _target("labels", shape), act))
        torch.library.opcheck(ext.soft_dice_stats, (z, _target("labels_n1", shape), act))
        soft = _target("soft", shape, torch.float32).requires_grad_()
        torch.library.opcheck(ext.soft_dice_stats, (z, soft, act))
        g = torch.randn(2, 3)
        torch.library.opcheck(ext.soft_dice_stats_backward, (g, g * 2, z.detach(), _target("labels", shape), act))
    torch.library.opcheck(ext.soft_dice_stats, (z.detach().contiguous(memory_format=torch.channels_last),
                                                _target("labels", shape), "softmax"))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed"])
@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_layouts(ext, layout, kind):
    shape = (3, 4, 7, 9)
    z = layouts(_logits(shape, torch.float32))[layout]
    t = _target(kind, shape, torch.float32)
    if kind == "soft":
        t = layouts(t)[layout]
    else:
        t = t.transpose(1, 2).contiguous().transpose(1, 2)  # a non-contiguous label map
    fused = _stats_and_grads(ops.soft_dice_stats, z, t, "softmax")
    ref = _stats_and_grads(reference.soft_dice_stats, z, t, "softmax")
    for f, r in zip(fused, ref):
        assert_close(f, r, rtol=1e-5, atol=1e-5)


def test_channels_last_3d_and_large_deterministic_across_threads(ext):
    shape = (2, 4, 9, 40, 50)  # 36000 voxels per image: many blocks, both threads
    z = _logits(shape, torch.float32).contiguous(memory_format=torch.channels_last_3d)
    t = _target("labels", shape)
    fused = _stats_and_grads(ops.soft_dice_stats, z, t, "softmax")
    ref = _stats_and_grads(reference.soft_dice_stats, z, t, "softmax")
    for f, r in zip(fused, ref):
        assert_close(f, r, rtol=1e-5, atol=1e-5)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.soft_dice_stats(z, t)
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(single, fused[:3]):  # per-task partial sums added in task order: the same bits
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 5), (0, 2, 0)])
def test_empty_batch_and_empty_spatial(ext, shape):
    z = _logits(shape, torch.float32).requires_grad_()
    t = _target("labels", shape)
    stats = ops.soft_dice_stats(z, t)
    for s, r in zip(stats, reference.soft_dice_stats(z.detach(), t)):
        assert s.shape == (shape[0], shape[1])
        assert_close(s, r)
    loss = ops.soft_dice_loss(z, t)
    ref = reference.soft_dice_loss(z.detach(), t)
    assert torch.equal(loss.isnan(), ref.isnan())  # an empty batch: mean of nothing is NaN, as MONAI
    if not ref.isnan():
        assert_close(loss.detach(), ref)  # no pixels: I = P = G = 0, loss 1 - smooth_nr / smooth_dr = 0
    (grad,) = torch.autograd.grad(ops.soft_dice_loss(z, t, reduction="sum"), z)
    assert grad.shape == z.shape
    assert_close(ops.soft_dice_loss(z, t, batch=True, reduction="sum").detach(),
                 reference.soft_dice_loss(z.detach(), t, batch=True, reduction="sum"))


def test_one_channel_integer_target_is_a_binary_mask(ext):
    z = _logits((2, 1, 5, 5))
    mask = torch.randint(0, 2, (2, 5, 5), generator=torch.Generator().manual_seed(3))
    dense = mask.unsqueeze(1).double()
    assert_close(ops.soft_dice_loss(z, mask, activation="sigmoid"),
                 reference.soft_dice_loss(z, dense, activation="sigmoid"))
    assert_close(ops.soft_dice_loss(z, mask.bool(), activation="sigmoid"),
                 reference.soft_dice_loss(z, dense, activation="sigmoid"))


def test_other_integer_dtypes_and_half_logits(ext):
    shape = (2, 3, 6, 6)
    z, t = _logits(shape, torch.float32), _target("labels", shape)
    want = reference.soft_dice_loss(z, t)
    for dt in (torch.uint8, torch.int32):
        assert_close(ops.soft_dice_loss(z, t.to(dt)), want)
    half = ops.soft_dice_loss(z.to(torch.bfloat16), t)  # no kernel for bfloat16: the reference runs
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), want, rtol=2e-2, atol=2e-2)
    soft64 = _target("soft", shape)  # a float64 target for float32 logits is cast to float32
    assert_close(ops.soft_dice_loss(z, soft64), reference.soft_dice_loss(z, soft64.float()))


def test_nan_propagates(ext):
    z, t = _logits((1, 3, 4, 4), torch.float32), _target("labels", (1, 3, 4, 4))
    z[0, 1, 2, 2] = float("nan")
    assert ops.soft_dice_loss(z, t).isnan() and reference.soft_dice_loss(z, t).isnan()


def test_torch_compile_and_export(ext):
    class Loss(torch.nn.Module):
        def forward(self, z, t):
            return ops.soft_dice_loss(z, t, include_background=False, weight=[1.0, 2.0])

    shape = (2, 3, 6, 6)
    z, t = _logits(shape, torch.float32).requires_grad_(), _target("labels", shape)
    out = torch.compile(Loss(), backend="aot_eager", fullgraph=True)(z, t)
    (grad,) = torch.autograd.grad(out, z)
    zr = z.detach().clone().requires_grad_()
    want = reference.soft_dice_loss(zr, t, include_background=False, weight=torch.tensor([1.0, 2.0]))
    assert_close(out.detach(), want.detach())
    assert_close(grad, torch.autograd.grad(want, zr)[0], rtol=1e-5, atol=1e-6)
    prog = torch.export.export(Loss(), (z.detach(), t))
    assert "medcnn.soft_dice_stats" in str(prog.graph)


X = torch.zeros(2, 3, 4, 4)
LAB = torch.zeros(2, 4, 4, dtype=torch.long)


@pytest.mark.parametrize("args,kw,exc,match", [
    ((X, LAB), dict(activation="tanh"), ValueError, "activation must be one of"),
    ((X, LAB), dict(reduction="avg"), ValueError, "reduction must be one of"),
    ((X, LAB), dict(weight=[1.0, 2.0]), ValueError, "one value per class"),
    ((X, LAB), dict(weight=[1.0, -2.0, 1.0]), ValueError, "weight must be >= 0"),
    ((X, LAB), dict(weight=torch.tensor([1.0, float("nan"), 1.0])), ValueError, "finite and >= 0"),
    ((X, LAB), dict(weight="heavy"), TypeError, "weight must be a number"),
    ((X, LAB), dict(smooth_nr=-1.0), ValueError, "smooth_nr must be >= 0"),
    ((X, LAB), dict(smooth_dr=float("inf")), ValueError, "smooth_dr must be finite"),
    ((X, LAB), dict(batch=1), TypeError, "batch must be a bool"),
    ((X, LAB), dict(include_background="no"), TypeError, "include_background must be a bool"),
    ((X[:, :1], LAB), dict(), ValueError, "softmax over a single channel"),
    ((X[:, :1], LAB), dict(activation="sigmoid", include_background=False), ValueError, "leaves no channel"),
    ((X, LAB[:, :3]), dict(), ValueError, r"label-map target must have shape \(N, \*spatial\)"),
    ((X, torch.zeros(2, 3, 4, 4, dtype=torch.long)), dict(), ValueError, "label-map target must have shape"),
    ((X, torch.zeros(2, 3, 4, 5)), dict(), ValueError, "must have the same shape"),
    ((X, torch.zeros(2, 4, 4, dtype=torch.complex64)), dict(), TypeError, "integer label map"),
    ((X, LAB.to("meta")), dict(), ValueError, "same device"),
    ((X, [0, 1]), dict(), TypeError, "target must be a torch.Tensor"),
    ((X[0, 0], LAB[0]), dict(), ValueError, "at least 3 dimensions"),
    ((X.long(), LAB), dict(), TypeError, "floating-point"),
    ((X, LAB + 3), dict(), ValueError, r"target label 3 \(at flat index 0\) is outside \[0, 3\)"),
    ((X, LAB - 1), dict(), ValueError, r"target label -1 .* is outside \[0, 3\)"),
])
def test_bad_arguments(args, kw, exc, match):
    with pytest.raises(exc, match=match):
        ops.soft_dice_loss(*args, **kw)


def test_reference_path_checks_labels_too():
    """bfloat16 logits run the reference: out-of-range labels fail there with the kernel's message."""
    with pytest.raises(ValueError, match=r"medcnn::soft_dice_stats: target label 7 \(at flat index 5\)"):
        bad = LAB.clone()
        bad.view(-1)[5] = 7
        ops.soft_dice_loss(X.to(torch.bfloat16), bad)


@pytest.mark.parametrize("args,exc,match", [
    ((X, LAB, "tanh"), ValueError, "medcnn::soft_dice_stats: activation must be one of"),
    ((X, LAB[:, :3], "softmax"), ValueError, "medcnn::soft_dice_stats: a label-map target must have shape"),
    ((X, LAB.int(), "softmax"), TypeError, "target must be an int64 label map or a dense target"),
    ((X, X.double(), "softmax"), TypeError, "target must be an int64 label map or a dense target"),
    ((X, X[:, :2], "softmax"), ValueError, "logits and target must have the same shape"),
    ((X[0, 0], LAB[0], "softmax"), ValueError, "at least 3 dimensions"),
    ((X.long(), LAB, "softmax"), TypeError, "logits must be float32 or float64"),
    ((X, LAB + 5, "softmax"), ValueError, r"medcnn::soft_dice_stats: target label 5 .* outside \[0, 3\)"),
])
def test_kernel_checks_its_arguments_too(ext, args, exc, match):
    with pytest.raises(exc, match=match):
        ext.soft_dice_stats(*args)


def test_kernel_backward_checks_gradient_shapes(ext):
    with pytest.raises(ValueError, match=r"medcnn::soft_dice_stats_backward: grad_psum must have shape \(N, C\)"):
        ext.soft_dice_stats_backward(torch.zeros(2, 3), torch.zeros(3, 2), X, LAB, "softmax")
    with pytest.raises(TypeError, match="same dtype"):
        ext.soft_dice_stats_backward(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3), X, LAB, "softmax")


@pytest.mark.gpu
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_cuda_matches_cpu(ext, act, kind):
    """The CUDA kernels against the CPU ones (statistics and gradients); skipped without a GPU and a CUDA build."""
    if not torch.cuda.is_available() or "cuda" not in ops.extension_status().devices:
        pytest.skip("no CUDA device, or the extension was built without CUDA kernels")
    shape = (3, 5, 17, 33)
    z, t = _logits(shape, torch.float32), _target(kind, shape, torch.float32)
    cpu = _stats_and_grads(ops.soft_dice_stats, z, t, act)
    gpu = _stats_and_grads(ops.soft_dice_stats, z.cuda(), t.cuda(), act)
    for c, g in zip(cpu, gpu):
        assert_close(g.cpu(), c, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"is outside \[0, 5\)"):
        ops.soft_dice_stats(z.cuda(), _target("labels", shape).cuda() + 5, act)
