"""Fused batched affine warp against F.affine_grid + F.grid_sample: values (image and label mask), gradients, every
mode / padding / align_corners combination in 2-D and 3-D, rounding, layouts, empty batches, tracing, errors."""
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from trainsdk import ops
from trainsdk.ops import reference

from ._helpers import assert_close, layouts

MODES = ["bilinear", "nearest"]
PADDINGS = ["zeros", "border", "reflection"]
COMBOS = list(itertools.product(MODES, PADDINGS, [False, True]))
SHAPES = {2: (3, 2, 7, 9), 3: (2, 2, 5, 6, 7)}  # odd sizes, H != W


def _theta(n, dims, dtype=torch.float32, seed=0):
    """Random rotation-scale-skew-translation matrices (and flips), some sampling outside the input."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.eye(dims) * (0.7 + 0.6 * torch.rand(n, 1, 1, generator=g)) + 0.4 * torch.randn(n, dims, dims, generator=g)
    lin[0] = lin[0] * torch.tensor([-1.0] + [1.0] * (dims - 1))  # a flip of x in the first sample
    shift = 0.3 * torch.randn(n, dims, 1, generator=g)
    return torch.cat([lin, shift], dim=2).to(dtype)


def _labels(shape, channels=1, high=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (shape[0], channels) + tuple(shape[2:]), generator=g)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _warp_and_grad(fn, image, theta, grad, **kw):
    x = image.detach().clone().requires_grad_(True)
    out = fn(x, theta, **kw)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("mode,padding,align", COMBOS)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(ext, dims, dtype, mode, padding, align):
    """Image (1 and 3 channels), int64 label mask and the image gradient, against affine_grid + grid_sample."""
    shape = SHAPES[dims]
    theta = _theta(shape[0], dims, dtype)
    for channels in (1, 3):  # one channel: the single-pass path; several: plan + per-channel gather
        image = torch.randn((shape[0], channels) + shape[2:], dtype=dtype)
        mask = _labels(shape)
        kw = dict(mode=mode, padding_mode=padding, align_corners=align)
        out, mask_out = ops.affine_warp(image, theta, mask, **kw)
        ref, mask_ref = reference.affine_warp(image, theta, mask, mode, padding, align)
        assert_close(out, ref, **_tol(dtype))
        assert mask_out.dtype == torch.int64 and torch.equal(mask_out, mask_ref)
        grad = torch.randn_like(ref)
        fused = _warp_and_grad(ops.affine_warp, image, theta, grad, **kw)
        eager = _warp_and_grad(reference.affine_warp, image, theta, grad, mode=mode, padding_mode=padding,
                               align_corners=align)
        assert_close(fused[1], eager[1], **_tol(dtype))


def test_reference_is_affine_grid_plus_grid_sample():
    image, theta = torch.randn(2, 3, 6, 5), _theta(2, 2)
    grid = F.affine_grid(theta, [2, 3, 6, 5], align_corners=False)
    assert torch.equal(reference.affine_warp(image, theta), F.grid_sample(image, grid, align_corners=False))


@pytest.mark.parametrize("dims", [2, 3])
def test_flip_is_exact(ext, dims):
    """theta = diag(-1, 1[, 1]) mirrors x: exactly torch.flip, for the image and the mask, any align_corners."""
    shape = SHAPES[dims]
    theta = torch.zeros(shape[0], dims, dims + 1)
    theta[:, :, :dims] = torch.diag(torch.tensor([-1.0] + [1.0] * (dims - 1)))
    image, mask = torch.randn(*shape), _labels(shape).to(torch.uint8)
    for align in (False, True):
        out, mask_out = ops.affine_warp(image, theta, mask, mode="nearest", align_corners=align)
        assert torch.equal(out, image.flip(-1)) and torch.equal(mask_out, mask.flip(-1))
        assert_close(ops.affine_warp(image, theta, align_corners=align), image.flip(-1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_nearest_rounds_half_to_even(ext, dims):
    """align_corners=True on 5 voxels, scale 0.5: sources 1, 1.5, 2, 2.5, 3 (exact in float), which grid_sample
    rounds half to even (1, 2, 2, 2, 3), not half up (1, 2, 2, 3, 3)."""
    shape = (1, 1) + (5,) * dims
    theta = torch.zeros(1, dims, dims + 1)
    theta[0, 0, 0] = 0.5
    theta[0, 1:, 1:dims] = torch.eye(dims - 1)
    labels = torch.arange(5).expand(shape).contiguous()  # the label of a voxel is its x index
    _, warped = ops.affine_warp(torch.zeros(shape), theta, labels, align_corners=True)
    expected = torch.tensor([1, 2, 2, 2, 3]).expand(shape)
    assert torch.equal(warped, expected)
    assert torch.equal(reference.affine_warp(torch.zeros(shape), theta, labels, align_corners=True)[1], expected)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int16, torch.int32, torch.int64, torch.float16,
                                   torch.float32])
def test_mask_dtypes_keep_their_values(ext, dtype):
    shape = (3, 1, 9, 8)
    theta = _theta(3, 2)
    mask = (_labels(shape, channels=2, high=2 if dtype == torch.bool else 100) * 1).to(dtype)
    image = torch.randn(*shape)
    _, warped = ops.affine_warp(image, theta, mask)
    _, ref = reference.affine_warp(image, theta, mask)
    assert warped.dtype == dtype and warped.shape == mask.shape
    assert torch.equal(warped, ref)


def test_large_labels_are_copied_exactly(ext):
    """Raw values are copied: int64 labels beyond float's 2^24 survive (the reference path rounds them)."""
    big = torch.tensor([2**40 + 1, 2**53 + 3, -(2**60) - 7, 5])
    mask = big[torch.randint(0, 4, (2, 1, 6, 7), generator=torch.Generator().manual_seed(0))]
    theta = _theta(2, 2)
    _, warped = ops.affine_warp(torch.randn(2, 1, 6, 7, dtype=torch.float64), theta.double(), mask, mode="nearest")
    index = ops.affine_warp(torch.arange(42.0, dtype=torch.float64).reshape(1, 1, 6, 7).expand(2, 1, 6, 7),
                            theta.double(), mode="nearest")  # source voxel of every output voxel (0 outside)
    inside = ops.affine_warp(torch.ones(2, 1, 6, 7, dtype=torch.float64), theta.double(), mode="nearest") > 0
    expected = torch.where(inside, mask.flatten(1).gather(1, index.long().flatten(1)).view_as(mask), 0)
    assert torch.equal(warped, expected)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode,padding", [("bilinear", "zeros"), ("bilinear", "reflection"), ("nearest", "border")])
