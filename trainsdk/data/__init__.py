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

# Degradations for restoration pairs, and simulated CT (appended: issue 7)
from .ct_sim import iradon_fbp, radon, shepp_logan_phantom  # noqa: E402
from .degradations import (DEGRADATIONS, degrade, downsample, gaussian_noise, jpeg_artifacts,  # noqa: E402
                           median_filter, poisson_noise, simulate_low_dose_ct, speckle_noise, ultrasound_speckle,
                           upsample_bicubic)

__all__ += ["gaussian_noise", "poisson_noise", "speckle_noise", "ultrasound_speckle", "downsample", "upsample_bicubic",
            "jpeg_artifacts", "median_filter", "simulate_low_dose_ct", "radon", "iradon_fbp", "shepp_logan_phantom",
            "DEGRADATIONS", "degrade"]

# Paired cross-modality images, MR-like -> CT-like (appended: issue 8)
from .paired import (CT_HU, MR_SIGNAL, TISSUES, PairedConfig, PairedSet, hu_to_unit,  # noqa: E402
                     make_paired_modalities, unit_to_hu)

__all__ += ["make_paired_modalities", "PairedSet", "PairedConfig", "TISSUES", "CT_HU", "MR_SIGNAL", "hu_to_unit",
            "unit_to_hu"]
