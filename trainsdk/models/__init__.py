"""The model zoo. ``create_model(name, num_classes=..., in_channels=...)``; ``list_models()`` names them all."""
from ._base import InputShapeError, ModelBase, ModelConfig
from ._registry import UnknownModelError, create_model, list_models, model_entry, register_model

# Importing the families registers their builders.
from . import lenet, alexnet, vgg, resnet, googlenet, fcn, unet  # noqa: E402,F401
from . import gans  # noqa: E402,F401  (GAN generators, discriminators, critic)
from . import autoencoders, rednet  # noqa: E402,F401  (autoencoders, RED-Net, cross-modality)
from .weights import LoadReport, adapt_input_channels, load_weights  # noqa: E402

__all__ = ["create_model", "list_models", "register_model", "model_entry", "ModelBase", "ModelConfig",
           "InputShapeError", "UnknownModelError", "load_weights", "LoadReport", "adapt_input_channels"]
