"""Training: the ``Trainer`` (callbacks, checkpoints, exact resume, torchrun data parallel) and the small
deterministic ``fit_classifier`` loop the demo uses."""
from .callbacks import Callback, CSVLogger, EarlyStopping, JSONLLogger, ModelCheckpoint, ProgressBar, \
    TensorBoardLogger
from .checkpoint import CheckpointError, capture_rng_state, load_model_checkpoint, load_training_state, \
    restore_rng_state, save_model_checkpoint, save_training_state
from .config import EarlyStoppingConfig, TrainerConfig
from .distributed import DistInfo, dist_env
from .simple import EpochLog, evaluate_classifier, fit_classifier, predict
from .steps import classification_step
from .trainer import NonFiniteLossError, Trainer

__all__ = ["save_model_checkpoint", "load_model_checkpoint", "CheckpointError", "fit_classifier", "evaluate_classifier",
           "predict", "EpochLog", "Trainer", "TrainerConfig", "EarlyStoppingConfig", "NonFiniteLossError",
           "classification_step", "save_training_state", "load_training_state", "capture_rng_state",
           "restore_rng_state", "Callback", "ProgressBar", "CSVLogger", "JSONLLogger", "TensorBoardLogger",
           "EarlyStopping", "ModelCheckpoint", "DistInfo", "dist_env"]
