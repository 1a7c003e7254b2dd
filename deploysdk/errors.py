"""Typed errors of the deployment half. Each message names what came and what was expected."""
from __future__ import annotations

__all__ = ["DeploySDKError", "InputError", "ModelLoadError", "BackendUnavailableError", "EngineMismatchError",
           "ExportError", "ParityError"]


class DeploySDKError(Exception):
    """Base class of every error raised by deploysdk."""


class InputError(DeploySDKError, ValueError):
    """A feed does not match the model's inputs (name, dtype, rank, dims)."""


class ModelLoadError(DeploySDKError):
    """A model or engine file is missing, truncated or corrupt."""


class BackendUnavailableError(DeploySDKError):
    """An inference backend or execution provider that was asked for by name cannot be loaded here."""


class EngineMismatchError(DeploySDKError):
    """An engine was built for another TensorRT version or GPU."""


class ExportError(DeploySDKError):
    """Export to ONNX failed or produced a file that does not pass verification."""


class ParityError(ExportError):
    """Outputs of two backends differ beyond tolerance."""
