"""Frechet distance against the closed form for Gaussians, the SDK feature extractor, and the diversity score."""
import numpy as np
import pytest
import torch

from trainsdk.gan import FeatureExtractor, diversity_score, frechet_distance, frechet_distance_from_stats, \
    gaussian_stats
from trainsdk.models import create_model


def _with_moments(n, mu, cov, seed):
    """n samples whose sample mean and (unbiased) covariance are exactly mu and cov."""
    x = np.random.default_rng(seed).standard_normal((n, len(mu)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whitened: sample cov = I
    return x @ np.linalg.cholesky(cov).T + mu


def test_closed_form_for_diagonal_gaussians():
    """Commuting covariances: FD = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1 + 0 + 4 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_closed_form_in_one_dimension_and_general_covariances():
    assert frechet_distance_from_stats([2.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(4 + (2 - 1) ** 2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4))
    s1 = a @ a.T + np.eye(4)
    # same covariance, shifted mean: only the mean term remains, Tr(S + S - 2 S) = 0
    assert frechet_distance_from_stats(np.zeros(4), s1, np.ones(4), s1) == pytest.approx(4.0, rel=1e-6)
    # a scaled covariance commutes with the original: Tr(S + k^2 S - 2 k S) = (1 - k)^2 Tr(S)
    assert frechet_distance_from_stats(np.zeros(4), s1, np.zeros(4), 9 * s1) == pytest.approx(4 * np.trace(s1),
                                                                                                 rel=1e-6)


def test_frechet_distance_from_samples_uses_their_moments():
    mu1, mu2 = np.array([0.0, 0.0]), np.array([3.0, -1.0])
    c1, c2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    a, b = _with_moments(200, mu1, c1, 1), _with_moments(300, mu2, c2, 2)
    m, c = gaussian_stats(a)
    np.testing.assert_allclose(m, mu1, atol=1e-12)
    np.testing.assert_allclose(c, c1, atol=1e-12)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance_from_stats(mu1, c1, mu2, c2), rel=1e-9)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(a, b[:, :1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(a[:1], b)


def test_feature_extractor_pools_zoo_features_and_adapts_grey_images(tmp_path):
    net = create_model("resnet18", in_channels=3, num_classes=2, layers=(1, 1, 1, 1), base_width=8)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    fx = FeatureExtractor("resnet18", weights=tmp_path / "w.pt",
                          model_kwargs=dict(in_channels=3, num_classes=2, layers=(1, 1, 1, 1), base_width=8))
    assert fx.load_report.ok and not any(p.requires_grad for p in fx.parameters())
    grey = torch.rand(5, 1, 32, 32)
    feats = fx.embed(grey, batch_size=2)
    assert feats.shape == (5, 64) and feats.dtype == np.float64
    with torch.no_grad():
        ref = net.eval().forward_features(grey.repeat(1, 3, 1, 1)).mean((2, 3))
    np.testing.assert_allclose(feats, ref.double().numpy(), rtol=1e-5, atol=1e-6)
    fx.train()
    assert not fx.net.training  # frozen: batch-norm statistics never move
    with pytest.raises(ValueError, match="takes 3 channels, got 2"):
        fx(torch.rand(1, 2, 32, 32))


def test_diversity_flags_a_collapsed_generator():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 1, 8, 8))
    healthy = diversity_score(rng.standard_normal((40, 1, 8, 8)), real)
    assert healthy.score == pytest.approx(1.0, abs=0.1) and not healthy.mode_collapse
    collapsed = diversity_score(np.repeat(real[:1], 40, axis=0), real)  # every sample the same image
    assert collapsed.score == 0.0 and collapsed.mode_collapse
    # two modes out of forty distinct images: samples closer together than the data
    two = diversity_score(np.concatenate([np.repeat(real[:1], 20, 0), np.repeat(real[1:2], 20, 0)]) * 0.3, real)
    assert two.mode_collapse and two.sample_distance < two.reference_distance
    with pytest.raises(ValueError, match="reference samples are all identical"):
        diversity_score(real, np.zeros((5, 1, 8, 8)))
