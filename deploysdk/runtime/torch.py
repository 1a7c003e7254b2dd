"""PyTorch eager backend, for parity checks of an exported model against its source.

    runner = TorchRunner(model)                       # an nn.Module (put in eval mode)
    runner = TorchRunner("runs/demo/lenet5.pt")       # an SDK checkpoint: {"model_name", "config"?, "state_dict"}
    compare([Runtime("lenet5.onnx"), runner], x)      # same feeds, same output names

torch and trainsdk are imported inside the functions: ``import deploysdk.runtime`` must work on a clinical host that
has only numpy and an inference engine.

Checkpoints are read with ``torch.load(weights_only=True)`` (no pickled code runs). A checkpoint should carry
``"config"`` (the ``create_model`` keyword arguments, ``model.config.to_dict()``); without it only ``num_classes`` and
``in_channels`` are inferred from the weights (first conv's input channels, last layer's output rows), which is
enough for a model built with the defaults otherwise, and a strict ``load_state_dict`` says when it is not.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, InputError, ModelLoadError
from .base import Runner, TensorSpec, validate_feed
from .onnxrt import parse_device

__all__ = ["TorchRunner", "load_checkpoint", "infer_config", "CHECKPOINT_SUFFIXES"]

log = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise BackendUnavailableError("the torch backend needs PyTorch ('pip install torch'); a deployment host "
                                      "runs the exported .onnx/.engine file instead") from e
    return torch


def infer_config(state_dict: Mapping[str, Any]) -> dict[str, int]:
    """``num_classes``/``in_channels`` from the weights: the first conv's input channels and the last layer's
    output rows (the head is registered last in every zoo model). Other config fields cannot be recovered."""
    weights = [(k, tuple(v.shape)) for k, v in state_dict.items() if hasattr(v, "shape") and len(v.shape) >= 2]
    convs = [shape for _, shape in weights if len(shape) >= 3]
    if not weights or not convs:
        raise ModelLoadError("cannot infer num_classes/in_channels from a state_dict without conv and linear "
                             "weights; save the checkpoint with a 'config' entry (model.config.to_dict())")
    return {"num_classes": int(weights[-1][1][0]), "in_channels": int(convs[0][1])}


def _read_checkpoint(path: str) -> dict:
    torch = _import_torch()
    if not os.path.isfile(path):
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, or pickled objects that weights_only refuses
        raise ModelLoadError(f"cannot read checkpoint {path} with torch.load(weights_only=True): "
                             f"{str(e).strip().splitlines()[0][:300]}") from e
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "state_dict" not in ckpt:
        got = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ModelLoadError(f"{path} is not an SDK checkpoint: expected a dict with 'model_name', 'state_dict' "
                             f"and optionally 'config', got {got}")
    return ckpt


def load_checkpoint(path: str | os.PathLike):
    """Build the model a checkpoint names (``trainsdk.models.create_model``) and load its weights, strictly.

    The checkpoint's ``export_metadata`` dict (the training recipes write preprocessing and class labels there)
    is kept on the model as ``model.export_metadata`` (empty when absent) for ``export_onnx(metadata=...)``.
    """
    path = os.fspath(path)
    ckpt = _read_checkpoint(path)
    try:
        from trainsdk.models import create_model
    except ImportError as e:
        raise BackendUnavailableError(f"loading {path} needs trainsdk (the training half of the SDK)") from e
    config = ckpt.get("config")
    if config is None:
        config = infer_config(ckpt["state_dict"])
        log.info("%s has no 'config'; inferred %s from its weights", path, config)
    try:
        model = create_model(ckpt["model_name"], **dict(config))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        hint = "" if "config" in ckpt else (" (the checkpoint has no 'config': save it with "
                                            "{'model_name', 'config': model.config.to_dict(), 'state_dict'})")
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        first = " ".join(lines[:2])[:400] if lines else type(e).__name__
        raise ModelLoadError(f"cannot rebuild {ckpt['model_name']!r} from {path} with {dict(config)}: "
                             f"{first}{hint}") from e
    meta = ckpt.get("export_metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ModelLoadError(f"{path}: 'export_metadata' must be a dict of metadata for export (e.g. "
                             f"{{'preprocessing': ..., 'class_labels': ...}}), got {type(meta).__name__}")
    model.export_metadata = dict(meta or {})  # what `deploysdk export` embeds: the recipes record preprocessing
    return model.eval()


def _examples(module, example_input) -> tuple:
    """The example inputs as a tuple of tensors: given, or the model's own ``example_input()``."""
    torch = _import_torch()
    if example_input is None and hasattr(module, "example_input"):
        example_input = module.example_input()
    if example_input is None:
        raise ValueError(f"TorchRunner needs an example input to know the input specs of {type(module).__name__} "
                         f"(it has no example_input()): pass example_input=")
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    return tuple(torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x for x in items)


