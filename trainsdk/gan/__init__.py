"""Generative adversarial networks: losses, a resumable two-player trainer, evaluation and latent-space tools.

- losses: ``minimax_d_loss``, ``minimax_g_loss`` (the lecture's saturating form), ``nonsaturating_g_loss``,
  ``auxiliary_class_loss`` (AC-GAN), ``wgan_critic_loss``/``wgan_generator_loss``, ``gradient_penalty``
  (WGAN-GP), ``gradient_difference_loss`` (Nie et al.), ``PerceptualLoss`` (features of a frozen zoo model)
- training: ``GANConfig``, ``GANTrainer``, ``train_gan`` (minimax | nonsaturating | wgan_gp | acgan | paired)
- evaluation: ``FeatureExtractor``, ``frechet_distance`` (with the SDK's own extractor), ``diversity_score``
  (flags mode collapse)
- utilities: ``save_image_grid``, ``interpolate_latents`` (linear, spherical), ``latent_arithmetic``

The models (DCGAN, AC-GAN, context-aware, WGAN CT generator and critic) are in the zoo: ``trainsdk.models.gans``.
"""
from .config import ADVERSARIAL_LOSSES, STEPS, GANConfig
from .evaluation import DiversityReport, FeatureExtractor, diversity_score, frechet_distance, \
    frechet_distance_from_stats, gaussian_stats
from .images import image_grid, save_image_grid
from .latent import interpolate_latents, latent_arithmetic
from .losses import auxiliary_class_loss, gradient_difference_loss, gradient_penalty, minimax_d_loss, \
    minimax_g_loss, nonsaturating_g_loss, wgan_critic_loss, wgan_generator_loss
from .perceptual import PerceptualLoss
from .steps import latent_codes
from .trainer import GAN_STATE_FORMAT, GANTrainer, NonFiniteGANLossError, load_gan_state, train_gan

__all__ = ["minimax_d_loss", "minimax_g_loss", "nonsaturating_g_loss", "auxiliary_class_loss", "wgan_critic_loss",
           "wgan_generator_loss", "gradient_penalty", "gradient_difference_loss", "PerceptualLoss", "GANConfig",
           "STEPS", "ADVERSARIAL_LOSSES", "GANTrainer", "train_gan", "load_gan_state", "NonFiniteGANLossError",
           "GAN_STATE_FORMAT", "FeatureExtractor", "frechet_distance", "frechet_distance_from_stats",
           "gaussian_stats", "DiversityReport", "diversity_score", "image_grid", "save_image_grid",
           "interpolate_latents", "latent_arithmetic", "latent_codes"]

# Image-to-image quality (PSNR/SSIM/MAE, high-frequency energy) for the recipes in ``trainsdk.gan.recipes``
# (appended: issue 8, second half)
from .quality import HF_METHODS, high_frequency_energy, high_frequency_ratio, image_quality  # noqa: E402

__all__ += ["high_frequency_energy", "high_frequency_ratio", "image_quality", "HF_METHODS"]
