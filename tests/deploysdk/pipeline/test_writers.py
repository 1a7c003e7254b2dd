import dataclasses
import datetime
import json
import os
import pathlib

import numpy as np
import pytest

from deploysdk.errors import InputError
from deploysdk.pipeline.writers import (DEFAULT_COLORS, pick_slices, to_jsonable, write_dicom_seg, write_overlay_png,
                                        write_report)


def _leftovers(folder) -> list[str]:
    return [f for f in os.listdir(folder) if f.startswith(".") or f.endswith(".tmp")]


# --- JSON report --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Timing:
    stage: str
    seconds: float


def test_report_converts_numpy_and_friends(tmp_path):
    report = {
        "model": {"name": "unet", "sha256": "ab" * 32},
        "volumes": {np.int64(1): {"voxels": np.int64(400), "ml": np.float32(1.5)}},
        "spacing": np.array([2.5, 0.8, 0.8]),
        "skipped": ({"file": pathlib.Path("a/b.dcm"), "why": "no pixel data"},),
        "flags": {np.bool_(True)},
        "nan": float("nan"), "inf": np.float64("inf"),
        "timings": [_Timing("infer", 0.25)],
        "at": datetime.datetime(2024, 1, 2, 3, 4, 5),
    }
    path = write_report(tmp_path / "report.json", report)
    assert path == str(tmp_path / "report.json")
    data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    assert data["volumes"] == {"1": {"voxels": 400, "ml": 1.5}}
    assert data["spacing"] == [2.5, 0.8, 0.8]
    assert data["skipped"] == [{"file": os.path.join("a", "b.dcm"), "why": "no pixel data"}]
    assert data["flags"] == [True] and data["nan"] is None and data["inf"] is None
    assert data["timings"] == [{"stage": "infer", "seconds": 0.25}]
    assert data["at"] == "2024-01-02T03:04:05"
    assert _leftovers(tmp_path) == []


def test_report_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="cannot write a object"):
        write_report(tmp_path / "r.json", {"x": object()})
    with pytest.raises(TypeError, match="must be a dict"):
        write_report(tmp_path / "r.json", [1, 2])
    assert not (tmp_path / "r.json").exists() and _leftovers(tmp_path) == []
    assert to_jsonable({"a": (np.int8(3), None)}) == {"a": [3, None]}


# --- PNG overlay --------------------------------------------------------------------------------------------------
def _read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def test_overlay_2d_pixels(tmp_path):
    image = np.zeros((8, 8), np.float32)
    image[:, 4:] = 100.0
    labels = np.zeros((8, 8), np.uint8)
    labels[2:7, 1:6] = 2
    path = write_overlay_png(image, labels, tmp_path / "o.png", window=(50, 100), alpha=0.5, scale=1,
                             colors={2: (255, 0, 0)})
    rgb = _read_png(path)
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])            # background, window low end
    np.testing.assert_array_equal(rgb[0, 7], [255, 255, 255])      # background, window high end
    np.testing.assert_array_equal(rgb[2, 3], [255, 0, 0])          # outline: opaque label colour
    np.testing.assert_array_equal(rgb[4, 2], [128, 0, 0])          # interior on black: 0.5 * 255 (rounded)
    np.testing.assert_array_equal(rgb[4, 4], [255, 128, 128])      # interior on white: 0.5 * 255 + 0.5 * 255
    assert _leftovers(tmp_path) == []


def test_overlay_volume_strip_of_busiest_slices(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 1, (6, 10, 12)).astype(np.float32)
    labels = np.zeros(vol.shape, np.uint8)
    labels[1, 2:4, 2:4] = 1          # 4 px
    labels[3, 2:8, 2:8] = 1          # 36 px
    labels[4, 1:6, 1:6] = 3          # 25 px
    assert pick_slices(labels, 2) == [3, 4]
    assert pick_slices(labels, 5) == [1, 3, 4]                     # slices without foreground are not shown
    assert pick_slices(np.zeros((5, 2, 2), np.uint8)) == [2]
    rgb = _read_png(write_overlay_png(vol, labels, tmp_path / "v.png", n_slices=2, scale=2))
    assert rgb.shape == (2 * 10, 2 * (12 + 2 + 12), 3)
    np.testing.assert_array_equal(rgb[2 * 2, 2 * 2], DEFAULT_COLORS[0])                  # slice 3's outline
    np.testing.assert_array_equal(rgb[2 * 1, 2 * (14 + 1)], DEFAULT_COLORS[2])           # slice 4's, label 3
    np.testing.assert_array_equal(rgb[:, 2 * 12:2 * 14], 0)                              # the gap
    rgb = _read_png(write_overlay_png(vol, labels, tmp_path / "w.png", slices=[0], scale=1))
    assert rgb.shape == (10, 12, 3) and (rgb[..., 0] == rgb[..., 1]).all()              # gray: no labels on z 0


