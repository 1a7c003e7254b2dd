"""Evaluation metrics for medical imaging: numpy in, floats/arrays out (torch tensors are converted).

- classification: ``accuracy``, ``confusion_matrix``, ``sensitivity``, ``specificity``, ``auroc``
- segmentation: ``dice_score``, ``iou_score`` (per class, from label maps), ``hausdorff_distance``,
  ``hausdorff_distance_95`` (surface distances with voxel spacing, 2D and 3D)
- image quality: ``psnr``, ``ssim`` (Wang et al. 2004, 2D and 3D)
- ``MetricTracker`` / ``compute_metrics``: the named metrics over an evaluation loop.

The package imports numpy and scipy only, so the metrics also run where torch is absent.
"""
from .classification import accuracy, auroc, confusion_matrix, predicted_labels, sensitivity, specificity
from .image import infer_data_range, psnr, ssim
from .segmentation import dice_score, hausdorff_distance, hausdorff_distance_95, iou_score, surface_distances
from .tracker import METRICS, MetricConfig, MetricTracker, compute_metrics, list_metrics

__all__ = ["accuracy", "confusion_matrix", "sensitivity", "specificity", "auroc", "predicted_labels",
           "dice_score", "iou_score", "hausdorff_distance", "hausdorff_distance_95", "surface_distances",
           "psnr", "ssim", "infer_data_range", "MetricTracker", "MetricConfig", "compute_metrics", "METRICS",
           "list_metrics"]
