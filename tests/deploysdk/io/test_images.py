"""One-file reading (PNG/JPEG, NumPy, NIfTI, DICOM), read_any, and errors that name the file and the reason."""
import numpy as np
import pytest
from PIL import Image

from deploysdk.errors import UnreadableFileError
from deploysdk.io import read_any, read_image, write_dicom_series, write_nifti

from .test_dicom import _phantom


def test_png_gray_8_and_16_bit(tmp_path):
    g8 = np.random.default_rng(0).integers(0, 256, (7, 9)).astype(np.uint8)
    g16 = np.random.default_rng(1).integers(0, 65536, (7, 9)).astype(np.uint16)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    Image.fromarray(g16).save(tmp_path / "g16.png")
    for name, ref in (("g8.png", g8), ("g16.png", g16)):
        vol = read_image(tmp_path / name)
        assert vol.array.dtype == np.float32 and vol.array.shape == (7, 9) and vol.spacing == (1.0, 1.0)
        np.testing.assert_array_equal(vol.array, ref)
        assert vol.meta["spacing_known"] is False and vol.channel_axis is None


def test_png_colour_channels(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    vol = read_image(tmp_path / "rgb.png")
    assert vol.array.shape == (5, 6, 3) and vol.channel_axis == -1 and vol.spatial_shape == (5, 6)
    np.testing.assert_array_equal(vol.array, rgb)
    luma = read_image(tmp_path / "rgb.png", gray=True).array
    np.testing.assert_allclose(luma, rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-3)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    vol = read_image(tmp_path / "rgba.png")
    assert vol.meta["alpha_dropped"] and vol.array.shape == (5, 6, 3)
    gray3 = np.repeat(rgb[..., :1], 3, axis=-1)
    Image.fromarray(gray3).save(tmp_path / "gray3.jpg", quality=100)
    vol = read_image(tmp_path / "gray3.jpg")
    assert vol.array.shape == (5, 6)  # identical channels collapse to grayscale


def test_numpy_files(tmp_path):
    arr = np.random.default_rng(3).normal(size=(4, 5, 6))
    np.save(tmp_path / "v.npy", arr)
    vol = read_image(tmp_path / "v.npy")
    np.testing.assert_allclose(vol.array, arr.astype(np.float32))
    assert vol.spacing == (1.0, 1.0, 1.0)
    np.savez(tmp_path / "s.npz", image=arr, spacing=np.array([2.0, 0.5, 0.25]))
    vol = read_image(tmp_path / "s.npz")
    assert vol.spacing == (2.0, 0.5, 0.25) and vol.meta["spacing_known"]
    np.testing.assert_allclose(vol.voxel_to_patient((1, 2, 3)), (0.75, 1.0, 2.0))
    np.savez(tmp_path / "two.npz", a=arr, b=arr)
    with pytest.raises(UnreadableFileError, match=r"two\.npz.*expected one array, or one named 'image'"):
        read_image(tmp_path / "two.npz")
    np.save(tmp_path / "1d.npy", np.zeros(5))
    with pytest.raises(UnreadableFileError, match=r"1d\.npy.*shape \(5,\).*expected a \(y, x\) or \(z, y, x\)"):
        read_image(tmp_path / "1d.npy")


def test_nifti_dicom_and_sniffing(tmp_path):
    arr = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    write_nifti(arr, np.diag([0.5, 0.5, 2.0, 1.0]), tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(read_image(tmp_path / "v.nii.gz").array, arr)
    hu = _phantom((1, 4, 5), seed=4)
    path = write_dicom_series(hu, tmp_path / "dcm", spacing=(1, 0.5, 0.5))[0]
    (tmp_path / "noext").write_bytes(open(path, "rb").read())  # PACS exports often have no suffix
    for p in (path, tmp_path / "noext"):
        vol = read_image(p)
        assert vol.array.shape == (4, 5) and vol.modality == "CT"
        np.testing.assert_array_equal(vol.array, hu[0])


def test_read_any_folder_or_file(tmp_path):
    hu = _phantom((3, 4, 5), seed=5)
    paths = write_dicom_series(hu, tmp_path)
    np.testing.assert_array_equal(read_any(tmp_path).array, hu)
    np.testing.assert_array_equal(read_any(paths[::-1]).array, hu)
    np.testing.assert_array_equal(read_any(paths[0]).array, hu[0])


@pytest.mark.parametrize("name,content,reason", [
    ("empty.png", b"", "empty file"),
    ("bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),
    ("bad.npy", b"\x93NUMPY garbage", "not a readable npy file"),
    ("bad.dcm", bytes(range(256)) * 3, "not a DICOM file"),
])
def test_unreadable_files_name_file_and_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnreadableFileError, match=reason) as info:
        read_image(tmp_path / name)
    assert info.value.path == str(tmp_path / name) and name in str(info.value)


def test_truncated_png_and_missing_and_folder(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableFileError, match=r"t\.png"):
        read_image(tmp_path / "t.png")
    with pytest.raises(UnreadableFileError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(UnreadableFileError, match="is a folder"):
        read_image(tmp_path)


def test_unreadable_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(UnreadableFileError("/x/y.png", "truncated")))
    assert (err.path, err.reason, str(err)) == ("/x/y.png", "truncated", "cannot read /x/y.png: truncated")
    from deploysdk.errors import SeriesError

    err = pickle.loads(pickle.dumps(SeriesError("no usable slice", [("/a.dcm", "truncated")])))
    assert err.problems == [("/a.dcm", "truncated")] and str(err) == "no usable slice\n  /a.dcm: truncated"
