"""GAN recipes, one module per experiment of the lecture, each comparing the GAN method with its baseline on a
held-out test set and returning a ``GANRecipeResult`` (``.metrics`` per arm, ``.table()`` side by side):

- ``augment``: GAN-based data augmentation (Frid-Adar et al. 2018) with an AC-GAN on synthetic lesions
  (``GANAugmentRecipe`` -> ``train_gan_augmentation``);
- ``context``: context-aware GAN with auto-context cascade for MR -> CT synthesis (Nie et al. 2017)
  (``ContextGANRecipe`` -> ``train_context_gan``);
- ``lowdose``: WGAN-GP + perceptual loss for low-dose CT denoising (Yang et al. 2018) (``WGANCTRecipe`` ->
  ``train_wgan_ct``; ``export_denoiser`` for deployment).

``trainsdk train --task gan-augment|context-gan|wgan-ct`` runs them from the command line (``cli.run_gan_task``).
Every adversarial run goes through ``GANTrainer`` (checkpoints, sample grids, ``resume``), every baseline through
the SDK's ``Trainer``.
"""
from ._common import GANRecipeResult, fit_pixel_baseline, predict, refresh_batch_norm
from .augment import GANAugmentRecipe, sample_acgan, train_gan_augmentation
from .cli import GAN_TASKS, gan_recipe, run_gan_task
from .context import CONTEXT_ARMS, ContextGANRecipe, train_context_gan
from .lowdose import WGANCTRecipe, export_denoiser, make_low_dose_pairs, train_perceptual_extractor, train_wgan_ct

__all__ = ["GANRecipeResult", "GANAugmentRecipe", "train_gan_augmentation", "sample_acgan", "ContextGANRecipe",
           "train_context_gan", "CONTEXT_ARMS", "WGANCTRecipe", "train_wgan_ct", "make_low_dose_pairs",
           "train_perceptual_extractor", "export_denoiser", "fit_pixel_baseline", "predict", "refresh_batch_norm",
           "GAN_TASKS",
           "gan_recipe", "run_gan_task"]