def _as_list(out) -> list:
    if isinstance(out, Mapping):
        return list(out.values())
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _numpy_dtype(t) -> np.dtype:
    return np.dtype(str(t.dtype).replace("torch.", ""))


def _specs(names: Sequence[str], tensors: Sequence, dynamic_spatial: bool) -> list[TensorSpec]:
    """Batch dim dynamic; spatial dims (2..) dynamic for fully convolutional models; the rest as in the example."""
    specs = []
    for name, t in zip(names, tensors):
        shape = tuple(None if (i == 0 or (dynamic_spatial and i >= 2)) else int(d) for i, d in enumerate(t.shape))
        specs.append(TensorSpec(name, _numpy_dtype(t), shape))
    return specs


def _metadata(module) -> dict[str, str]:
    """The sdk.* entries an export would embed, so warm-up and comparisons read the same contract."""
    meta = {}
    if hasattr(module, "model_name"):
        meta["sdk.model_name"] = str(module.model_name)
    if hasattr(getattr(module, "config", None), "to_dict"):
        meta["sdk.config"] = json.dumps(module.config.to_dict())
    if hasattr(module, "input_contract"):
        meta["sdk.input_contract"] = json.dumps(module.input_contract())
    return meta


class TorchRunner(Runner):
    """An ``nn.Module`` (or SDK checkpoint) behind the ``Runner`` interface: numpy in, numpy out, eval + no grad.

    ``threads`` calls ``torch.set_num_threads``, which is process-wide in PyTorch.
    """

    backend = "torch"

    def __init__(self, module_or_checkpoint, *, device: str = "cpu", input_names: Sequence[str] = ("input",),
                 output_names: Sequence[str] = ("output",), example_input=None, threads: int | None = None,
                 check_finite: bool = False):
        torch = _import_torch()
        self.torch, self.check_finite = torch, check_finite
        self.device = self._device(device)
        if threads is not None:
            torch.set_num_threads(int(threads))
        source = module_or_checkpoint
        if isinstance(source, (str, os.PathLike)):
            self.path, module = os.fspath(source), load_checkpoint(source)
        elif isinstance(source, torch.nn.Module):
            self.path, module = f"<{type(source).__name__}>", source
        else:
            raise TypeError(f"TorchRunner takes an nn.Module or a checkpoint path, got {type(source).__name__}")
        self.module = module.eval().to(self.device)
        examples = _examples(self.module, example_input)
        if len(examples) != len(input_names):
            raise ValueError(f"{len(examples)} example input(s) but input_names {list(input_names)}")
        with torch.inference_mode():
            outs = _as_list(self.module(*(x.to(self.device) for x in examples)))
        if len(outs) != len(output_names):
            raise ValueError(f"{type(module).__name__} returns {len(outs)} output(s) but output_names is "
                             f"{list(output_names)}: pass one name per output")
        dynamic = bool(getattr(self.module, "dynamic_spatial", False))
        self.inputs = _specs(list(input_names), examples, dynamic)
        self.outputs = _specs(list(output_names), outs, dynamic)
        self.metadata = _metadata(self.module)
        self.providers = [f"torch-eager-{self.device}"]

    def _device(self, device: str):
        kind, index = parse_device(device)
        if kind == "cuda" and not self.torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but this PyTorch build sees no CUDA device "
                                          f"(torch {self.torch.__version__})")
        return self.torch.device("cpu" if kind == "cpu" else f"cuda:{index}")

    def run(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        validate_feed(self.inputs, feed, check_finite=self.check_finite)
        torch = self.torch
        args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])).to(self.device) for s in self.inputs]
        try:
            with torch.inference_mode():
                outs = _as_list(self.module(*args))
        except ValueError as e:  # the model's own input contract (InputShapeError), e.g. a size it cannot take
            raise InputError(f"{type(self.module).__name__}: {e}") from e
        result = {s.name: o.detach().cpu().numpy() for s, o in zip(self.outputs, outs)}
        names = list(output_names) if output_names is not None else list(result)
        unknown = sorted(set(names) - set(result))
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; this model's outputs are {list(result)}")
        return {n: result[n] for n in names}

    def close(self) -> None:
        self.module = None
