"""deploysdk: run trained networks fast and exactly as trained. ``import deploysdk`` does not import torch."""
from .errors import (BackendUnavailableError, DeploySDKError, EngineMismatchError, ExportError, InputError,
                     ModelLoadError, ParityError)
from .runtime import Runtime, TensorSpec


def export_onnx(*args, **kwargs):
    """See ``deploysdk.export.export_onnx`` (imported on first use: it needs torch)."""
    from .export import export_onnx as _export

    return _export(*args, **kwargs)


__all__ = ["Runtime", "TensorSpec", "export_onnx", "DeploySDKError", "InputError", "ModelLoadError",
           "BackendUnavailableError", "EngineMismatchError", "ExportError", "ParityError"]
