"""Transfer learning, the lecture's four regimes, on any zoo model with pretrained weights from a file.

1. ``FeatureExtractorRegime``: the frozen network computes pooled features, a classical classifier (logistic
   regression or an SVM, scikit-learn) is fitted on them; no gradient step at all.
2. ``FrozenFeaturesRegime``: the network stays frozen (weights and batch-norm statistics), only its head trains.
3. ``FineTuneRegime``: everything trains; ``layer_lr_decay < 1`` gives earlier stages smaller learning rates
   (``lr * decay**k`` for the stage k steps below the head), since early features are generic and already good.
4. ``TruncateRegime``: the network is cut after a shallower ``stage`` and a new head is put on it (it fine-tunes,
   or trains only the head with ``freeze=True``): late features are the most specific to the source task.

``load_pretrained(model, path)`` loads the source weights (a torchvision state_dict, an SDK checkpoint, ...) with
``trainsdk.models.load_weights``: first convolutions with 3 input channels are adapted to the model's 1 (summed over
RGB), the head is left as initialised (a new task has new classes), and the report of missing, unexpected,
adapted and skipped keys is printed and returned.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn

from ...models import LoadReport, create_model, load_weights
from ...models.weights import WeightsError, load_state_dict_file
from ._classical import CLASSIFIERS
from ._truncate import TruncatedNet, stage_names, truncate_model

__all__ = ["FeatureExtractorRegime", "FrozenFeaturesRegime", "FineTuneRegime", "TruncateRegime", "Prepared",
           "REGIMES", "make_regime", "load_pretrained", "head_name", "stage_param_groups", "with_input_channels",
           "TruncatedNet"]


# --- the head and the stages --------------------------------------------------------------------------------------
@torch.no_grad()
def head_name(model: nn.Module) -> str:
    """Name of the layer that produces the logits: the last module with weights that runs in ``forward`` (found
    by running ``example_input()`` once in eval mode, so it holds for every family without a table)."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
             for name, m in model.named_modules() if name and next(m.parameters(recurse=False), None) is not None]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(model.example_input(batch_size=1).to(device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError(f"{type(model).__name__} runs no layer with weights; it has no head to replace")
    return order[-1]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def stage_param_groups(model: nn.Module, lr: float, decay: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per depth: the head at ``lr``, each ``feature_info`` stage below it at
    ``lr * decay**k`` (k = stages between it and the head); stem layers go with the first stage, anything after
    the last stage (pre-logit layers, auxiliary heads) with the head. Frozen parameters are left out."""
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"layer_lr_decay must be in (0, 1], got {decay!r}")
    stages, head = stage_names(model), head_name(model)
    top = len(stages)
    named = list(model.named_parameters())
    last = max((i for i, (n, _) in enumerate(named) if stages and _under(n, stages[-1])), default=len(named))
    buckets: dict[int, list[tuple[str, nn.Parameter]]] = {}
    current = 0  # stem parameters (before the first stage) go with the first stage
    for pos, (name, p) in enumerate(named):
        hit = next((i for i, s in enumerate(stages) if _under(name, s)), None)
        if _under(name, head) or pos > last:
            depth = top
        else:
            depth = current = hit if hit is not None else current
        buckets.setdefault(depth, []).append((name, p))
    groups = []
    for depth in sorted(buckets):
        trainable = [(n, p) for n, p in buckets[depth] if p.requires_grad]
        if trainable:
            groups.append({"params": [p for _, p in trainable], "lr": lr * decay ** (top - depth),
                           "name": f"depth{depth}"})
    return groups


# --- loading weights ----------------------------------------------------------------------------------------------
def load_pretrained(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                    new_head: bool = True, strict: bool = True, adapt_channels: bool = True,
                    verbose: bool = True) -> LoadReport:
    """Load source weights into ``model`` and report what happened (printed when ``verbose``).

    ``new_head``: the head's keys (``head_name``) are not loaded even when their shapes fit (listed under
    ``skipped``). ``strict``: missing or unexpected keys other than the head's raise ``WeightsError`` naming them.
    ``adapt_channels``: a first convolution with another input-channel count is adapted (3 -> 1: summed).
    """
    state = dict(source) if isinstance(source, Mapping) else load_state_dict_file(source)
    head = head_name(model)
    if new_head:
        state = {k: v for k, v in state.items() if not _under(k, head)}
    report = load_weights(model, state, strict=False, adapt_channels=adapt_channels, skip_mismatched=(head + ".",))
    for key in [k for k in report.missing if _under(k, head)]:
        report.missing.remove(key)
        report.skipped[key] = "new head: left as initialised"
    if verbose:
        where = os.fspath(source) if not isinstance(source, Mapping) else "state_dict"
        print(f"loaded {where} into {getattr(model, 'model_name', type(model).__name__)}: {report}")
    if strict and not report.ok:
        raise WeightsError(f"weights do not fit {type(model).__name__}: missing keys {report.missing[:10]}, "
                           f"unexpected keys {report.unexpected[:10]} (strict=False loads what fits)")
    return report


def with_input_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """The same zoo model rebuilt for ``in_channels`` inputs, its weights copied and the first convolution
    adapted (3 -> 1: summed over RGB, so a grey image gets the response the original gave to it in colour)."""
    name, config = getattr(model, "model_name", None), getattr(model, "config", None)
    if name is None or config is None:
        raise TypeError(f"{type(model).__name__} is not a zoo model (no model_name/config)")
    new = create_model(name, **{**config.to_dict(), "in_channels": in_channels})
    load_weights(new, model.state_dict(), strict=True, adapt_channels=True)
    return new


# --- the regimes --------------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A model ready for the Trainer: the parameter groups to optimise and the modules kept in eval mode."""

    model: nn.Module
    param_groups: list[dict[str, Any]]
    frozen: list[nn.Module] = field(default_factory=list)


def _freeze_all_but_head(model: nn.Module, head: str) -> list[nn.Module]:
    """Freeze every parameter outside ``head``; return the leaf modules outside it, which the training step keeps
    in eval mode so batch-norm statistics and dropout of the frozen part do not move either."""
    for name, p in model.named_parameters():
        p.requires_grad_(_under(name, head))
    return [m for name, m in model.named_modules()
            if name and next(m.children(), None) is None and not _under(name, head)]


@dataclass(frozen=True)
class FeatureExtractorRegime:
    """Regime 1: frozen features, classical classifier ("logistic": folded into the head; "svm": RBF SVM)."""

    classifier: str = "logistic"
    c: float = 1.0
    name = "features"

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"FeatureExtractorRegime: classifier must be one of {CLASSIFIERS}, got "
                             f"{self.classifier!r}")
        if not float(self.c) > 0:
            raise ValueError(f"FeatureExtractorRegime: c (inverse regularisation) must be > 0, got {self.c!r}")


@dataclass(frozen=True)
class FrozenFeaturesRegime:
    """Regime 2: the network frozen (weights, batch-norm statistics, dropout), its head trained."""

    name = "frozen"

    def prepare(self, model: nn.Module, lr: float, num_classes: int) -> Prepared:
        head = head_name(model)
        frozen = _freeze_all_but_head(model, head)
        return Prepared(model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}], frozen)


