"""Transfer regime 4: cut a network after a named stage and put a new head on it.

The cut is made on the ``torch.fx`` graph of ``forward_features`` (the way torchvision's feature extractor does it),
so it works for any zoo model whose stem and stages are modules, without per-family code: the graph is traced
with the ``feature_info`` stages kept as single calls, its output is moved to the requested stage and everything
after it is dropped. Early layers generalise across tasks (edges, blobs, textures) while late ones are specific to
the pre-training task, which is why a shallower cut can transfer better to a distant target task.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ...models import ModelBase, ModelConfig, create_model

__all__ = ["TruncatedConfig", "TruncatedNet", "truncate_features", "truncate_model", "load_truncated",
           "stage_names"]


def stage_names(model: nn.Module) -> list[str]:
    """The ``feature_info`` stage modules of a zoo model, shallow to deep."""
    return [info["module"] for info in getattr(model, "feature_info", [])]


class _Features(nn.Module):
    """Makes ``forward_features`` the traced forward; node targets get a ``net.`` prefix, removed afterwards."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def _module_calls(graph: fx.Graph) -> list[str]:
    return [n.target.removeprefix("net.") for n in graph.nodes if n.op == "call_module"]


def truncate_features(model: nn.Module, stage: str) -> fx.GraphModule:
    """``forward_features`` of ``model`` up to and including module ``stage``, as a GraphModule sharing its layers.

    ``stage`` is a ``feature_info`` stage (``"layer3"``) or any module the traced graph calls (``"features.10"``).
    Raises ``ValueError`` naming the stages when ``stage`` is not called by ``forward_features``.
    """
    if not hasattr(model, "forward_features"):
        raise TypeError(f"{type(model).__name__} has no forward_features(): truncation needs a zoo model")
    if not isinstance(stage, str) or not stage:
        raise ValueError(f"stage must be a module name such as one of {stage_names(model)}, got {stage!r}")
    leaves = {"net." + s for s in stage_names(model) if not stage.startswith(s + ".")}

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in leaves or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(_Features(model))
    except Exception as e:  # data-dependent control flow in forward_features
        raise ValueError(f"cannot trace {type(model).__name__}.forward_features to truncate it: {e}") from e
    hits = [n for n in graph.nodes if n.op == "call_module" and n.target == "net." + stage]
    if len(hits) != 1:
        calls = [c for c in dict.fromkeys(_module_calls(graph))]
        why = "is not called by forward_features" if not hits else f"is called {len(hits)} times (ambiguous)"
        raise ValueError(f"stage {stage!r} {why}; stages of {type(model).__name__}: {stage_names(model)} "
                         f"(other modules it calls: {calls[:12]}{'...' if len(calls) > 12 else ''})")
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = (hits[0],)
    for node in graph.nodes:  # address the model's own modules, so state_dict keys read like the model's
        if node.op in ("call_module", "get_attr"):
            node.target = node.target.removeprefix("net.")
    gm = fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Features")
    gm.graph.eliminate_dead_code()  # everything after the stage
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


@dataclass
class TruncatedConfig(ModelConfig):
    """What rebuilds a truncated network: the base zoo model, its configuration and the stage it is cut after."""

    base_model: str = ""
    base_config: dict[str, Any] = field(default_factory=dict)
    stage: str = ""

    def validate(self) -> None:
        if not self.base_model or not self.stage:
            raise ValueError(f"TruncatedConfig: base_model and stage must be set, got {self.base_model!r}, "
                             f"{self.stage!r}")


class TruncatedNet(ModelBase):
    """``body`` = the base network up to ``stage``; head = global average pool + ``fc`` (a new linear layer)."""

    def __init__(self, base: nn.Module, stage: str, num_classes: int) -> None:
        name, base_cfg = getattr(base, "model_name", None), getattr(base, "config", None)
        if name is None or base_cfg is None:
            raise TypeError(f"{type(base).__name__} is not a zoo model (no model_name/config): build it with "
                            f"trainsdk.models.create_model")
        config = TruncatedConfig(num_classes=num_classes, in_channels=base.in_channels, base_model=name,
                                 base_config=base_cfg.to_dict(), stage=stage)
        super().__init__(config)
        for attr in ("spatial_dims", "default_input_size", "min_input_size", "input_multiple", "fixed_input_size"):
            setattr(self, attr, getattr(base, attr))
        self.body = truncate_features(base, stage)
        was_training = base.training
        base.eval()
        with torch.no_grad():
            width = self.body(base.example_input(batch_size=1)).shape[1]  # (1, C, *spatial)
        base.train(was_training)
        self.pool = nn.AdaptiveAvgPool3d(1) if self.spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.num_features = width
        self.model_name = f"{name}@{stage}"
        names = stage_names(base)
        kept = names[:names.index(stage) + 1] if stage in names else []
        self._feature_info = [dict(info, module="body." + info["module"]) for info in base.feature_info
                              if info["module"] in kept]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, C_stage, *spatial / reduction)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)  # (N, C_stage)
        return x if pre_logits else self.fc(x)


def truncate_model(model: nn.Module, stage: str, num_classes: int) -> TruncatedNet:
    """A new classifier on ``model``'s layers up to ``stage`` (layers shared, not copied; new ``fc``)."""
    return TruncatedNet(model, stage, num_classes)


def load_truncated(path: str | os.PathLike, map_location: str = "cpu") -> TruncatedNet:
    """Rebuild a truncated network from a recipe checkpoint (its ``config`` names the base model and stage)."""
    from ..checkpoint import CheckpointError

    ckpt = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(cfg, dict) or "base_model" not in cfg or "stage" not in cfg:
        raise CheckpointError(f"{path} is not a truncated-network checkpoint: its config lacks base_model/stage")
    base = create_model(cfg["base_model"], **cfg["base_config"])
    model = TruncatedNet(base, cfg["stage"], cfg["num_classes"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model
