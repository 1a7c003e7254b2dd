"""Clinical pipeline pieces that run on numpy and an inference engine only (no torch): tiled inference."""
from .tiling import TileConfig, TiledInferer, importance_map, window_starts

__all__ = ["TiledInferer", "TileConfig", "importance_map", "window_starts"]
