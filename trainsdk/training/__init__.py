"""Training loops. (The full Trainer with callbacks and checkpoints arrives with the training issue.)"""
from .checkpoint import CheckpointError, load_model_checkpoint, save_model_checkpoint
from .simple import EpochLog, evaluate_classifier, fit_classifier, predict

__all__ = ["save_model_checkpoint", "load_model_checkpoint", "CheckpointError", "fit_classifier", "evaluate_classifier", "predict", "EpochLog"]