def test_gradcheck_float64(ext, dims, mode, padding):
    shape = (2, 2, 4, 5) if dims == 2 else (2, 1, 3, 4, 4)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    theta = _theta(2, dims, torch.float64)
    fn = lambda t: ops.affine_warp(t, theta, mode=mode, padding_mode=padding)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_theta_gradient_comes_from_the_reference(ext):
    """theta.requires_grad: the public function runs affine_grid + grid_sample, whose autograd covers theta."""
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    theta = _theta(2, 2, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, t: ops.affine_warp(a, t, padding_mode="border"), (x, theta))
    out = ops.affine_warp(x, theta)
    out.sum().backward()
    ref_theta = theta.detach().clone().requires_grad_()
    reference.affine_warp(x.detach(), ref_theta).sum().backward()
    assert_close(theta.grad, ref_theta.grad)


def test_op_refuses_to_differentiate_theta(ext):
    """The compiled op itself has no theta gradient: asking for one raises instead of returning None."""
    theta = _theta(1, 2).requires_grad_()
    out, _ = ext.affine_warp(torch.randn(1, 1, 4, 4), theta, None, "bilinear", "zeros", False)
    with pytest.raises(RuntimeError, match="no gradient w.r.t. theta"):
        out.sum().backward()


def test_mask_gets_no_gradient(ext):
    mask = torch.rand(2, 1, 5, 5, requires_grad=True)
    out, mask_out = ops.affine_warp(torch.randn(2, 1, 5, 5, requires_grad=True), _theta(2, 2), mask)
    assert out.requires_grad and not mask_out.requires_grad


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed"])
def test_layouts(ext, layout):
    image = layouts(torch.randn(3, 4, 7, 9))[layout]
    mask = layouts(_labels((3, 4, 7, 9), channels=3).double())[layout].long()
    theta = _theta(3, 2)
    for mode in MODES:
        out, mask_out = ops.affine_warp(image, theta, mask, mode=mode, padding_mode="reflection")
        ref, mask_ref = reference.affine_warp(image.contiguous(), theta, mask.contiguous(), mode, "reflection")
        assert_close(out, ref, **_tol(torch.float32))
        assert torch.equal(mask_out, mask_ref)
        grad = torch.randn_like(ref)
        fused = _warp_and_grad(ops.affine_warp, image, theta, grad, mode=mode)
        eager = _warp_and_grad(reference.affine_warp, image.contiguous(), theta, grad, mode=mode)
        assert_close(fused[1], eager[1], **_tol(torch.float32))
    if layout == "channels_last":  # kept, image and mask
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert mask_out.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_3d(ext):
    image = torch.randn(2, 3, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d)
    theta = _theta(2, 3)
    out = ops.affine_warp(image, theta)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert_close(out, reference.affine_warp(image.contiguous(), theta), **_tol(torch.float32))


