"""MetricTracker / compute_metrics: batch accumulation equals the metric functions on the whole set."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from trainsdk.metrics import (MetricConfig, MetricTracker, accuracy, compute_metrics, dice_score,
                              hausdorff_distance_95, list_metrics, psnr, ssim)


def test_classification_accumulates_over_batches():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(60, 3, generator=gen)
    labels = torch.randint(0, 3, (60,), generator=gen)
    tracker = MetricTracker(["accuracy", "auroc", "sensitivity", "specificity"])
    for i in range(0, 60, 16):
        tracker.update(logits[i:i + 16], labels[i:i + 16])
    got = tracker.compute()
    prob = torch.softmax(logits.double(), 1).numpy()
    assert got["accuracy"] == pytest.approx(accuracy(labels, logits.argmax(1)))
    assert got["auroc"] == pytest.approx(roc_auc_score(labels.numpy(), prob, multi_class="ovr"))
    assert set(got) == {"accuracy", "auroc", "sensitivity", "specificity"}
    tracker.reset()
    assert np.isnan(tracker.compute()["accuracy"])


def test_binary_logit_column():
    logits = torch.tensor([[-2.0], [0.5], [1.0], [-0.3]])
    labels = torch.tensor([0, 1, 0, 0])
    got = compute_metrics(["accuracy", "auroc", "sensitivity", "specificity"], logits, labels)
    assert got == pytest.approx({"accuracy": 0.75, "auroc": 2 / 3, "sensitivity": 1.0, "specificity": 2 / 3})


def test_segmentation_mean_over_cases_and_foreground_classes():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 12, 12), generator=gen)
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    logits[0, :, :4] = torch.randn(3, 4, 12, generator=gen)  # corrupt part of the first case
    got = compute_metrics(["dice", "hd95"], logits, target.unsqueeze(1), spacing=(1.0, 2.0))
    pred = logits.argmax(1)
    per_case = [dice_score(pred[i], target[i], num_classes=3) for i in range(2)]
    assert got["dice"] == pytest.approx(np.mean([d[1:].mean() for d in per_case]))
    assert got["dice/2"] == pytest.approx(np.mean([d[2] for d in per_case]))
    hd = [hausdorff_distance_95(pred[0] == c, target[0] == c, spacing=(1.0, 2.0)) for c in (1, 2)]
    assert got["hd95/1"] == pytest.approx((hd[0] + 0.0) / 2)  # the second case is perfect: 0
    assert got["hd95"] == pytest.approx((np.mean(hd) + 0.0) / 2)
    with_bg = compute_metrics(["dice"], logits, target, include_background=True)
    assert with_bg["dice/0"] == pytest.approx(np.mean([d[0] for d in per_case]))


def test_segmentation_missed_class_keeps_inf_hd95():
    target = np.zeros((1, 8, 8), np.int64)
    target[0, 2:5, 2:5] = 1
    got = compute_metrics(["hd95", "dice"], np.zeros_like(target), target)
    assert got["hd95"] == np.inf and got["dice"] == 0.0


def test_image_metrics_per_case_mean():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(3, 1, 16, 16, generator=gen)
    output = target + 0.05 * torch.randn(3, 1, 16, 16, generator=gen)
    got = compute_metrics(["psnr", "ssim"], output, target, data_range=1.0)
    assert got["psnr"] == pytest.approx(np.mean([psnr(o, t, data_range=1.0) for o, t in zip(output, target)]))
    assert got["ssim"] == pytest.approx(np.mean([ssim(o[0], t[0], data_range=1.0) for o, t in zip(output, target)]))


def test_config_and_errors():
    assert list_metrics("image") == ["psnr", "ssim"]
    assert MetricTracker("dice", MetricConfig(num_classes=4)).config.num_classes == 4
    with pytest.raises(ValueError, match="unknown metric"):
        MetricTracker(["dice", "hd99"])
    with pytest.raises(ValueError, match="mix kinds"):
        MetricTracker(["dice", "accuracy"])
    with pytest.raises(TypeError, match="MetricConfig fields"):
        MetricTracker(["dice"], spacings=1.0)
    with pytest.raises(ValueError, match="batch size"):
        compute_metrics(["accuracy"], torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels \(N,\), got shape \(3, 2\)"):
        compute_metrics(["accuracy"], torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match target"):
        compute_metrics(["dice"], torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, 5, dtype=torch.long))
