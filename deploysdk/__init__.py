"""deploysdk: run trained networks fast and exactly as trained. ``import deploysdk`` does not import torch.

``compare`` is the module ``deploysdk.compare`` made callable: ``deploysdk.compare(runtimes, feeds)`` and
``deploysdk.compare.compare(runtimes, feeds)`` are the same call (a plain re-export of the function would hide the
module behind it).
"""
from . import compare
from .compare import CompareReport
from .errors import (BackendUnavailableError, DeploySDKError, EngineMismatchError, ExportError, InputError,
                     ModelLoadError, ParityError)
from .runtime import LatencyStats, Runtime, TensorSpec
from .runtime.torch import TorchRunner  # torch itself is imported only when a TorchRunner is built


def export_onnx(*args, **kwargs):
    """See ``deploysdk.export.export_onnx`` (imported on first use: it needs torch)."""
    from .export import export_onnx as _export

    return _export(*args, **kwargs)


def __getattr__(name: str):
    """``deploysdk.Pipeline`` (and ``PostprocessConfig``, ``TileConfig``) load the pipeline on first use: it pulls
    in scipy, which ``import deploysdk`` alone does not need."""
    if name in ("Pipeline", "PostprocessConfig", "TileConfig"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'deploysdk' has no attribute {name!r}")


__all__ = ["Pipeline", "PostprocessConfig", "TileConfig", "Runtime", "TensorSpec", "LatencyStats", "compare", "CompareReport", "export_onnx", "TorchRunner",
           "DeploySDKError", "InputError", "ModelLoadError", "BackendUnavailableError", "EngineMismatchError",
           "ExportError", "ParityError"]