@pytest.mark.parametrize("dims", [2, 3])
def test_empty_batch_and_channels(ext, dims):
    shape = (0, 2) + (4,) * dims
    out, mask_out = ops.affine_warp(torch.randn(*shape), torch.randn(0, dims, dims + 1), torch.zeros(shape).long())
    assert out.shape == shape and mask_out.shape == shape and mask_out.dtype == torch.int64
    x = torch.randn((2, 0) + (4,) * dims, requires_grad=True)
    y, m = ops.affine_warp(x, _theta(2, dims), _labels((2, 0) + (4,) * dims))
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape and m.shape == (2, 1) + (4,) * dims


def test_one_voxel_axes(ext):
    """Size-1 axes (normalized coordinate 0; reflection has a zero span there)."""
    image, theta = torch.randn(2, 1, 1, 6), _theta(2, 2)
    for mode, padding, align in COMBOS:
        got = ops.affine_warp(image, theta, mode=mode, padding_mode=padding, align_corners=align)
        with warnings.catch_warnings():  # affine_grid warns about unit-size grids with align_corners=True
            warnings.simplefilter("ignore", UserWarning)
            ref = reference.affine_warp(image, theta, None, mode, padding, align)
        assert_close(got, ref, **_tol(torch.float32))


def test_multithreaded_and_deterministic(ext):
    """Larger than one thread's share; backward is bit-identical whatever the thread count."""
    image, theta, grad = torch.randn(4, 3, 48, 41), _theta(4, 2), torch.randn(4, 3, 48, 41)  # > 16384: threads
    assert_close(ops.affine_warp(image, theta), reference.affine_warp(image, theta), rtol=1e-4, atol=1e-4)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(ext.affine_warp_backward(grad, theta, "bilinear", "zeros", False))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_half_precision_uses_the_reference(ext):
    image, theta = torch.randn(2, 1, 6, 6), _theta(2, 2)
    out = ops.affine_warp(image.half(), theta.half())
    assert out.dtype == torch.float16
    assert_close(out.float(), ops.affine_warp(image, theta), rtol=0, atol=1e-2)


