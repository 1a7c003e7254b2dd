import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from trainsdk.training import TrainerConfig
from trainsdk.training.recipes.anomaly import (AnomalyExperiment, anomaly_auroc, anomaly_maps, healthy_threshold,
                                               image_scores, pseudo_labels, reconstruction_step,
                                               train_healthy_autoencoder)


class Scale(nn.Module):
    """x -> a * x: a = 1 reconstructs perfectly, a = 0 returns nothing (residual = |x|)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, x):
        return self.a * x


def _images(n=3, size=10):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))


def test_anomaly_maps_shape_and_residual():
    x = _images()
    assert anomaly_maps(Scale(1.0), x, smooth_sigma=0).shape == (3, 10, 10)
    assert np.abs(anomaly_maps(Scale(1.0), x, smooth_sigma=0)).max() == 0.0
    np.testing.assert_allclose(anomaly_maps(Scale(0.0), x, smooth_sigma=0), x[:, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(anomaly_maps(Scale(0.5), x, smooth_sigma=1.5),
                               ndimage.gaussian_filter(0.5 * x[:, 0].numpy().astype(np.float64), (0, 1.5, 1.5),
                                                       mode="nearest"), rtol=1e-5, atol=1e-7)


def test_anomaly_maps_mask_and_errors():
    x = _images()
    mask = np.zeros((3, 10, 10), bool)
    mask[:, 2:5, 2:5] = True
    maps = anomaly_maps(Scale(0.0), x, smooth_sigma=0, mask=mask)
    assert (maps[~mask] == 0).all() and (maps[mask] > 0).all()
    with pytest.raises(ValueError, match="mask must be"):
        anomaly_maps(Scale(0.0), x, mask=mask[:, :5])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        anomaly_maps(Scale(0.0), x[:, 0])


def test_image_scores_mean_of_top_k():
    maps = np.zeros((2, 4, 4))
    maps[0, 0, :3] = [5.0, 3.0, 1.0]
    maps[1, 3, 3] = 8.0
    np.testing.assert_allclose(image_scores(maps, 2), [4.0, 4.0])
    np.testing.assert_allclose(image_scores(maps, 3), [3.0, 8.0 / 3])
    np.testing.assert_allclose(image_scores(maps, 0.125), [4.0, 4.0])  # 12.5% of 16 pixels = 2
    with pytest.raises(ValueError, match="top_k"):
        image_scores(maps, 17)
    with pytest.raises(TypeError, match="top_k"):
        image_scores(maps, "2")


def test_anomaly_auroc_on_a_constructed_case():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 8, 8), bool)
    masks[:3, 2:4, 2:4] = True  # images 0-2 have a 2x2 lesion
    maps = rng.uniform(0, 1, (6, 8, 8))
    maps[masks] += 0.5  # lesion pixels tend to score higher, with overlap
    scores = image_scores(maps, 4)
    flags = masks.any(axis=(1, 2))
    result = anomaly_auroc(maps, scores, flags, masks)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(flags, scores))
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert 0.5 < result["pixel_auroc"] < 1.0
    perfect = anomaly_auroc(masks.astype(float), masks.sum((1, 2)).astype(float), flags, masks)
    assert perfect == {"image_auroc": 1.0, "pixel_auroc": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        anomaly_auroc(maps[:, :4], scores, flags, masks)


def test_healthy_threshold_is_a_percentile_within_the_mask():
    maps = np.arange(100, dtype=float).reshape(1, 10, 10)
    assert healthy_threshold(maps, 50) == pytest.approx(49.5)
    mask = maps < 10
    assert healthy_threshold(maps, 90, mask=mask) == pytest.approx(np.percentile(np.arange(10), 90))
    with pytest.raises(ValueError, match="percentile"):
        healthy_threshold(maps, 100)


def test_pseudo_labels_threshold_and_drop_small_components():
    maps = np.zeros((1, 8, 8))
    maps[0, 1:4, 1:4] = 2.0  # a 9-pixel blob
    maps[0, 6, 6] = 3.0  # one stray pixel
    maps[0, 0, 7] = 1.0  # at the threshold: not above it
    labels = pseudo_labels(maps, 1.0)
    assert labels.dtype == bool and labels.sum() == 10
    cleaned = pseudo_labels(maps, 1.0, min_size=2)
    assert cleaned.sum() == 9 and not cleaned[0, 6, 6] and cleaned[0, 2, 2]
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        pseudo_labels(maps[0], 1.0)


def test_reconstruction_step_adds_noise_only_in_training():
    model = Scale(1.0)
    x = _images(2, 6)
    step = reconstruction_step(noise_std=0.5)
    model.eval()
    assert float(step(model, (x,)).detach()) == 0.0
    model.train()
    assert float(step(model, (x,)).detach()) > 0.05
    with pytest.raises(ValueError, match="noise_std"):
        reconstruction_step(-1.0)


def test_autoencoder_on_healthy_images_learns_to_reconstruct_them():
    from trainsdk.data import make_healthy
    from trainsdk.models import create_model

    healthy = make_healthy(16, 32, seed=0)
    torch.manual_seed(0)
    ae = create_model("conv_dae", in_channels=1, widths=(8, 8))
    cfg = TrainerConfig(max_epochs=8, batch_size=4, lr=1e-2, device="cpu", progress=False, log_every=0)
    trainer = train_healthy_autoencoder(ae, healthy.images, trainer_config=cfg, val_images=healthy.images[:4])
    losses = [r["train_loss"] for r in trainer.history]
    assert losses[-1] < 0.3 * losses[0]
    assert "val_loss" in trainer.history[-1]


def test_experiment_config_is_checked():
    with pytest.raises(ValueError, match="n_masks"):
        AnomalyExperiment(n_masks=90, n_pool_per_class=30)
    with pytest.raises(ValueError, match="ae_epochs"):
        AnomalyExperiment(ae_epochs=0)
