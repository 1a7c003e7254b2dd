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


# --- medical image input (deploysdk.io) ---
__all__ += ["UnreadableFileError", "SeriesError", "MissingDependencyError"]


class UnreadableFileError(InputError):
    """One image file cannot be read; ``path`` and ``reason`` say which and why (the message names both)."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), str(reason)
        super().__init__(f"cannot read {self.path}: {self.reason}")

    def __reduce__(self):  # picklable with its two arguments (DataLoader workers send errors between processes)
        return type(self), (self.path, self.reason)


class SeriesError(InputError):
    """A DICOM series (or folder) holds no usable volume; ``problems`` lists every file with its reason."""

    def __init__(self, message: str, problems=()):
        self.problems = [(str(p), str(r)) for p, r in problems]
        lines = [message] + [f"  {p}: {r}" for p, r in self.problems]
        super().__init__("\n".join(lines))
        self.message = message

    def __reduce__(self):
        return type(self), (self.message, self.problems)


class MissingDependencyError(DeploySDKError, ImportError):
    """An optional reader (pydicom, nibabel, Pillow, scipy) is not installed; the message names the pip package."""