def test_opcheck(ext):
    for dims in (2, 3):
        shape = SHAPES[dims]
        theta = _theta(shape[0], dims)
        image = torch.randn(*shape, requires_grad=True)
        for mask in (None, _labels(shape)):
            torch.library.opcheck(ext.affine_warp, (image, theta, mask, "bilinear", "border", False))
        torch.library.opcheck(ext.affine_warp_backward, (torch.randn(*shape), theta, "nearest", "reflection", True))
    cl = torch.randn(2, 3, 5, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(ext.affine_warp, (cl, _theta(2, 2), _labels((2, 3, 5, 6)), "nearest", "zeros", True))


class _Augment(torch.nn.Module):
    def forward(self, image, theta, mask):
        return ops.affine_warp(image, theta, mask, padding_mode="reflection")


def test_torch_compile_and_export(ext):
    image, theta, mask = torch.randn(2, 1, 8, 8, requires_grad=True), _theta(2, 2), _labels((2, 1, 8, 8))
    out, mask_out = torch.compile(_Augment(), backend="aot_eager", fullgraph=True)(image, theta, mask)
    out.sum().backward()
    ref, mask_ref = reference.affine_warp(image.detach(), theta, mask, "bilinear", "reflection")
    assert_close(out, ref, **_tol(torch.float32))
    assert torch.equal(mask_out, mask_ref) and image.grad is not None
    prog = torch.export.export(_Augment(), (image.detach(), theta, mask))
    assert "medcnn.affine_warp" in str(prog.graph)


BAD = [
    (dict(image=torch.randn(2, 3, 4)), ValueError, r"image must be \(N, C, H, W\) or \(N, C, D, H, W\)"),
    (dict(image=torch.randn(2, 1, 0, 4)), ValueError, "non-empty spatial dimensions"),
    (dict(image=torch.ones(2, 1, 4, 4, dtype=torch.int64)), TypeError, "image must be .*float32 or float64"),
    (dict(theta=torch.randn(2, 3, 4)), ValueError, r"theta must have shape \(2, 2, 3\)"),
    (dict(theta=torch.randn(3, 2, 3)), ValueError, r"theta must have shape \(2, 2, 3\)"),
    (dict(theta=torch.randn(2, 2, 3, dtype=torch.float64)), TypeError, "same dtype"),
    (dict(mask=torch.zeros(2, 1, 4, 5)), ValueError, "mask must have the image's batch size and spatial size"),
    (dict(mask=torch.zeros(3, 1, 4, 4)), ValueError, "mask must have the image's batch size and spatial size"),
    (dict(mask=torch.zeros(2, 1, 4, 4, dtype=torch.complex64)), TypeError, "mask must be a real"),
    (dict(mask=torch.zeros(2, 1, 4, 4, device="meta")), ValueError, "image and mask must be on the same device"),
    (dict(mode="bicubic"), ValueError, "mode must be 'bilinear'"),
    (dict(padding_mode="wrap"), ValueError, "padding_mode must be one of"),
]


@pytest.mark.parametrize("kw,exc,match", BAD)
def test_bad_arguments(kw, exc, match):
    args = dict(image=torch.randn(2, 1, 4, 4), theta=torch.randn(2, 2, 3), mask=None, mode="bilinear",
                padding_mode="zeros")
    args.update(kw)
    image, theta, mask = args.pop("image"), args.pop("theta"), args.pop("mask")
    with pytest.raises(exc, match=match):
        ops.affine_warp(image, theta, mask, **args)


def test_bad_python_types():
    with pytest.raises(TypeError, match="align_corners must be a bool"):
        ops.affine_warp(torch.randn(1, 1, 4, 4), torch.randn(1, 2, 3), align_corners=1)
    with pytest.raises(TypeError, match="theta must be a torch.Tensor"):
        ops.affine_warp(torch.randn(1, 1, 4, 4), [[1.0, 0, 0], [0, 1.0, 0]])
    with pytest.raises(TypeError, match="mask must be a torch.Tensor or None"):
        ops.affine_warp(torch.randn(1, 1, 4, 4), torch.randn(1, 2, 3), mask=[0])


@pytest.mark.parametrize("kw,exc,match", [b for b in BAD if "device" not in b[2]])
def test_kernel_checks_its_arguments_too(ext, kw, exc, match):
    args = dict(image=torch.randn(2, 1, 4, 4), theta=torch.randn(2, 2, 3), mask=None, mode="bilinear",
                padding_mode="zeros")
    args.update(kw)
    with pytest.raises(exc, match="medcnn::affine_warp: .*" + match):
        ext.affine_warp(args["image"], args["theta"], args["mask"], args["mode"], args["padding_mode"], False)
    with pytest.raises(ValueError, match="medcnn::affine_warp_backward: theta must have shape"):
        ext.affine_warp_backward(torch.randn(2, 1, 4, 4), torch.randn(2, 3, 4), "bilinear", "zeros", False)


@pytest.mark.gpu
@pytest.mark.parametrize("dims", [2, 3])
def test_cuda_matches_cpu(ext, dims):
    if not torch.cuda.is_available() or "cuda" not in ops.extension_status().devices:
        pytest.skip("no CUDA device or no CUDA kernels in this build")
    shape = SHAPES[dims]
    image, theta, mask = torch.randn(*shape), _theta(shape[0], dims), _labels(shape)
    for mode, padding, align in COMBOS:
        kw = dict(mode=mode, padding_mode=padding, align_corners=align)
        cpu = _warp_and_grad(lambda *a, **k: ops.affine_warp(*a, mask, **k)[0], image, theta, image, **kw)
        gpu = _warp_and_grad(lambda *a, **k: ops.affine_warp(*a, mask.cuda(), **k)[0], image.cuda(), theta.cuda(),
                             image.cuda(), **kw)
        for a, b in zip(cpu, gpu):
            assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
        assert torch.equal(ops.affine_warp(image.cuda(), theta.cuda(), mask.cuda(), **kw)[1].cpu(),
                           ops.affine_warp(image, theta, mask, **kw)[1])
