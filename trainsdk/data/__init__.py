"""Built-in datasets: generated or shipped inside installed packages, never downloaded; and folder datasets."""
from .arrays import ArrayDataset, split_indices
from .digits import DigitsSplit, load_digits
from .errors import DataError
from .folder import FolderDataset
from .lesions import HEALTHY, LESION_CLASSES, LesionConfig, LesionSet, make_healthy, make_lesion_classification
from .phantoms import PHANTOM_CLASSES, PhantomConfig, PhantomSet, make_phantoms
from .registry import BUILTIN_DATASETS, BuiltinDataset, UnknownDatasetError, list_builtin, load_builtin

__all__ = ["load_digits", "DigitsSplit",
           "make_lesion_classification", "make_healthy", "LesionSet", "LesionConfig", "LESION_CLASSES", "HEALTHY",
           "make_phantoms", "PhantomSet", "PhantomConfig", "PHANTOM_CLASSES",
           "ArrayDataset", "split_indices", "FolderDataset", "DataError",
           "load_builtin", "list_builtin", "BUILTIN_DATASETS", "BuiltinDataset", "UnknownDatasetError"]
