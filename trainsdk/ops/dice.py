"""Fused soft Dice loss: the per-(n, c) intersections and sums in one pass over the logits, forward and backward.

MONAI's ``DiceLoss(softmax=True, to_onehot_y=True)`` and the SDK's composite (``reference.soft_dice_loss``) write the
probabilities, the one-hot target and their product out in full, and their gradients again in backward. The
compiled op ``medcnn::soft_dice_stats`` reads the logits (and labels) once and returns only ``I = sum p*g``,
``P = sum p`` and ``G = sum g`` per (n, c); its backward recomputes p per pixel and applies the softmax (or sigmoid)
Jacobian in the same pass. The loss formula on those (N, C) sums stays in PyTorch
(``reference.dice_loss_from_stats``), so autograd composes the batch sums, the dropped background, class weights
and the reduction with the op's own backward.

Channels-last and other strided inputs are copied to contiguous by the kernel (correct, not fast); the gradient of
the logits is contiguous.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import _extension, reference
from ._checks import check_soft_dice_loss, check_soft_dice_stats
from ._dispatch import onnx_exporting, use_compiled

__all__ = ["soft_dice_loss", "soft_dice_stats"]

Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def soft_dice_stats(logits: torch.Tensor, target: torch.Tensor, activation: str = "softmax") -> Stats:
    """``(I, P, G)``: per-(n, c) sums over the spatial dims of ``p*g``, ``p`` and ``g``, each (N, C).

    logits (N, C, *spatial); p = softmax over C, sigmoid, or the logits themselves (``activation="none"``).
    target: an integer (or bool) label map (N, *spatial) or (N, 1, *spatial) with values in [0, C) (one-hot
    implied), or a floating-point tensor of the logits' shape (one-hot or soft labels). With one channel, an integer
    target is the binary foreground mask itself (as MONAI, which ignores ``to_onehot_y`` for one channel).
    """
    check_soft_dice_stats(logits, target, activation)
    target = _kernel_target(logits, target)
    if use_compiled(logits):
        return tuple(torch.ops.medcnn.soft_dice_stats(logits, target, activation))
    if not target.is_floating_point() and _eager():
        _check_labels(target, logits.shape[1])
    return reference.soft_dice_stats(logits, target, activation)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, activation: str = "softmax",
                   include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                   batch: bool = False, reduction: str = "mean",
                   weight: torch.Tensor | Sequence[float] | float | None = None) -> torch.Tensor:
    """Soft Dice loss with the semantics of MONAI's ``DiceLoss`` (its defaults: no squared prediction, Dice not
    Jaccard, ``soft_label=False``), fused (see the module docstring).

    Per (n, c): ``1 - (2 I + smooth_nr) / (P + G + smooth_dr)`` with the sums of ``soft_dice_stats``; ``batch``
    sums over N as well (one value per class); ``include_background=False`` drops channel 0 (after the softmax);
    ``weight`` multiplies each class's loss: a number, or one value >= 0 per class, either for all C channels or,
    without the background, for the C - 1 kept ones (MONAI's convention). reduction: ``"mean"``, ``"sum"`` or
    ``"none"`` ((N, C') per image and class, or (C',) with ``batch``). An empty batch gives NaN for ``"mean"``
    (the mean of nothing), as MONAI.
    """
    check_soft_dice_stats(logits, target, activation)
    check_soft_dice_loss(logits, include_background, smooth_nr, smooth_dr, batch, reduction, weight)
    inter, psum, gsum = soft_dice_stats(logits, target, activation)
    w = _class_weights(weight, logits, include_background)
    return reference.dice_loss_from_stats(inter, psum, gsum, include_background=include_background,
                                          smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
                                          reduction=reduction, weight=w)


def _eager() -> bool:
    """Not being traced (data-dependent checks would break torch.compile / export / ONNX export graphs)."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or onnx_exporting())


def _kernel_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What both implementations take: an int64 label map, or a dense target of the logits' dtype."""
    if target.is_floating_point():
        return target if target.dtype == logits.dtype else target.to(logits.dtype)
    if logits.shape[1] == 1:  # one channel: the integer target is the foreground mask
        return (target if target.dim() == logits.dim() else target.unsqueeze(1)).to(logits.dtype)
    return target if target.dtype == torch.int64 else target.long()


def _check_labels(labels: torch.Tensor, channels: int) -> None:
    """Label range on the reference path (the kernel checks it in its own pass); same message as the kernel's."""
    bad = ((labels < 0) | (labels >= channels)).flatten().nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"medcnn::soft_dice_stats: target label {int(labels.flatten()[i])} (at flat index {i}) is "
                         f"outside [0, {channels}): the logits have {channels} channels")


def _class_weights(weight, logits: torch.Tensor, include_background: bool) -> torch.Tensor | None:
    """Per-kept-class weights as a tensor of the logits' dtype (a scalar broadcasts); a weight for all C channels
    loses its background entry when the background is dropped."""
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if isinstance(weight, torch.Tensor) and _eager() and not bool(torch.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"medcnn::soft_dice_loss: weight must be finite and >= 0, got {weight.tolist()}")
    if not include_background and w.dim() == 1 and w.shape[0] == logits.shape[1]:
        w = w[1:]
    return w


# --- torch.library registrations ------------------------------------------------------------------------------------
def _fake(logits, target, activation):
    n, c = logits.shape[0], logits.shape[1]
    return logits.new_empty((n, c)), logits.new_empty((n, c)), logits.new_empty((n, c))


def _backward_fake(grad_inter, grad_psum, logits, target, activation):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, target, activation = inputs
    ctx.save_for_backward(logits, target)
    ctx.activation = activation


def _differentiable_backward(grad_inter, grad_psum, logits, target, activation):
    """d/dlogits in autograd-tracked ops, for backward(create_graph=True) (e.g. a gradient penalty): double backward
    through the fused op then gives the composite's second-order gradients."""
    shape = tuple(grad_inter.shape) + (1,) * (logits.dim() - 2)  # (N, C, 1, ...)
    p = reference.dice_activation(logits, activation)
    g = target if target.is_floating_point() else reference.one_hot_labels(target, logits)
    a = grad_inter.reshape(shape) * g + grad_psum.reshape(shape)  # the gradient reaching p
    if activation == "softmax":
        return p * (a - (p * a).sum(1, keepdim=True))
    if activation == "sigmoid":
        return a * p * (1 - p)
    return a.expand_as(logits)


def _backward(ctx, grad_inter, grad_psum, grad_gsum):
    logits, target = ctx.saved_tensors
    dlogits = dtarget = None
    if ctx.needs_input_grad[0]:
        if torch.is_grad_enabled():  # create_graph=True
            dlogits = _differentiable_backward(grad_inter, grad_psum, logits, target, ctx.activation)
        else:
            dlogits = torch.ops.medcnn.soft_dice_stats_backward(grad_inter, grad_psum, logits, target,
                                                                ctx.activation)
    if ctx.needs_input_grad[1]:  # a dense target that requires grad: dI/dg = p, dG/dg = 1
        shape = tuple(grad_inter.shape) + (1,) * (logits.dim() - 2)  # (N, C, 1, ...)
        p = reference.dice_activation(logits, ctx.activation)
        dtarget = grad_inter.reshape(shape) * p + grad_gsum.reshape(shape)
    return dlogits, dtarget, None


@_extension.on_load
def _register() -> None:
    torch.library.register_fake("medcnn::soft_dice_stats")(_fake)
    torch.library.register_fake("medcnn::soft_dice_stats_backward")(_backward_fake)
    torch.library.register_autograd("medcnn::soft_dice_stats", _backward, setup_context=_setup_context)
