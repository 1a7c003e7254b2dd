"""``MetricTracker``: accumulate a model's outputs batch by batch during evaluation, then compute named metrics.

The trainer's eval step calls ``update(output, target)`` per batch and ``compute()`` once; ``compute_metrics`` does
both for one batch. What ``output`` and ``target`` are follows from the metrics' kind (one kind per tracker):

- classification (``accuracy``, ``sensitivity``, ``specificity``, ``auroc``): output ``(N, C)`` scores (logits
  when ``from_logits``: softmax; or ``(N,)``/``(N, 1)`` binary scores: sigmoid), target ``(N,)`` labels. Scores are
  kept until ``compute()`` because AUROC ranks the whole set.
- segmentation (``dice``, ``iou``, ``hd95``): output ``(N, C, *spatial)`` scores (argmax; one channel: > 0.5 after
  the sigmoid) or an integer label map ``(N, *spatial)``; target ``(N, *spatial)`` or ``(N, 1, *spatial)``. Each
  case is scored per class; a result is the mean over cases of the mean over foreground classes (class 0 is left
  out unless ``include_background``), NaN entries skipped. ``dice/k`` is class k alone. An ``inf`` HD95 (a class
  missed or hallucinated) stays ``inf`` in the mean: such a case is not silently dropped.
- image (``psnr``, ``ssim``): output and target ``(N, C, *spatial)`` (2 or 3 spatial axes), scored per case and
  averaged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import classification as cls
from . import image as img
from . import segmentation as seg
from ._convert import as_array, as_labels

__all__ = ["MetricTracker", "MetricConfig", "compute_metrics", "METRICS", "list_metrics"]

METRICS = {"accuracy": "classification", "sensitivity": "classification", "specificity": "classification",
           "auroc": "classification", "dice": "segmentation", "iou": "segmentation", "hd95": "segmentation",
           "psnr": "image", "ssim": "image"}


def list_metrics(kind: str | None = None) -> list[str]:
    """Metric names ``MetricTracker`` knows, optionally of one kind ("classification", "segmentation", "image")."""
    return sorted(n for n, k in METRICS.items() if kind is None or k == kind)


@dataclass
class MetricConfig:
    """Settings shared by the metrics of one tracker (see ``MetricTracker``)."""

    num_classes: int | None = None
    from_logits: bool = True
    include_background: bool = False
    spacing: float | Sequence[float] | None = None
    data_range: float | None = None
    empty_value: float = 1.0


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def _nanmean(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN, said in the docs
        return float(np.nanmean(arr)) if arr.size else float("nan")


class MetricTracker:
    """Accumulates outputs and targets over batches; ``compute()`` returns ``{name: float}``."""

    def __init__(self, names: Sequence[str], config: MetricConfig | None = None, **overrides: Any):
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in METRICS]
        if unknown or not names:
            raise ValueError(f"unknown metric(s) {unknown or names}; known: {list_metrics()}")
        kinds = {METRICS[n] for n in names}
        if len(kinds) > 1:
            raise ValueError(f"metrics {names} mix kinds {sorted(kinds)}; use one tracker per kind")
        self.names, self.kind = names, kinds.pop()
        try:
            self.config = MetricConfig(**{**(vars(config) if config else {}), **overrides})
        except TypeError as exc:
            raise TypeError(f"{exc}; MetricConfig fields: {list(MetricConfig.__dataclass_fields__)}") from None
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._cases: dict[str, list] = {n: [] for n in self.names}

    def update(self, output: Any, target: Any) -> None:
        out, tgt = as_array(output, "output"), as_array(target, "target")
        if out.ndim == 0 or tgt.ndim == 0:
            raise ValueError(f"output and target must be batches (N, ...), got shapes {out.shape} and {tgt.shape}")
        if len(out) != len(tgt):
            raise ValueError(f"output and target differ in batch size: {len(out)} and {len(tgt)}")
        getattr(self, f"_update_{self.kind}")(out, tgt)

    def _update_classification(self, out: np.ndarray, tgt: np.ndarray) -> None:
        if out.ndim not in (1, 2):
            raise ValueError(f"classification output must be (N, C) or (N,) scores, got shape {out.shape}")
        scores = out.astype(np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            scores = scores[:, 0]
        if self.config.from_logits:
            scores = _sigmoid(scores) if scores.ndim == 1 else _softmax(scores)
        self._scores.append(scores)
        if tgt.size != len(tgt):
            raise ValueError(f"classification target must be labels (N,), got shape {tgt.shape}")
        self._labels.append(as_labels(tgt, "target").reshape(-1))

    def _label_maps(self, out: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(pred, target) label maps ``(N, *spatial)`` and the class count the output implies."""
        tgt = as_labels(tgt, "target")
        if np.issubdtype(out.dtype, np.floating):  # (N, C, *spatial) scores
            if out.ndim < 3:
                raise ValueError(f"segmentation scores must be (N, C, *spatial), got shape {out.shape}")
            if tgt.ndim == out.ndim and tgt.shape[1] == 1:
                tgt = tgt[:, 0]
            if out.shape[1] == 1:
                return (out[:, 0] > (0.0 if self.config.from_logits else 0.5)).astype(np.int64), tgt, 2
            return np.argmax(out, axis=1), tgt, out.shape[1]
        pred = as_labels(out, "output")  # an integer label map; a singleton channel on one side only is dropped
        if pred.ndim == tgt.ndim + 1 and pred.shape[1] == 1:
            pred = pred[:, 0]
        elif tgt.ndim == pred.ndim + 1 and tgt.shape[1] == 1:
            tgt = tgt[:, 0]
        return pred, tgt, 2

    def _update_segmentation(self, out: np.ndarray, tgt: np.ndarray) -> None:
        pred, tgt, k = self._label_maps(out, tgt)
        if pred.shape != tgt.shape:
            raise ValueError(f"segmentation output {out.shape} does not match target {tgt.shape}; expected output "
                             "(N, C, *spatial) scores or an (N, *spatial) label map, target (N, *spatial)")
        seen = max(int(pred.max(initial=0)), int(tgt.max(initial=0))) + 1
        k = self.config.num_classes or max(k, seen)
        first = 0 if self.config.include_background else 1
        for p, t in zip(pred, tgt):
            for name in self.names:
                self._cases[name].append(self._case_scores(name, p, t, k)[first:])

    def _case_scores(self, name: str, p: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
        cfg = self.config
        if name == "dice":
            return seg.dice_score(p, t, num_classes=k, empty_value=cfg.empty_value)
        if name == "iou":
            return seg.iou_score(p, t, num_classes=k, empty_value=cfg.empty_value)
        return np.array([seg.hausdorff_distance_95(p == c, t == c, spacing=cfg.spacing) for c in range(k)])

    def _update_image(self, out: np.ndarray, tgt: np.ndarray) -> None:
        if out.ndim not in (4, 5) or out.shape != tgt.shape:
            raise ValueError(f"image output and target must both be (N, C, H, W) or (N, C, D, H, W), got "
                             f"{out.shape} and {tgt.shape}")
        for p, t in zip(out, tgt):
            for name in self.names:
                fn = img.psnr if name == "psnr" else img.ssim
                kw = {"spatial_dims": p.ndim - 1} if name == "ssim" else {}
                self._cases[name].append(fn(p, t, data_range=self.config.data_range, **kw))

    def compute(self) -> dict[str, float]:
        """``{name: value}``; segmentation also gives ``name/k`` per class. NaN when nothing was scored."""
        if self.kind == "classification":
            return self._compute_classification()
        result: dict[str, float] = {}
        for name in self.names:
            cases = self._cases[name]
            if self.kind == "image":
                result[name] = _nanmean(cases)
                continue
            if not cases:
                result[name] = float("nan")
                continue
            width = max(len(c) for c in cases)
            table = np.full((len(cases), width), np.nan)  # (cases, classes); cases may have seen fewer classes
            for i, c in enumerate(cases):
                table[i, :len(c)] = c
            result[name] = _nanmean([_nanmean(row) for row in table])
            first = 0 if self.config.include_background else 1
            for j in range(width):
                result[f"{name}/{j + first}"] = _nanmean(table[:, j])
        return result

    def _compute_classification(self) -> dict[str, float]:
        if not self._labels:
            return {name: float("nan") for name in self.names}
        labels, scores = np.concatenate(self._labels), np.concatenate(self._scores)
        k = self.config.num_classes or (2 if scores.ndim == 1 else scores.shape[1])
        pred = cls.predicted_labels(scores, 0.5)
        fns = {"accuracy": lambda: cls.accuracy(labels, pred),
               "sensitivity": lambda: cls.sensitivity(labels, pred, num_classes=k),
               "specificity": lambda: cls.specificity(labels, pred, num_classes=k),
               "auroc": lambda: cls.auroc(labels, scores)}
        return {name: float(fns[name]()) for name in self.names}


def compute_metrics(names: Sequence[str], output: Any, target: Any, config: MetricConfig | None = None,
                    **overrides: Any) -> dict[str, float]:
    """The named metrics of one batch: ``MetricTracker(names, config, **overrides)``, one ``update``, ``compute``."""
    tracker = MetricTracker(names, config, **overrides)
    tracker.update(output, target)
    return tracker.compute()
