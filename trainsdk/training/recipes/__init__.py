"""Training recipes, one module per paradigm: ``classify`` (``ClassifyRecipe`` -> ``train_classifier``),
``segment`` (``SegmentRecipe`` -> ``train_segmenter``) and ``transfer`` (the four transfer-learning regimes and
``load_pretrained``). ``trainsdk train`` is a thin command line over these functions.

Every recipe writes ``out_dir/last.pt`` and ``best.pt`` (resumable training states that ``deploysdk export`` takes,
with the preprocessing and class labels to embed) and returns a ``RecipeResult`` with the test metrics.
"""
from ._common import CLASSIC_AFFINE, OPTIMIZERS, SCHEDULES, AugmentConfig, RecipeConfig, RecipeResult, \
    build_augment, export_metadata
from ._data import DataSplits, resolve_data, stratified_subset
from ._truncate import TruncatedNet, load_truncated, truncate_features, truncate_model
from ._classical import extract_features, fold_logistic_into_head
from .classify import CLASSIFICATION_METRICS, ClassifyRecipe, classification_metrics, train_classifier
from .segment import SEGMENTATION_METRICS, SegmentRecipe, segmentation_metrics, train_segmenter
from .transfer import REGIMES, FeatureExtractorRegime, FineTuneRegime, FrozenFeaturesRegime, Prepared, \
    TruncateRegime, head_name, load_pretrained, make_regime, stage_param_groups, with_input_channels

__all__ = ["ClassifyRecipe", "SegmentRecipe", "RecipeConfig", "RecipeResult", "AugmentConfig", "CLASSIC_AFFINE",
           "OPTIMIZERS", "SCHEDULES", "train_classifier", "train_segmenter", "classification_metrics",
           "segmentation_metrics", "CLASSIFICATION_METRICS", "SEGMENTATION_METRICS", "build_augment",
           "export_metadata", "DataSplits", "resolve_data", "stratified_subset",
           "FeatureExtractorRegime", "FrozenFeaturesRegime", "FineTuneRegime", "TruncateRegime", "REGIMES",
           "Prepared", "make_regime", "load_pretrained", "head_name", "stage_param_groups", "with_input_channels",
           "TruncatedNet", "truncate_model", "truncate_features", "load_truncated", "extract_features",
           "fold_logistic_into_head"]

# issue 7: autoencoders (denoising, restoration, pretraining), anomaly detection, mean teacher
from .autoencode import PretrainExperiment, RestorationExperiment, StackedAEExperiment, run_pretraining_experiment, \
    run_restoration_experiment, run_stacked_ae_experiment, train_restorer  # noqa: E402
from .anomaly import AnomalyExperiment, anomaly_maps, image_scores, run_anomaly_experiment, \
    train_healthy_autoencoder  # noqa: E402
from .mean_teacher import MeanTeacher, MeanTeacherConfig, MeanTeacherExperiment, SemiSupervisedDataset, \
    run_mean_teacher_experiment, train_mean_teacher  # noqa: E402

__all__ += ["RestorationExperiment", "run_restoration_experiment", "train_restorer", "PretrainExperiment",
            "run_pretraining_experiment", "StackedAEExperiment", "run_stacked_ae_experiment", "AnomalyExperiment",
            "run_anomaly_experiment", "train_healthy_autoencoder", "anomaly_maps", "image_scores", "MeanTeacher",
            "MeanTeacherConfig", "MeanTeacherExperiment", "SemiSupervisedDataset", "train_mean_teacher",
            "run_mean_teacher_experiment"]