@dataclass(frozen=True)
class FineTuneRegime:
    """Regime 3: every layer trains; stage k below the head at ``lr * layer_lr_decay**k``."""

    layer_lr_decay: float = 1.0
    name = "finetune"

    def __post_init__(self) -> None:
        if isinstance(self.layer_lr_decay, bool) or not 0.0 < float(self.layer_lr_decay) <= 1.0:
            raise ValueError(f"FineTuneRegime: layer_lr_decay must be in (0, 1], got {self.layer_lr_decay!r}")

    def prepare(self, model: nn.Module, lr: float, num_classes: int) -> Prepared:
        for p in model.parameters():
            p.requires_grad_(True)
        return Prepared(model, stage_param_groups(model, lr, self.layer_lr_decay))


@dataclass(frozen=True)
class TruncateRegime:
    """Regime 4: cut after ``stage`` (a ``feature_info`` stage such as "layer3"), new pooled linear head;
    ``freeze=True`` trains the head only."""

    stage: str = ""
    freeze: bool = False
    name = "truncate"

    def __post_init__(self) -> None:
        if not isinstance(self.stage, str) or not self.stage:
            raise ValueError("TruncateRegime: stage must name the module to cut after (e.g. 'layer3'; a model's "
                             "feature_info lists its stages)")

    def prepare(self, model: nn.Module, lr: float, num_classes: int) -> Prepared:
        net = truncate_model(model, self.stage, num_classes)
        if self.freeze:
            for p in net.body.parameters():
                p.requires_grad_(False)
            return Prepared(net, [{"params": list(net.fc.parameters()), "lr": lr}], [net.body])
        return Prepared(net, [{"params": list(net.parameters()), "lr": lr}])


REGIMES: dict[str, type] = {"features": FeatureExtractorRegime, "frozen": FrozenFeaturesRegime,
                            "finetune": FineTuneRegime, "truncate": TruncateRegime}


def make_regime(regime: Any, **kwargs) -> Any:
    """A regime from its name ("features", "frozen", "finetune", "truncate") and fields, or the regime itself."""
    if regime is None or isinstance(regime, tuple(REGIMES.values())):
        if kwargs:
            raise TypeError(f"make_regime: keyword arguments {sorted(kwargs)} need a regime name")
        return regime
    if not isinstance(regime, str) or regime not in REGIMES:
        raise ValueError(f"unknown transfer regime {regime!r}; known: {', '.join(REGIMES)}")
    cls = REGIMES[regime]
    accepted = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"transfer regime {regime!r} got unexpected argument(s) {unknown}; accepted: {accepted}")
    return cls(**kwargs)
