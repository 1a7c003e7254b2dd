"""Losses for classification and segmentation, 2D and 3D: cross-entropy, Dice, Dice + cross-entropy, focal.

Every loss takes raw logits ``(N, C)`` or ``(N, C, *spatial)`` and a target, and checks the pair before computing
anything: a wrong target shape, dtype or an out-of-range label raises a ``ValueError``/``TypeError`` that names what
came and what was expected (PyTorch's own messages for these are a device-side assert on CUDA). Integer targets are
label maps ``(N, *spatial)`` (a singleton channel ``(N, 1, *spatial)`` is accepted too); float targets have the
logits' shape (probabilities or one-hot). ``create_loss(name, **kw)`` builds one by the names the CLI uses.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import soft_dice_loss  # fused; builds/loads the compiled extension on first call

__all__ = ["CrossEntropyLoss", "DiceLoss", "DiceCELoss", "FocalLoss", "create_loss", "list_losses", "LOSSES"]

REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------------- checks


def _check_logits(name: str, logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name}: logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name}: logits must be a floating-point tensor (raw scores), got {logits.dtype}")
    if logits.dim() < 2:
        raise ValueError(f"{name}: logits must be (N, C) or (N, C, *spatial), got shape {tuple(logits.shape)}")


def _check_reduction(name: str, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _class_weight(name: str, weight) -> torch.Tensor | None:
    """Per-class weights as a 1-D float tensor (a buffer, so ``.to(device)`` moves it with the module).

    Kept in float64 (or the given tensor's float dtype) and cast to the logits' dtype at each call.
    """
    if weight is None:
        return None
    floating = isinstance(weight, torch.Tensor) and weight.is_floating_point()
    w = torch.as_tensor(weight, dtype=weight.dtype if floating else torch.float64).detach().clone()
    if w.dim() != 1 or w.numel() == 0:
        raise ValueError(f"{name}: class weights must be a non-empty 1-D sequence, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name}: class weights must be finite and >= 0, got {w.tolist()}")
    return w


def _weight_for(name: str, weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    if weight.numel() != logits.shape[1]:
        raise ValueError(f"{name}: {weight.numel()} class weights given but logits have {logits.shape[1]} classes "
                         f"(shape {tuple(logits.shape)})")
    return weight.to(device=logits.device, dtype=logits.dtype)


def label_target(name: str, logits: torch.Tensor, target, ignore_index: int | None = None) -> torch.Tensor:
    """Integer label map ``(N, *spatial)`` (int64) for ``logits`` ``(N, C, *spatial)``, checked for shape and range.

    Accepts ``(N, *spatial)`` or ``(N, 1, *spatial)`` integer or bool targets. Labels must lie in ``[0, C)``;
    ``ignore_index`` (when given) is allowed anywhere. The range check reads two numbers back from the device: the
    price of an error that names the bad label instead of a CUDA device-side assert.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"{name}: target must be an integer label map (N, *spatial), got {target.dtype}")
    n, c, spatial = logits.shape[0], logits.shape[1], tuple(logits.shape[2:])
    if target.dim() == logits.dim() and target.shape[1] == 1 and tuple(target.shape[2:]) == spatial:
        target = target[:, 0]
    if tuple(target.shape) != (n, *spatial):
        raise ValueError(f"{name}: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
                         f"expected a label map {(n, *spatial)} or {(n, 1, *spatial)}")
    if target.device != logits.device:
        raise ValueError(f"{name}: target is on {target.device} but logits are on {logits.device}")
    target = target.long()
    if _tracing():
        return target
    valid = target if ignore_index is None else target[target != ignore_index]
    if valid.numel():
        lo, hi = int(valid.min()), int(valid.max())
        if lo < 0 or hi >= c:
            bad = lo if lo < 0 else hi
            extra = "" if ignore_index is None else f" or ignore_index={ignore_index}"
            raise ValueError(f"{name}: target holds label {bad} but logits have {c} classes "
                             f"(labels must be in [0, {c}){extra})")
    return target


