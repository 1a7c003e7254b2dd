"""Fused batched affine warp for augmentation: ``F.grid_sample(image, F.affine_grid(theta, image.shape))`` in one
pass, 2-D and 3-D, with an optional label mask warped by nearest in the same call.

Eager PyTorch writes a full (N, *spatial, DIM) sampling grid and reads it back, and warping a label map costs a
conversion to float, a second grid_sample and a conversion back. The compiled op computes each output voxel's
sampling coordinate from theta on the fly and uses it for every image and mask channel; the mask keeps its dtype
(its values are copied, never interpolated). Backward gives the gradient w.r.t. the image (the transposed warp, a
deterministic scatter-add). The gradient w.r.t. theta (spatial transformer networks) comes from the reference:
when ``theta.requires_grad`` this function runs ``affine_grid`` + ``grid_sample``, whose autograd covers both.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from . import _extension, reference
from ._checks import check_affine_warp
from ._dispatch import use_compiled

__all__ = ["affine_warp"]


def affine_warp(image: torch.Tensor, theta: torch.Tensor, mask: torch.Tensor | None = None, *,
                mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Warp a batch by per-sample affine matrices, as ``F.grid_sample(image, F.affine_grid(theta, image.shape,
    align_corners), mode, padding_mode, align_corners)``.

    image: (N, C, H, W) or (N, C, D, H, W), floating point. theta: (N, 2, 3) or (N, 3, 4), same dtype: maps
    normalized output coordinates to normalized input coordinates, x first (``F.affine_grid``'s meaning), so any
    composition of rotation, translation, flip, scale and skew is one matrix. mode: ``"bilinear"`` (trilinear in
    3-D) or ``"nearest"`` (round half to even, as grid_sample); padding_mode: ``"zeros"``, ``"border"`` or
    ``"reflection"``. mask: optional (N, C_mask, *spatial) of any real dtype (int64 labels, uint8, bool, float),
    warped by nearest with the same padding mode, keeping its dtype; it gets no gradient.

    Returns the warped image (same size; the compiled op keeps the memory format), or ``(image, mask)`` when a mask
    is given. The reference path (no extension, float16/bfloat16, theta requiring grad, over 2^31 voxels) warps the
    mask through floating point: exact for integer labels up to 2^24.
    """
    check_affine_warp(image, theta, mask, mode, padding_mode, align_corners)
    if mask is not None:
        mask = mask.detach()  # labels: never differentiated
    if not theta.requires_grad and _fits_kernel(image) and use_compiled(image, theta):
        out, mask_out = torch.ops.medcnn.affine_warp(image, theta, mask, mode, padding_mode, align_corners)
        return out if mask is None else (out, mask_out)
    return reference.affine_warp(image, theta, mask, mode, padding_mode, align_corners)


def _fits_kernel(image: torch.Tensor) -> bool:
    """The CPU kernel's plans hold 32-bit offsets: at most 2^31 voxels per channel, counting a one-voxel margin."""
    padded = 1
    for s in image.shape[2:]:
        padded *= s + 2
    return padded <= 2**31 - 1


# --- torch.library registrations ------------------------------------------------------------------------------------
def _fake(image, theta, mask, mode, padding_mode, align_corners):
    out = torch.empty_like(image, memory_format=suggest_memory_format(image))
    if mask is None:
        return out, image.new_empty((0,))
    return out, torch.empty_like(mask, memory_format=suggest_memory_format(mask))


def _backward_fake(grad, theta, mode, padding_mode, align_corners):
    return torch.empty_like(grad, memory_format=suggest_memory_format(grad))


_NO_THETA_GRAD = ("medcnn::affine_warp computes no gradient w.r.t. theta; trainsdk.ops.affine_warp runs the "
                  "affine_grid + grid_sample reference (which does) whenever theta requires grad")


def _setup_context(ctx, inputs, output):
    image, theta, mask, mode, padding_mode, align_corners = inputs
    ctx.save_for_backward(theta)
    ctx.args = (mode, padding_mode, align_corners)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad, grad_mask):
    if ctx.needs_input_grad[1]:
        raise RuntimeError(_NO_THETA_GRAD)
    (theta,) = ctx.saved_tensors
    dimage = torch.ops.medcnn.affine_warp_backward(grad, theta, *ctx.args) if ctx.needs_input_grad[0] else None
    return dimage, None, None, None, None, None


def _setup_backward_context(ctx, inputs, output):
    grad, theta, mode, padding_mode, align_corners = inputs
    ctx.save_for_backward(theta)
    ctx.args = (mode, padding_mode, align_corners)


def _backward_backward(ctx, gg):
    """affine_warp_backward is linear in grad; its transpose is the forward warp (double backward)."""
    if ctx.needs_input_grad[1]:
        raise RuntimeError(_NO_THETA_GRAD)
    (theta,) = ctx.saved_tensors
    return torch.ops.medcnn.affine_warp(gg, theta, None, *ctx.args)[0], None, None, None, None


@_extension.on_load
def _register() -> None:
    torch.library.register_fake("medcnn::affine_warp")(_fake)
    torch.library.register_fake("medcnn::affine_warp_backward")(_backward_fake)
    torch.library.register_autograd("medcnn::affine_warp", _backward, setup_context=_setup_context)
    torch.library.register_autograd("medcnn::affine_warp_backward", _backward_backward,
                                    setup_context=_setup_backward_context)
