"""DICOM series: round trip through the synthetic writer (HU, spacing, affine, order), series rules, and every kind
of damaged file recorded with its reason."""
import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1, RLELossless

from deploysdk.errors import InputError, SeriesError, UnreadableFileError
from deploysdk.io import (ScanResult, SeriesRule, read_dicom_file, read_dicom_series, read_image, scan_dicom, window,
                          write_dicom_series)

from . import _faults

OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.4), np.cos(0.3) * np.cos(0.4), np.sin(0.4))


def _phantom(shape=(6, 10, 12), seed=0) -> np.ndarray:
    """Whole-HU values from air to bone, different in every slice (so a wrong order cannot pass)."""
    return np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(np.float64)


def _expected_point(ds, i, j) -> np.ndarray:
    """DICOM's own formula (PS3.3 C.7.6.2.1.1) for the LPS position of column i, row j of one file."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    dy, dx = map(float, ds.PixelSpacing)
    return ipp + iop[:3] * dx * i + iop[3:] * dy * j


def _assert_geometry_matches_files(vol):
    for k, path in enumerate(vol.sources):
        ds = pydicom.dcmread(path)
        for j, i in [(0, 0), (3, 7), (vol.array.shape[1] - 1, vol.array.shape[2] - 1)]:
            np.testing.assert_allclose(vol.voxel_to_patient((k, j, i)), _expected_point(ds, i, j), atol=1e-4)
        raw = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[k], raw)


def test_round_trip_hu_spacing_affine(tmp_path):
    hu = _phantom()
    paths = write_dicom_series(hu, tmp_path, spacing=(2.5, 0.7, 0.6), origin=(-100.0, 50.0, 30.0), uid_seed="t1")
    vol = read_dicom_series(tmp_path)
    assert vol.array.dtype == np.float32 and vol.array.shape == hu.shape
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.6))
    np.testing.assert_allclose(vol.affine, [[0.6, 0, 0, -100], [0, 0.7, 0, 50], [0, 0, 2.5, 30], [0, 0, 0, 1]],
                               atol=1e-6)
    assert vol.sources == paths and vol.skipped == [] and vol.modality == "CT"
    assert vol.meta["window"] == (40.0, 400.0) and vol.meta["rescale"] == (1.0, -1024.0)
    assert vol.meta["patient_id"] == "SYNTH0001" and vol.meta["description"] == "synthetic"
    assert vol.meta["warnings"] == []


def test_fractional_rescale_round_trips(tmp_path):
    hu = _phantom(seed=1) / 2  # half-HU steps need slope 0.5
    write_dicom_series(hu, tmp_path, rescale_slope=0.5, rescale_intercept=-1024.0)
    assert pydicom.dcmread(next(tmp_path.iterdir())).pixel_array.dtype == np.int16
    np.testing.assert_array_equal(read_dicom_series(tmp_path).array, hu)


@pytest.mark.parametrize("reverse", [False, True])
def test_order_from_positions_not_names(tmp_path, reverse):
    hu = _phantom(seed=2)
    write_dicom_series(hu, tmp_path / "src", spacing=(3.0, 1.0, 1.0), reverse=reverse)
    names = sorted(os.listdir(tmp_path / "src"))
    shuffled = [names[i] for i in np.random.default_rng(3).permutation(len(names))]
    (tmp_path / "dst").mkdir()
    for n, name in enumerate(shuffled):  # new names carry no order at all
        shutil.copy(tmp_path / "src" / name, tmp_path / "dst" / f"x{n:02d}.dcm")
    files = [str(tmp_path / "dst" / f) for f in np.random.default_rng(4).permutation(os.listdir(tmp_path / "dst"))]
    for source in (tmp_path / "dst", files):
        vol = read_dicom_series(source)
        np.testing.assert_array_equal(vol.array, hu)
        _assert_geometry_matches_files(vol)


def test_oblique_orientation_geometry(tmp_path):
    hu = _phantom(seed=5)
    write_dicom_series(hu, tmp_path, spacing=(1.5, 0.8, 0.6), origin=(10.0, -20.0, 5.0), orientation=OBLIQUE,
                       reverse=True)
    vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.array, hu)
    _assert_geometry_matches_files(vol)
    normal = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    np.testing.assert_allclose(vol.affine[:3, 2], 1.5 * normal, atol=1e-6)
    np.testing.assert_allclose(vol.patient_to_voxel(vol.voxel_to_patient((4.0, 2.5, 7.0))), (4.0, 2.5, 7.0))


def test_rle_lossless_compressed_series(tmp_path):
    hu = _phantom(seed=6)
    write_dicom_series(hu, tmp_path, transfer_syntax=RLELossless)
    assert pydicom.dcmread(next(tmp_path.iterdir())).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_dicom_series(tmp_path).array, hu)


@pytest.fixture
def two_series(tmp_path):
    """One study: a 6-slice CT 'Abdomen' series and a 2-slice CT 'Scout' plus a 4-slice MR in the same folder."""
    study = pydicom.uid.generate_uid()
    write_dicom_series(_phantom(), tmp_path, series_description="Abdomen 1.0 B30f", series_number=2,
                       study_uid=study, prefix="ct")
    write_dicom_series(_phantom((2, 10, 12)), tmp_path, series_description="Topogram SCOUT", series_number=1,
                       study_uid=study, prefix="sc")
    write_dicom_series(_phantom((4, 8, 8)) + 1024, tmp_path, modality="MR", rescale_intercept=0.0,
                       series_description="T1 axial", series_number=3, study_uid=study, prefix="mr")
    return tmp_path


def test_scan_groups_series(two_series):
    scan = scan_dicom(two_series)
    assert isinstance(scan, ScanResult) and scan.unreadable == []
    assert [(s.series_number, s.modality, s.description, s.slice_count) for s in scan] == [
        (1, "CT", "Topogram SCOUT", 2), (2, "CT", "Abdomen 1.0 B30f", 6), (3, "MR", "T1 axial", 4)]
    assert all(len(s.files) == s.slice_count and s.problems == [] for s in scan)


@pytest.mark.parametrize("rule,expected", [
    (None, "Abdomen 1.0 B30f"),  # most slices
    (SeriesRule(modality="MR"), "T1 axial"),
    (SeriesRule(modality=("CT",), description="scout|topogram"), "Topogram SCOUT"),
    (SeriesRule(modality="ct", exclude_description="scout"), "Abdomen 1.0 B30f"),
    (SeriesRule(min_slices=3, description="t1"), "T1 axial"),
])
def test_series_selection_by_rule(two_series, rule, expected):
    vol = read_dicom_series(two_series, rule)
    assert vol.meta["description"] == expected
    assert len(vol.meta["other_series"]) == 2 and vol.skipped == []


def test_series_selection_by_uid_and_no_match(two_series):
    scan = scan_dicom(two_series)
    assert read_dicom_series(scan, series_uid=scan[2].series_uid).modality == "MR"
    with pytest.raises(SeriesError, match=r"(?s)no series .* matches.*modality CT is not PT.*modality MR is not PT"):
        read_dicom_series(scan, SeriesRule(modality="PT"))
    with pytest.raises(SeriesError, match=r"(?s)2 readable slice\(s\), fewer than min_slices=5"):
        read_dicom_series(scan, SeriesRule(description="scout", min_slices=5))
    with pytest.raises(SeriesError, match="series 1.2.3 is not in"):
        read_dicom_series(scan, series_uid="1.2.3")
    with pytest.raises(ValueError, match="min_slices must be >= 1"):
        SeriesRule(min_slices=0)


def _reasons(vol) -> dict:
    return {os.path.basename(p): r for p, r in vol.skipped}


def test_each_fault_recorded_with_its_reason(tmp_path):
    hu = _phantom((8, 10, 12), seed=7)
    p = write_dicom_series(hu, tmp_path, spacing=(2.0, 1.0, 1.0))
    _faults.garbage(tmp_path / "junk.dcm")
    (tmp_path / "notes.txt").write_text("not an image")
    _faults.truncate(p[1], drop_bytes=40)  # inside the pixel data
    _faults.truncate(p[2], keep_fraction=0.3)  # inside the header
    _faults.duplicate(p[3], tmp_path / "resent.dcm", instance=99)
    _faults.remove_tag(p[4], "Rows")
    _faults.remove_tag(p[5], "ImagePositionPatient")
    write_dicom_series(np.zeros((1, 4, 4)), tmp_path, prefix="small",
                       series_uid=pydicom.dcmread(p[0]).SeriesInstanceUID, origin=(0, 0, 50.0))
    with pytest.warns(UserWarning, match="non-uniform slice spacing"):
        vol = read_dicom_series(tmp_path)
    reasons = _reasons(vol)
    assert set(reasons) == {"junk.dcm", "notes.txt", "IM0002.dcm", "IM0003.dcm", "resent.dcm", "IM0005.dcm",
                            "IM0006.dcm", "small0001.dcm"}
    assert reasons["junk.dcm"].startswith("not a DICOM file")
    assert "truncated or malformed pixel data" in reasons["IM0002.dcm"]
    assert "no pixel data (truncated file" in reasons["IM0003.dcm"]
    assert reasons["resent.dcm"].startswith("duplicate position 6.000 mm") and "IM0004.dcm" in reasons["resent.dcm"]
    assert reasons["IM0005.dcm"] == "missing required tag Rows"
    assert reasons["IM0006.dcm"] == "missing ImagePositionPatient (the other slices of the series have it)"
    assert reasons["small0001.dcm"] == "Rows x Columns = 4 x 4 differs from the series majority 10 x 12"
    kept = [0, 3, 6, 7]
    assert [os.path.basename(s) for s in vol.sources] == [f"IM{k + 1:04d}.dcm" for k in kept]
    np.testing.assert_array_equal(vol.array, hu[kept])
    assert vol.meta["slice_positions"] == pytest.approx([0.0, 6.0, 12.0, 14.0])
    assert any("non-uniform" in w for w in vol.meta["warnings"])
    with pytest.raises(SeriesError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path, nonuniform="error")


def test_compressed_syntax_without_decoder_names_packages(tmp_path):
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    p = write_dicom_series(_phantom((3, 6, 6)), tmp_path)
    _faults.compressed_garbage(p[1], JPEGLosslessSV1)
    vol = read_dicom_series(tmp_path)
    reason = _reasons(vol)["IM0002.dcm"]
    assert "JPEG Lossless" in reason and JPEGLosslessSV1 in reason
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in reason
    with pytest.raises(UnreadableFileError, match=r"IM0002\.dcm.*JPEG Lossless.*pylibjpeg"):
        read_image(p[1])


def test_corrupt_compressed_data_is_a_decode_error(tmp_path):
    p = write_dicom_series(_phantom((3, 6, 6)), tmp_path)
    _faults.compressed_garbage(p[0], JPEGBaseline8Bit)
    reason = _reasons(read_dicom_series(tmp_path))["IM0001.dcm"]
    assert "JPEG Baseline" in reason and ("could not be decoded" in reason or "pip install" in reason)


def test_unusable_series_lists_every_file(tmp_path):
    p = write_dicom_series(_phantom((3, 6, 6)), tmp_path)
    for path in p:
        _faults.truncate(path, drop_bytes=10)
    _faults.garbage(tmp_path / "junk.dcm")
    with pytest.raises(SeriesError, match="has no usable slice") as info:
        read_dicom_series(tmp_path)
    assert isinstance(info.value, InputError)
    assert sorted(os.path.basename(path) for path, _ in info.value.problems) == [
        "IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "junk.dcm"]
    assert all(name in str(info.value) for name in ("IM0001.dcm", "IM0003.dcm", "junk.dcm"))


def test_no_dicom_at_all(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(SeriesError, match=r"(?s)no DICOM series found.*a\.txt: not a DICOM file"):
        read_dicom_series(tmp_path)
    with pytest.raises(UnreadableFileError, match="no such file or folder"):
        scan_dicom(tmp_path / "missing")


def test_missing_geometry_falls_back_to_instance_number(tmp_path):
    hu = _phantom((4, 6, 6), seed=8)
    p = write_dicom_series(hu, tmp_path, reverse=True)
    for path in p:
        _faults.remove_tag(path, "ImagePositionPatient")
    with pytest.warns(UserWarning, match="ordered by InstanceNumber"):
        vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.array, hu[::-1])  # reverse=True numbered the last slice 1
    assert vol.spacing == pytest.approx((1.0, 1.0, 1.0))  # SliceThickness
    assert any("InstanceNumber" in w for w in vol.meta["warnings"])


def _multiframe(path, hu, z_step=2.0):
    """An enhanced-CT-like file: 3 frames with per-frame positions stored top to bottom."""
    single = write_dicom_series(hu[:1], os.path.dirname(path), prefix="tmp")[0]
    ds = pydicom.dcmread(single)
    os.remove(single)
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    order = [2, 0, 1]
    shared = Dataset()
    ori, meas = Dataset(), Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas.PixelSpacing, meas.SliceThickness = [0.5, 0.5], z_step
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([ori]), Sequence([meas])
    frames = []
    for k in order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, k * z_step]
        item.PlanePositionSequence = Sequence([pos])
        frames.append(item)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, tag)
    ds.NumberOfFrames = 3
    raw = (hu[order] + 1024).astype(np.int16)
    ds.PixelData = raw.tobytes()
    return _faults.save(ds, path)


def test_multiframe_file(tmp_path):
    hu = _phantom((3, 5, 7), seed=9)
    path = _multiframe(str(tmp_path / "mf.dcm"), hu)
    for vol in (read_dicom_series(tmp_path), read_image(path)):
        np.testing.assert_array_equal(vol.array, hu)
        assert vol.spacing == pytest.approx((2.0, 0.5, 0.5))
        assert vol.sources == [f"{path}[frame {f}]" for f in (1, 2, 0)]


def test_single_file_reads_as_2d(tmp_path):
    hu = _phantom((1, 5, 7), seed=10)
    path = write_dicom_series(hu, tmp_path, spacing=(3.0, 0.5, 0.25), origin=(1.0, 2.0, 3.0))[0]
    vol = read_dicom_file(path)
    assert vol.array.shape == (5, 7) and vol.spacing == pytest.approx((0.5, 0.25))
    np.testing.assert_array_equal(vol.array, hu[0])
    np.testing.assert_allclose(vol.voxel_to_patient((4, 6)), (1.0 + 6 * 0.25, 2.0 + 4 * 0.5, 3.0))


def test_window():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(window(hu, 40, 400), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(window(hu, 40, 400, out_range=(-1, 1)), [-1.0, -1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="window width must be > 0"):
        window(hu, 40, 0)


def test_gantry_tilt_keeps_the_shear(tmp_path):
    hu = _phantom((4, 6, 6), seed=11)
    paths = write_dicom_series(hu, tmp_path, spacing=(2.0, 1.0, 1.0))
    for k, path in enumerate(paths):  # each slice shifted 0.5 mm posterior per slice: a 14 degree tilt
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, 0.5 * k, 2.0 * k]
        _faults.save(ds, path)
    with pytest.warns(UserWarning, match=r"sheared by 14\.04 degrees"):
        vol = read_dicom_series(tmp_path)
    np.testing.assert_allclose(vol.affine[:3, 2], (0.0, 0.5, 2.0), atol=1e-9)
    assert vol.spacing == pytest.approx((2.0, 1.0, 1.0))  # distance between slice planes
    _assert_geometry_matches_files(vol)


def test_writer_validates_and_seeds_uids(tmp_path):
    a = write_dicom_series(np.zeros((2, 3, 3)), tmp_path / "a", uid_seed="s")
    b = write_dicom_series(np.zeros((2, 3, 3)), tmp_path / "b", uid_seed="s")
    uids = [(pydicom.dcmread(x).SeriesInstanceUID, pydicom.dcmread(x).SOPInstanceUID) for x in a + b]
    assert uids[:2] == uids[2:] and uids[0][1] != uids[1][1]
    assert not any(p.name.startswith(".") for p in (tmp_path / "a").iterdir())  # no temporary files left
    with pytest.raises(ValueError, match=r"volume_array must be \(z, y, x\)"):
        write_dicom_series(np.zeros((3, 3)), tmp_path)
    with pytest.raises(ValueError, match="do not fit int16"):
        write_dicom_series(np.full((1, 2, 2), 40000.0), tmp_path)
    with pytest.raises(ValueError, match="orthonormal"):
        write_dicom_series(np.zeros((1, 2, 2)), tmp_path, orientation=(1, 0, 0, 1, 0, 0))
    with pytest.raises(ValueError, match="nonuniform must be"):
        read_dicom_series(tmp_path / "a", nonuniform="ignore")
