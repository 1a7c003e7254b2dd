"""Training loops. (The full Trainer with callbacks and checkpoints arrives with the training issue.)"""
from .simple import EpochLog, evaluate_classifier, fit_classifier, predict

__all__ = ["fit_classifier", "evaluate_classifier", "predict", "EpochLog"]
