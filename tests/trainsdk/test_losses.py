"""Losses against hand-computed values and PyTorch's functional forms; gradients; error messages."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainsdk.losses import CrossEntropyLoss, DiceCELoss, DiceLoss, FocalLoss, create_loss, list_losses


def _seg_batch(spatial, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, *spatial, generator=gen, dtype=torch.float64)
    target = torch.randint(0, c, (2, *spatial), generator=gen)
    return logits.requires_grad_(), target


def _manual_ce(logits, target, weight=None):
    """Per-element -w[y] log softmax(logits)[y], the definition."""
    logp = logits.log_softmax(1).movedim(1, -1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    w = torch.as_tensor([1.0] * logits.shape[1] if weight is None else weight, dtype=logits.dtype)
    return -(w[t] * logp[torch.arange(len(t)), t]), w[t]


# ------------------------------------------------------------------------------------------ cross-entropy


@pytest.mark.parametrize("spatial", [(), (5, 6), (3, 4, 5)])
def test_cross_entropy_matches_definition(spatial):
    logits, target = _seg_batch(spatial)
    per, _ = _manual_ce(logits, target)
    loss = CrossEntropyLoss()(logits, target)
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-12)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_cross_entropy_weight_ignore_index_and_channel_target():
    logits, target = _seg_batch((4, 4))
    target = target.clone()
    target[0, 0] = 255
    weight = [0.2, 1.0, 3.0]
    keep = target != 255
    per, w = _manual_ce(logits, torch.where(keep, target, 0), weight)
    expected = (per * keep.reshape(-1)).sum() / (w * keep.reshape(-1)).sum()  # weighted mean over kept voxels
    loss = CrossEntropyLoss(weight, ignore_index=255)(logits, target.unsqueeze(1))  # (N, 1, H, W) accepted
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_cross_entropy_label_smoothing_and_soft_targets():
    logits, target = _seg_batch((), c=4)
    eps = 0.1
    soft = F.one_hot(target, 4).double() * (1 - eps) + eps / 4  # the smoothed target distribution
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert CrossEntropyLoss(label_smoothing=eps)(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)
    assert CrossEntropyLoss()(logits, soft).item() == pytest.approx(expected.item(), rel=1e-12)


def test_cross_entropy_weight_moves_with_module():
    loss = CrossEntropyLoss([1.0, 2.0]).to(torch.float64)
    logits = torch.zeros(3, 2, dtype=torch.float64)
    assert loss(logits, torch.tensor([0, 1, 1])).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("logits, target, exc, match", [
    (torch.randn(2, 3, 4, 4), torch.tensor([[[0, 1, 2, 3]] * 4] * 2), ValueError, r"label 3 but logits have 3 classes"),
    (torch.randn(2, 3, 4, 4), -torch.ones(2, 4, 4, dtype=torch.long), ValueError, r"label -1 .* ignore_index=-100"),
    (torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), ValueError, r"target shape \(2, 4, 5\)"),
    (torch.randn(2, 3, 4, 4), torch.zeros(2, 2, 4, 4), ValueError, "float target shape"),
    (torch.randn(2, 3), torch.full((2, 3), 2.0), ValueError, r"\[0, 1\]"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long), TypeError, "floating-point"),
    (torch.randn(3), torch.zeros(3, dtype=torch.long), ValueError, r"\(N, C\)"),
    (torch.randn(2, 3), [0, 1], TypeError, "torch.Tensor"),
])
def test_cross_entropy_errors(logits, target, exc, match):
    with pytest.raises(exc, match=match):
        CrossEntropyLoss()(logits, target)


def test_cross_entropy_bad_settings():
    with pytest.raises(ValueError, match="2 class weights given but logits have 3"):
        CrossEntropyLoss([1.0, 2.0])(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match=">= 0"):
        CrossEntropyLoss([1.0, -1.0])


# ------------------------------------------------------------------------------------------ focal


@pytest.mark.parametrize("spatial", [(), (4, 5), (3, 3, 4)])
def test_focal_gamma_zero_is_cross_entropy(spatial):
    logits, target = _seg_batch(spatial)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-12)
    x = logits.detach()[:, :1]
    t = (target[:, None] > 0).double()
    assert FocalLoss("binary", gamma=0.0)(x, t).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(x, t).item(), rel=1e-12)


def test_focal_multiclass_hand_computed():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64,
                          requires_grad=True)
    target = torch.tensor([0, 2, -100])
    alpha = [0.5, 1.0, 2.0]
    p = torch.softmax(logits.detach(), 1)
    p0, p1 = p[0, 0].item(), p[1, 2].item()
    expected = (-alpha[0] * (1 - p0) ** 2 * math.log(p0) - alpha[2] * (1 - p1) ** 2 * math.log(p1)) / 2  # 2 kept
    loss = FocalLoss(gamma=2.0, alpha=alpha)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0  # ignored row gets no gradient
    per = FocalLoss(gamma=2.0, alpha=alpha, reduction="none")(logits, target)
    assert per.shape == (3,) and per[2] == 0


def test_focal_binary_hand_computed_and_label_map_target():
    x = torch.tensor([[[1.5, -0.5], [0.0, -3.0]]], dtype=torch.float64)  # (N=1, H=2, W=2) logits
    t = torch.tensor([[[1, 0], [1, 1]]])
    expected = []
    for xi, ti in zip(x.flatten().tolist(), t.flatten().tolist()):
        p = 1 / (1 + math.exp(-xi))
        pt = p if ti else 1 - p
        expected.append(-(0.25 if ti else 0.75) * (1 - pt) ** 2 * math.log(pt))
    loss = FocalLoss("binary", gamma=2.0, alpha=0.25)(x.unsqueeze(1), t)  # logits (N, 1, H, W), labels (N, H, W)
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-12)


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    fl = FocalLoss(gamma=2.0, reduction="none")(logits, target)
    assert (fl < ce).all() and (fl[0] / ce[0]) < (fl[1] / ce[1])  # the confident one is scaled down more


def test_focal_errors():
    with pytest.raises(ValueError, match="mode"):
        FocalLoss("softmax")
    with pytest.raises(ValueError, match="one number in"):
        FocalLoss("binary", alpha=[0.2, 0.8])
    with pytest.raises(ValueError, match="one weight per class"):
        FocalLoss(alpha=0.25)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="label 5 but logits have 2"):
        FocalLoss()(torch.randn(2, 2), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FocalLoss("binary")(torch.randn(2, 1), torch.tensor([[0.0], [2.0]]))


# ------------------------------------------------------------------------------------------ Dice


def _manual_dice(logits, target, activation="softmax", include_background=True, batch=False, smooth=1e-5):
    """The definition, materialized: per (n, c) 1 - (2 sum p g + s) / (sum p + sum g + s)."""
    p = logits.softmax(1) if activation == "softmax" else logits.sigmoid()
    g = target if target.is_floating_point() else F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = tuple(range(2, logits.dim()))
    inter, psum, gsum = (p * g).sum(dims), p.sum(dims), g.sum(dims)
    if not include_background:
        inter, psum, gsum = inter[:, 1:], psum[:, 1:], gsum[:, 1:]
    if batch:
        inter, psum, gsum = inter.sum(0), psum.sum(0), gsum.sum(0)
    return 1 - (2 * inter + smooth) / (psum + gsum + smooth)


@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
def test_dice_matches_definition_and_gradient(spatial):
    logits, target = _seg_batch(spatial, c=3)
    loss = DiceLoss()(logits, target)
    expected = _manual_dice(logits, target).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    (grad,) = torch.autograd.grad(loss, logits)
    (ref,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, ref, rtol=1e-8, atol=1e-12)
    onehot = F.one_hot(target, 3).movedim(-1, 1).double()
    assert DiceLoss()(logits, onehot).item() == pytest.approx(loss.item(), rel=1e-10)
    assert DiceLoss()(logits, target.unsqueeze(1)).item() == pytest.approx(loss.item(), rel=1e-10)


def test_dice_options():
    logits, target = _seg_batch((5, 5), c=4)
    got = DiceLoss(include_background=False, batch=True, reduction="none")(logits, target)
    torch.testing.assert_close(got, _manual_dice(logits, target, include_background=False, batch=True))
    weight = [0.0, 1.0, 2.0, 0.5]
    expected = (_manual_dice(logits, target) * torch.tensor(weight, dtype=torch.float64)).mean()
    assert DiceLoss(weight=weight)(logits, target).item() == pytest.approx(expected.item(), rel=1e-10)
    assert DiceLoss(reduction="sum")(logits, target).item() == pytest.approx(
        _manual_dice(logits, target).sum().item(), rel=1e-10)


def test_dice_sigmoid_binary_and_perfect_prediction():
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 8, 8, generator=gen) > 0.5
    logits = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    expected = _manual_dice(logits, mask.unsqueeze(1).double(), activation="sigmoid").mean()
    assert DiceLoss(activation="sigmoid")(logits, mask.long()).item() == pytest.approx(expected.item(), rel=1e-10)
    confident = (mask.unsqueeze(1).double() * 2 - 1) * 30.0
    assert DiceLoss(activation="sigmoid")(confident, mask.long()).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_errors_are_the_ops():
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"target label 3 .* outside \[0, 3\)"):
        DiceLoss()(logits, torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match="label-map target must have shape"):
        DiceLoss()(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="sigmoid"):
        DiceLoss()(torch.randn(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        DiceLoss(reduction="avg")


# ------------------------------------------------------------------------------------------ Dice + CE


def test_dice_ce_is_weighted_sum():
    logits, target = _seg_batch((5, 6), c=3)
    weight = [0.5, 1.0, 2.0]
    combo = DiceCELoss(weight=weight, lambda_dice=0.7, lambda_ce=0.3, label_smoothing=0.05)(logits, target)
    dice = DiceLoss(weight=weight)(logits, target)
    ce = F.cross_entropy(logits, target, weight=torch.tensor(weight, dtype=torch.float64), label_smoothing=0.05)
    assert combo.item() == pytest.approx(0.7 * dice.item() + 0.3 * ce.item(), rel=1e-10)
    combo.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_dice_ce_sigmoid_targets():
    logits, target = _seg_batch((4, 4), c=3)
    onehot = F.one_hot(target, 3).movedim(-1, 1).double()
    expected = DiceLoss(activation="sigmoid")(logits, target) + F.binary_cross_entropy_with_logits(logits, onehot)
    assert DiceCELoss(activation="sigmoid")(logits, target).item() == pytest.approx(expected.item(), rel=1e-10)
    x, mask = logits.detach()[:, :1], (target > 0).long()
    expected = DiceLoss(activation="sigmoid")(x, mask) + F.binary_cross_entropy_with_logits(
        x, mask.unsqueeze(1).double())
    assert DiceCELoss(activation="sigmoid")(x, mask).item() == pytest.approx(expected.item(), rel=1e-10)
    with pytest.raises(ValueError, match="0/1 mask target, got label 2"):
        DiceCELoss(activation="sigmoid")(x, target)
    with pytest.raises(ValueError, match="activation"):
        DiceCELoss(activation="none")


# ------------------------------------------------------------------------------------------ registry


def test_create_loss_by_name():
    assert list_losses() == ["ce", "dice", "dice_ce", "focal"]
    assert isinstance(create_loss("dice-ce", lambda_ce=0.5), DiceCELoss)
    focal = create_loss("focal", mode="binary", gamma=1.0)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.0
    with pytest.raises(ValueError, match="did you mean 'focal'"):
        create_loss("focla")
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['gama'\]; accepted: .*'gamma'"):
        create_loss("focal", gama=2.0)


@pytest.mark.parametrize("name, kw", [("ce", {}), ("dice", {}), ("dice_ce", {}), ("focal", {}),
                                      ("focal", {"mode": "binary"})])
@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_every_loss_gives_finite_gradients_2d_3d(name, kw, spatial):
    logits, target = _seg_batch(spatial, c=3)
    if kw.get("mode") == "binary":
        target = F.one_hot(target, 3).movedim(-1, 1).float()
    loss = create_loss(name, **kw)(logits.float(), target)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