def dense_target(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A float target of the logits' shape (probabilities / one-hot), checked for shape and range [0, 1]."""
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"{name}: float target shape {tuple(target.shape)} must equal the logits shape "
                         f"{tuple(logits.shape)} (or pass an integer label map (N, *spatial))")
    if target.device != logits.device:
        raise ValueError(f"{name}: target is on {target.device} but logits are on {logits.device}")
    if target.numel() and not _tracing() and (float(target.min()) < 0 or float(target.max()) > 1):
        raise ValueError(f"{name}: float targets are probabilities and must lie in [0, 1], got values in "
                         f"[{float(target.min()):g}, {float(target.max()):g}]")
    return target.to(logits.dtype)


def _tracing() -> bool:
    """Under torch.compile / tracing the value checks (which read numbers back from the device) are skipped."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _reduce(loss: torch.Tensor, reduction: str, count: torch.Tensor | int | None = None) -> torch.Tensor:
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    denom = loss.numel() if count is None else count
    return total / (denom.clamp_min(1) if isinstance(denom, torch.Tensor) else max(denom, 1))


# ---------------------------------------------------------------------------------------------------- cross-entropy


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy for (N, C) logits and (N, C, *spatial) class maps, with clear target checks.

    ``weight`` rescales each class; ``ignore_index`` marks label-map voxels that add nothing (unlabelled regions);
    ``label_smoothing`` mixes the one-hot target with the uniform distribution (Szegedy et al. 2016). With
    ``reduction="mean"`` the result is the weighted mean over non-ignored elements, as ``F.cross_entropy`` defines
    it. A float target of the logits' shape is read as class probabilities.
    """

    def __init__(self, weight: Sequence[float] | torch.Tensor | None = None, *, ignore_index: int = -100,
                 label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.register_buffer("weight", _class_weight("CrossEntropyLoss", weight), persistent=False)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.reduction = _check_reduction("CrossEntropyLoss", reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        name = "CrossEntropyLoss"
        _check_logits(name, logits)
        weight = _weight_for(name, self.weight, logits)
        if isinstance(target, torch.Tensor) and target.is_floating_point():
            target = dense_target(name, logits, target)
        else:
            target = label_target(name, logits, target, self.ignore_index)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing, reduction=self.reduction)


# ---------------------------------------------------------------------------------------------------- focal


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t) ** gamma`` to down-weight easy examples.

    ``mode="multiclass"``: softmax over the C channels, integer label-map target; ``alpha`` is None or one weight
    per class (``alpha[target]`` scales each element); ``ignore_index`` elements add nothing and ``"mean"``
    averages over the others. ``mode="binary"``: independent sigmoid per element (binary or multi-label), target of
    the logits' shape with values in [0, 1] (an integer/bool map ``(N, *spatial)`` for ``(N, 1, *spatial)`` logits
    is accepted); ``alpha`` in [0, 1] weights positives and ``1 - alpha`` negatives (the paper uses 0.25 with
    gamma 2; None weights both by 1). With ``gamma=0`` and no alpha both modes equal plain (binary) cross-entropy.
    """

    MODES = ("multiclass", "binary")

    def __init__(self, mode: str = "multiclass", *, gamma: float = 2.0,
                 alpha: float | Sequence[float] | torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"FocalLoss: mode must be one of {self.MODES}, got {mode!r}")
        if not float(gamma) >= 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0, got {gamma}")
        self.mode, self.gamma = mode, float(gamma)
        self.ignore_index = int(ignore_index)
        self.reduction = _check_reduction("FocalLoss", reduction)
        self.alpha: float | None = None
        class_alpha = None
        if mode == "binary" and alpha is not None:
            if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
                raise ValueError(f"FocalLoss: binary mode takes alpha as one number in [0, 1], got {alpha!r}")
            self.alpha = float(alpha)
        elif mode == "multiclass" and alpha is not None:
            if isinstance(alpha, (int, float)):
                raise ValueError("FocalLoss: multiclass mode takes alpha as one weight per class (a sequence), "
                                 f"got the number {alpha!r}")
            class_alpha = _class_weight("FocalLoss", alpha)
        self.register_buffer("class_alpha", class_alpha, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_logits("FocalLoss", logits)
        if self.mode == "binary":
            return self._binary(logits, target)
        return self._multiclass(logits, target)

    def _multiclass(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = label_target("FocalLoss", logits, target, self.ignore_index)  # (N, *spatial)
        alpha = _weight_for("FocalLoss", self.class_alpha, logits)
        valid = target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
        logpt = F.log_softmax(logits, dim=1).gather(1, safe).squeeze(1)  # (N, *spatial)
        one_minus_pt = -torch.expm1(logpt)  # 1 - p_t without cancellation when p_t is close to 1
        loss = -one_minus_pt.clamp_min(0).pow(self.gamma) * logpt
        if alpha is not None:
            loss = loss * alpha[safe.squeeze(1)]
        loss = loss * valid
        return _reduce(loss, self.reduction, valid.sum())

    def _binary(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        name = "FocalLoss"
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"{name}: target must be a torch.Tensor, got {type(target).__name__}")
        if not target.is_floating_point():
            if logits.shape[1] == 1 and target.dim() == logits.dim() - 1:
                target = target.unsqueeze(1)
            target = target.to(logits.dtype)
        t = dense_target(name, logits, target)
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - p_t).clamp_min(0).pow(self.gamma)
        if self.alpha is not None:
            loss = loss * (self.alpha * t + (1 - self.alpha) * (1 - t))
        return _reduce(loss, self.reduction)


# ---------------------------------------------------------------------------------------------------- Dice


class DiceLoss(nn.Module):
    """Soft Dice loss (Milletari et al. 2016) with MONAI's ``DiceLoss`` semantics, on the fused ``soft_dice_loss`` op.

    Per image and class ``1 - (2 sum(p g) + smooth_nr) / (sum p + sum g + smooth_dr)``, p = softmax (or sigmoid)
    of the logits ``(N, C, *spatial)``; ``batch=True`` sums over the batch first (one value per class: stable when
    a class is absent from some images); ``include_background=False`` drops channel 0; ``weight`` scales each
    class (a number, or one value per channel, or per kept channel). Target: an integer label map ``(N, *spatial)``
    / ``(N, 1, *spatial)`` (one-hot implied; with one channel it is the foreground mask) or a float tensor of the
    logits' shape. Argument and target checks are the op's (``trainsdk.ops.soft_dice_loss``).
    """

    def __init__(self, *, activation: str = "softmax", include_background: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch: bool = False,
                 weight: float | Sequence[float] | torch.Tensor | None = None, reduction: str = "mean"):
        super().__init__()
        self.activation, self.include_background, self.batch = activation, include_background, batch
        self.smooth_nr, self.smooth_dr = smooth_nr, smooth_dr
        self.reduction = _check_reduction("DiceLoss", reduction)
        self.scalar_weight = float(weight) if isinstance(weight, (int, float)) else None
        tensor_weight = None if weight is None or self.scalar_weight is not None else _class_weight("DiceLoss", weight)
        self.register_buffer("weight", tensor_weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.weight is not None else self.scalar_weight
        if isinstance(weight, torch.Tensor) and isinstance(logits, torch.Tensor):
            weight = weight.to(device=logits.device, dtype=logits.dtype)
        return soft_dice_loss(logits, target, activation=self.activation, include_background=self.include_background,
                              smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr, batch=self.batch,
                              reduction=self.reduction, weight=weight)


class DiceCELoss(nn.Module):
    """``lambda_dice * DiceLoss + lambda_ce * cross-entropy``, the usual segmentation loss (nnU-Net, MONAI).

    Dice optimizes overlap directly and copes with class imbalance; cross-entropy gives smooth per-voxel gradients
    early in training. ``activation="softmax"``: multi-class cross-entropy (``label_smoothing`` allowed);
    ``"sigmoid"``: binary cross-entropy per channel, the target read as the Dice part reads it (one channel: the
    foreground mask; several: a label map one-hot encoded, or a float multi-label target). ``weight`` (one value per
    channel) scales both terms per class, as MONAI's; the Dice arguments are ``DiceLoss``'s. Returns the mean.
    """

    def __init__(self, *, activation: str = "softmax", include_background: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch: bool = False, weight: Sequence[float] | torch.Tensor | None = None,
                 label_smoothing: float = 0.0, lambda_dice: float = 1.0, lambda_ce: float = 1.0):
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"DiceCELoss: activation must be 'softmax' or 'sigmoid' (the cross-entropy needs "
                             f"logits), got {activation!r}")
        if not (float(lambda_dice) >= 0 and float(lambda_ce) >= 0) or lambda_dice + lambda_ce == 0:
            raise ValueError(f"DiceCELoss: lambda_dice and lambda_ce must be >= 0 and not both 0, got "
                             f"{lambda_dice} and {lambda_ce}")
        if label_smoothing and activation == "sigmoid":
            raise ValueError("DiceCELoss: label_smoothing applies to the softmax cross-entropy only")
        self.activation, self.lambda_dice, self.lambda_ce = activation, float(lambda_dice), float(lambda_ce)
        self.dice = DiceLoss(activation=activation, include_background=include_background, smooth_nr=smooth_nr,
                             smooth_dr=smooth_dr, batch=batch, weight=weight)
        self.ce = CrossEntropyLoss(weight, label_smoothing=label_smoothing) if activation == "softmax" else None
        self.register_buffer("bce_weight", _class_weight("DiceCELoss", weight) if activation == "sigmoid" else None,
                             persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = self.dice(logits, target)  # checks logits and target first
        ce = self.ce(logits, target) if self.ce is not None else self._bce(logits, target)
        return self.lambda_dice * dice + self.lambda_ce * ce

    def _bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        name = "DiceCELoss"
        if not target.is_floating_point():
            if logits.shape[1] == 1:  # the integer target is the foreground mask
                mask = target if target.dim() == logits.dim() else target.unsqueeze(1)
                if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 1):
                    bad = int(mask.min()) if int(mask.min()) < 0 else int(mask.max())
                    raise ValueError(f"{name}: one-channel sigmoid logits need a 0/1 mask target, got label {bad}")
                target = mask
            else:
                labels = label_target(name, logits, target)
                target = F.one_hot(labels, logits.shape[1]).movedim(-1, 1)  # (N, C, *spatial)
        t = dense_target(name, logits, target.to(logits.dtype))
        weight = _weight_for(name, self.bce_weight, logits)
        if weight is not None:
            weight = weight.reshape((1, -1) + (1,) * (logits.dim() - 2))  # (1, C, 1, ...) per channel
        return F.binary_cross_entropy_with_logits(logits, t, weight=weight)


# ---------------------------------------------------------------------------------------------------- registry

LOSSES: dict[str, type[nn.Module]] = {"ce": CrossEntropyLoss, "dice": DiceLoss, "dice_ce": DiceCELoss,
                                      "focal": FocalLoss}


def list_losses() -> list[str]:
    """The names ``create_loss`` (and the CLI's ``--loss``) accept."""
    return sorted(LOSSES)


def create_loss(name: str, **kwargs) -> nn.Module:
    """A loss by name ("ce", "dice", "dice_ce", "focal") with its keyword arguments.

    An unknown name raises ``ValueError`` with the close matches; an unknown argument raises ``TypeError`` with
    the accepted ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in LOSSES:
        close = difflib.get_close_matches(key, list(LOSSES), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint} (known: {', '.join(list_losses())})")
    cls = LOSSES[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"{key} ({cls.__name__}) got unexpected argument(s) {unknown}; accepted: {accepted}")
    return cls(**kwargs)
