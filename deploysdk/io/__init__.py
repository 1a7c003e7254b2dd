"""Medical image input/output on numpy only: DICOM series (pydicom), NIfTI (nibabel), PNG/JPEG (Pillow), NumPy.

``import deploysdk.io`` imports numpy and nothing else heavy; pydicom, nibabel, Pillow and scipy are imported when a
function needs them, and a missing one raises ``MissingDependencyError`` naming the pip package. Never torch.
Geometry conventions (array axis order, LPS affine, spacing order) are in ``deploysdk.io.volume``.

``Image`` is another name for ``Volume`` (a 2D image is a Volume with a (y, x) array).
"""
from .dicom import ScanResult, SeriesInfo, SeriesRule, read_dicom_file, read_dicom_series, scan_dicom, select_series, \
    window
from .images import IMAGE_SUFFIXES, read_any, read_image
from .nifti import read_nifti, write_nifti
from .resample import resample_like, resample_to_reference, resample_to_spacing
from .synthetic import write_dicom_series
from .volume import LPS_TO_RAS, SkippedFile, Volume, affine_from_spacing, spacing_from_affine

Image = Volume

__all__ = ["Volume", "Image", "SkippedFile", "LPS_TO_RAS", "affine_from_spacing", "spacing_from_affine",
           "scan_dicom", "select_series", "read_dicom_series", "read_dicom_file", "SeriesRule", "SeriesInfo",
           "ScanResult", "window", "read_nifti", "write_nifti", "read_image", "read_any", "IMAGE_SUFFIXES",
           "write_dicom_series", "resample_to_spacing", "resample_to_reference", "resample_like"]
