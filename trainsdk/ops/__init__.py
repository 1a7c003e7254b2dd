"""Fused CPU/CUDA kernels for the lecture's building blocks, with pure-PyTorch references.

``local_response_norm``, ``batch_norm_act``, ``add_relu`` and ``bias_act`` run the compiled ``medcnn`` extension
(``cpp_ext/``, built just in time on first use and cached under ``build/``) and fall back to
``trainsdk.ops.reference`` when it is disabled (``MEDCNN_NO_EXT=1``), when a device or dtype has no kernel, and
during ONNX export (so exported models hold standard ONNX operators only). Every op is registered with
``torch.library`` (schema, fake kernel, autograd), so ``torch.compile`` and ``torch.export`` trace it.
``extension_status()`` says whether the compiled kernels are in use and, if not, why.
"""
from . import reference
from ._extension import ExtensionBuildError, ExtensionStatus, extension_status, load
from .add_relu import add_relu
from .affine_warp import affine_warp
from .bias_act import bias_act
from .bn_act import batch_norm_act, inplace_abn_bytes_saved
from .dice import soft_dice_loss, soft_dice_stats
from .lrn import local_response_norm
from .memory import saved_tensor_bytes

__all__ = ["local_response_norm", "batch_norm_act", "add_relu", "bias_act", "affine_warp", "soft_dice_loss",
           "soft_dice_stats", "reference",
           "extension_status", "load", "ExtensionStatus", "ExtensionBuildError", "inplace_abn_bytes_saved",
           "saved_tensor_bytes"]