@pytest.mark.parametrize("kw, match", [
    ({"slices": [9]}, "z indices"), ({"slices": "middle"}, "'auto'"), ({"window": (40,)}, r"\(center, width\)"),
    ({"window": (40, 0)}, "width must be > 0"), ({"alpha": 2}, "alpha"), ({"colors": [(1, 2, 3)]}, "dict"),
    ({"colors": {1: (300, 0, 0)}}, "0..255"),
])
def test_overlay_rejects_bad_arguments(tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        write_overlay_png(np.zeros((3, 4, 4)), np.ones((3, 4, 4), np.uint8), tmp_path / "x.png", **kw)
    with pytest.raises(InputError, match="same 2D"):
        write_overlay_png(np.zeros((4, 4)), np.zeros((4, 5), np.uint8), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


# --- DICOM SEG ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct_series(tmp_path_factory):
    """A 6-slice CT series written with pydicom (files numbered from the last slice, as head-first scanners do)."""
    from deploysdk.io.synthetic import write_dicom_series

    folder = tmp_path_factory.mktemp("ct")
    vol = np.random.default_rng(0).integers(-100, 200, (6, 16, 20)).astype(np.float64)
    files = write_dicom_series(vol, folder, spacing=(2.5, 0.8, 0.8), origin=(-8.0, -6.4, 30.0), reverse=True,
                               uid_seed="test-writers")
    return files


def _labels():
    lab = np.zeros((6, 16, 20), np.uint8)
    lab[1:4, 3:8, 4:9] = 1
    lab[2:5, 10:14, 12:18] = 4
    lab[3, 3:5, 12:14] = 4
    return lab


def test_dicom_seg_round_trip(ct_series, tmp_path):
    hd = pytest.importorskip("highdicom")
    import pydicom

    labels = _labels()
    path = write_dicom_seg(labels, ct_series, tmp_path / "seg.dcm", label_names={1: "liver", 4: "tumour"},
                           algorithm_name="unet3d-liver", algorithm_version="1.2.0")
    assert _leftovers(tmp_path) == []
    seg = hd.seg.segread(path)
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_series]
    uids = [ds.SOPInstanceUID for ds in src]
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID and seg.PatientID == src[0].PatientID
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert list(seg.segment_numbers) == [1, 2]
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["liver", "tumour"]
    algo = seg.get_segment_description(1).SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("unet3d-liver", "1.2.0")
    # one frame per (segment, slice holding it): slices 1..3 for liver, 2..4 for tumour
    assert seg.number_of_frames == 6
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence] == uids
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each frame points at the source slice it was cut from
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = uids.index(source)
        assert labels[z][labels[z] == (1, 4)[number - 1]].size > 0
    decoded = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    lut = np.array([0, 1, 4])
    np.testing.assert_array_equal(lut[decoded], labels)


def test_dicom_seg_refuses_mismatches(ct_series, tmp_path):
    pytest.importorskip("highdicom")
    labels = _labels()
    kw = {"label_names": {1: "liver", 4: "tumour"}, "algorithm_name": "a", "algorithm_version": "1"}
    with pytest.raises(InputError, match=r"labels \[4\] occur in the mask but have no entry"):
        write_dicom_seg(labels, ct_series, tmp_path / "s.dcm", **{**kw, "label_names": {1: "liver"}})
    with pytest.raises(InputError, match="must match the source series: 6 slices of 16x20"):
        write_dicom_seg(labels[:5], ct_series, tmp_path / "s.dcm", **kw)
    with pytest.raises(InputError, match="not in slice order"):
        write_dicom_seg(labels, [ct_series[i] for i in (0, 2, 1, 3, 4, 5)], tmp_path / "s.dcm", **kw)
    with pytest.raises(InputError, match="non-empty list"):
        write_dicom_seg(labels, str(ct_series[0]), tmp_path / "s.dcm", **kw)
    with pytest.raises(InputError, match="integer numpy array"):
        write_dicom_seg(labels.astype(np.float32), ct_series, tmp_path / "s.dcm", **kw)
    assert os.listdir(tmp_path) == []
