"""NIfTI round trips and agreement with DICOM geometry: the same voxel maps to the same patient point."""
import gzip

import nibabel as nib
import numpy as np
import pytest

from deploysdk.errors import UnreadableFileError
from deploysdk.io import LPS_TO_RAS, Volume, read_dicom_series, read_nifti, write_dicom_series, write_nifti

from .test_dicom import OBLIQUE, _phantom


def test_dicom_to_nifti_same_patient_points(tmp_path):
    hu = _phantom((5, 9, 11), seed=20)
    write_dicom_series(hu, tmp_path / "dcm", spacing=(2.0, 0.9, 0.7), origin=(12.0, -30.0, 40.0),
                       orientation=OBLIQUE, reverse=True)
    vol = read_dicom_series(tmp_path / "dcm")
    out = write_nifti(vol.array, vol.affine, tmp_path / "ct.nii.gz")
    back = read_nifti(out)
    np.testing.assert_array_equal(back.array, hu)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    assert back.spacing == pytest.approx(vol.spacing, abs=1e-6)
    # independent check with nibabel alone: NIfTI voxel (i, j, k) -> RAS must be the DICOM LPS point, x/y negated
    img = nib.load(out)
    data = np.asanyarray(img.dataobj)  # (x, y, z)
    for k, j, i in [(0, 0, 0), (4, 8, 10), (2, 3, 5)]:
        ras = img.affine @ [i, j, k, 1]
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], vol.voxel_to_patient((k, j, i)), atol=1e-4)
        assert data[i, j, k] == hu[k, j, i]
    assert img.header["sform_code"] == 1 and img.header["qform_code"] == 1


@pytest.mark.parametrize("values,dtype", [((0, 1, 2), np.uint8), ((0, 300), np.int16), ((-1, 5), np.int16),
                                          ((0, 70000), np.int32)])
def test_integer_masks_keep_small_types(tmp_path, values, dtype):
    mask = np.random.default_rng(0).choice(values, size=(3, 4, 5)).astype(np.int64)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    path = write_nifti(mask, affine, tmp_path / "mask.nii")
    assert nib.load(path).get_data_dtype() == dtype
    vol = read_nifti(path, dtype=None)
    assert vol.array.dtype == dtype
    np.testing.assert_array_equal(vol.array, mask)
    assert read_nifti(path).array.dtype == np.float32


def test_bool_mask_and_2d(tmp_path):
    mask = np.zeros((6, 7), bool)
    mask[2:4, 1:5] = True
    vol = read_nifti(write_nifti(mask, np.diag([0.3, 0.4, 1.0, 1.0]), tmp_path / "m2d.nii.gz"), dtype=None)
    assert vol.array.dtype == np.uint8 and vol.array.shape == (6, 7) and vol.spacing == pytest.approx((0.4, 0.3))
    np.testing.assert_array_equal(vol.array, mask)


def test_write_is_deterministic_and_atomic(tmp_path):
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = write_nifti(arr, np.eye(4), tmp_path / "a.nii.gz")
    first = open(a, "rb").read()
    write_nifti(arr, np.eye(4), tmp_path / "a.nii.gz")
    assert open(a, "rb").read() == first and gzip.decompress(first)[344:348] == b"n+1\x00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temporary file left behind


def test_ras_file_from_other_tools(tmp_path):
    """A file written by nibabel in RAS reads back as LPS: the first two affine rows flip sign."""
    ras = np.array([[0.8, 0, 0, -90], [0, 0.8, 0, 120], [0, 0, 1.5, -60], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), ras), str(tmp_path / "r.nii"))
    vol = read_nifti(tmp_path / "r.nii")
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ ras)
    assert vol.array.shape == (6, 5, 4) and vol.spacing == pytest.approx((1.5, 0.8, 0.8))


def test_errors(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(UnreadableFileError, match=r"bad\.nii\.gz: not a readable NIfTI file"):
        read_nifti(tmp_path / "bad.nii.gz")
    with pytest.raises(UnreadableFileError, match="no such file"):
        read_nifti(tmp_path / "none.nii")
    with pytest.raises(ValueError, match=r"must end with \.nii or \.nii\.gz"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "x.nrrd")
    with pytest.raises(ValueError, match="affine must be 4x4"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(3), tmp_path / "x.nii")
    with pytest.raises(ValueError, match="affine must be 4x4"):
        Volume(np.zeros((2, 2)), np.eye(3), (1, 1))
