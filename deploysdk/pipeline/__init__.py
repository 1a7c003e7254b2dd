"""The clinical pipeline on numpy and an inference engine only (no torch): ``Pipeline`` (study in, mask and report
out) and its pieces: preprocessing from model metadata, tiled inference, postprocessing, writers."""
from .pipeline import DEFAULT_TILE, Pipeline, PostprocessConfig
from .postprocess import KINDS, fill_holes, label_volumes, largest_component, probabilities, to_labels
from .preprocess import METADATA_KEY, Preprocessing, normalize_intensity
from .result import STAGES, ModelInfo, Result
from .tiling import TileConfig, TiledInferer, grown_roi, importance_map, window_starts
from .writers import (DEFAULT_COLORS, overlay_rgb, pick_slices, to_jsonable, write_dicom_seg, write_overlay_png,
                      write_report)

__all__ = ["Pipeline", "PostprocessConfig", "DEFAULT_TILE", "Result", "ModelInfo", "STAGES",
           "TiledInferer", "TileConfig", "importance_map", "window_starts", "grown_roi",
           "Preprocessing", "METADATA_KEY", "normalize_intensity",
           "KINDS", "probabilities", "to_labels", "largest_component", "fill_holes", "label_volumes",
           "write_report", "to_jsonable", "write_overlay_png", "pick_slices", "overlay_rgb", "write_dicom_seg",
           "DEFAULT_COLORS"]
