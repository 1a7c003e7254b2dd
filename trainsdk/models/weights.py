"""Load weights a user has on disk into a zoo model, with a strict report and first-layer channel adaptation.

Typical use: a torchvision ImageNet state_dict (3-channel) into a 1-channel medical model::

    model = create_model("resnet18", in_channels=1, num_classes=2)
    report = load_weights(model, "resnet18-f37072fd.pth", skip_mismatched=("fc.",))
    print(report)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.nn as nn

__all__ = ["LoadReport", "WeightsError", "load_state_dict_file", "adapt_input_channels", "load_weights"]


class WeightsError(RuntimeError):
    """Weights could not be loaded: unreadable file, missing or unexpected keys, or shapes that do not fit."""


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    adapted: dict[str, str] = field(default_factory=dict)  # key -> "3->1 channels (summed)"
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why it was left at its initial value

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        parts = [f"missing={self.missing}", f"unexpected={self.unexpected}"]
        if self.adapted:
            parts.append(f"adapted={self.adapted}")
        if self.skipped:
            parts.append(f"skipped={self.skipped}")
        return "LoadReport(" + ", ".join(parts) + ")"


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.pt``/``.pth``/``.bin`` (``torch.load(weights_only=True)``: no pickled code runs)
    or ``.safetensors``. A checkpoint dict with a ``state_dict``/``model`` entry is unwrapped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # optional dependency
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as e:
        raise WeightsError(f"reading {path} needs the 'safetensors' package: pip install safetensors") from e
    except Exception as e:  # corrupt or non-tensor pickles
        raise WeightsError(f"could not read weights from {path}: {e}") from e
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel/DDP prefix


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer conv weight (out, C, *k) to ``in_channels``.

    To 1 channel: sum over C, so a grey image x gives the response the original gave to (x, x, x).
    To k channels: cycle through the C source channels, dividing each copy by how often its source appears, so
    the response to an image that is constant across channels is unchanged.
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    source = torch.arange(in_channels) % c
    copies = torch.bincount(source, minlength=c).to(weight.dtype)
    shape = (1, in_channels) + (1,) * (weight.dim() - 2)
    return weight[:, source] / copies[source].reshape(shape)


def _is_first_conv_mismatch(src: torch.Tensor, dst: torch.Tensor) -> bool:
    return (src.dim() >= 4 and src.dim() == dst.dim() and src.shape[0] == dst.shape[0]
            and src.shape[2:] == dst.shape[2:] and src.shape[1] != dst.shape[1])


def _match(state: dict, target: dict, report: LoadReport, adapt: bool, skip: tuple[str, ...]) -> dict:
    out = {}
    for key, src in state.items():
        if key not in target:
            continue
        dst = target[key]
        if src.shape == dst.shape:
            out[key] = src
        elif key.startswith(skip):
            report.skipped[key] = f"shape {tuple(src.shape)} in file, {tuple(dst.shape)} in model"
        elif adapt and _is_first_conv_mismatch(src, dst):
            out[key] = adapt_input_channels(src, dst.shape[1])
            report.adapted[key] = f"{src.shape[1]}->{dst.shape[1]} channels"
        else:
            raise WeightsError(
                f"shape mismatch for {key!r}: file has {tuple(src.shape)}, model expects {tuple(dst.shape)} "
                f"(pass skip_mismatched=({key.split('.')[0] + '.'!r},) to keep the model's initial values)")
    return out


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *, strict: bool = True,
                 adapt_channels: bool = True, skip_mismatched: Iterable[str] = (),
                 ignore_unexpected: Iterable[str] = ()) -> LoadReport:
    """Load ``source`` (a path or a state_dict) into ``model`` and report what happened.

    ``strict``: missing or unexpected keys raise ``WeightsError`` naming them (keys under ``skip_mismatched`` or
    ``ignore_unexpected`` prefixes are tolerated). ``adapt_channels``: a first conv of another channel count is
    adapted with ``adapt_input_channels``. ``skip_mismatched``: key prefixes (e.g. ``("fc.",)`` for a new head)
    whose shape mismatches keep the model's values.
    """
    state = dict(source) if isinstance(source, Mapping) else load_state_dict_file(source)
    target = model.state_dict()
    skip, ignore = tuple(skip_mismatched), tuple(ignore_unexpected)
    report = LoadReport()
    matched = _match(state, target, report, adapt_channels, skip)
    report.missing = sorted(k for k in target if k not in matched and k not in report.skipped)
    report.unexpected = sorted(k for k in state if k not in target and not k.startswith(ignore))
    if strict and not report.ok:
        raise WeightsError(f"weights do not fit {type(model).__name__}: missing keys {report.missing[:10]}"
                           f"{'...' if len(report.missing) > 10 else ''}, unexpected keys "
                           f"{report.unexpected[:10]}{'...' if len(report.unexpected) > 10 else ''}")
    model.load_state_dict(matched, strict=False)
    return report
