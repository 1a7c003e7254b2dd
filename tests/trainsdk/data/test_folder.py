"""FolderDataset on real files of every supported format, and its problem report."""
import os
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from trainsdk.data import DataError, FolderDataset


def write_png(path, arr):
    Image.fromarray(arr.astype(np.uint8)).save(path)


def write_nifti(path, arr, spacing):
    """``arr`` in array order (z, y, x) or (y, x); NIfTI stores (x, y, z)."""
    nib.save(nib.Nifti1Image(arr.T.astype(np.float32), np.diag(list(spacing[::-1]) + [1.0] * (4 - arr.ndim))), path)


def write_dicom(path, arr):
    """A minimal valid single-frame Secondary Capture file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, (ds.Rows, ds.Columns) = "OT", arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_csv(path, rows, header=("filename", "label")):
    with open(path, "w") as f:
        for row in ([header] if header else []) + list(rows):
            f.write(",".join(row) + "\n")


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 255, (12, 16)).astype(np.float32) for name in "abcdef"}


@pytest.fixture
def image_folder(tmp_path, arrays):
    """One image per format: a.png b.npy c.npz d.nii.gz e.dcm f (DICOM without suffix)."""
    root = tmp_path / "images"
    root.mkdir()
    write_png(root / "a.png", arrays["a"])
    np.save(root / "b.npy", arrays["b"])
    np.savez(root / "c.npz", image=arrays["c"], spacing=np.array([0.5, 0.7]))
    write_nifti(str(root / "d.nii.gz"), arrays["d"], (0.8, 0.9))
    write_dicom(root / "e.dcm", arrays["e"])
    write_dicom(root / "f", arrays["f"])
    return root


def test_every_format_with_csv_labels(image_folder, arrays):
    labels = {"a": "cyst", "b": "hemangioma", "c": "metastasis", "d": "cyst", "e": "metastasis", "f": "cyst"}
    names = {"a": "a.png", "b": "b.npy", "c": "c.npz", "d": "d.nii.gz", "e": "e.dcm", "f": "f"}
    write_csv(image_folder / "labels.csv", [(names[k], v) for k, v in labels.items()])  # inside root: ignored
    ds = FolderDataset(image_folder, labels_csv=image_folder / "labels.csv")
    assert ds.problems == [] and len(ds) == 6
    assert ds.class_names == ("cyst", "hemangioma", "metastasis")  # sorted names -> 0, 1, 2
    assert ds.class_to_index == {"cyst": 0, "hemangioma": 1, "metastasis": 2} and ds.num_classes == 3
    assert ds.files == ["a.png", "b.npy", "c.npz", "d.nii.gz", "e.dcm", "f"]
    for i, key in enumerate("abcdef"):
        image, label = ds[i]
        assert image.dtype == torch.float32 and image.shape == (1, 12, 16)
        np.testing.assert_array_equal(image[0].numpy(), arrays[key])  # each reader gives the stored pixels back
        assert label.dtype == torch.int64 and int(label) == ds.class_to_index[labels[key]]
    assert ds.spacings[2] == (0.5, 0.7) and ds.spacings[3] == pytest.approx((0.8, 0.9))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))
    assert x.shape == (6, 1, 12, 16) and y.tolist() == [0, 1, 2, 0, 2, 0]


def test_problems_are_all_reported_by_name(image_folder, tmp_path):
    (image_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    np.save(image_folder / "volume.npy", np.zeros((4, 12, 16), np.float32))  # 3D where 2D images are expected
    (image_folder / "notes.xyz").write_text("?")
    np.save(image_folder / "unlabeled.npy", np.zeros((12, 16), np.float32))
    csv = tmp_path / "labels.csv"
    write_csv(csv, [("a.png", "x"), ("b.npy", "y"), ("c.npz", "x"), ("d.nii.gz", "y"), ("e.dcm", "x"), ("f", "y"),
                    ("broken.png", "x"), ("volume.npy", "y"), ("missing.png", "x"), ("a.png", "y"), ("lonely.npy",)])
    with pytest.raises(DataError) as info:
        FolderDataset(image_folder, labels_csv=csv)
    message, problems = str(info.value), dict(info.value.problems)
    expected = {
        str(image_folder / "broken.png"): "not a readable image",
        str(image_folder / "volume.npy"): "wrong shape (4, 12, 16): 3 spatial axes, expected 2 (pass ndim=3",
        str(image_folder / "notes.xyz"): "unsupported file type",
        str(image_folder / "unlabeled.npy"): "no label row",
        f"{csv}:10": "label row for 'missing.png', but no such image file",
        f"{csv}:11": "'a.png' is listed again (first at",
        f"{csv}:12": "has 1 column(s); expected at least 2",
    }
    assert len(problems) == len(expected) == len(info.value.problems)
    for path, reason in expected.items():
        assert reason in problems[path], (path, problems.get(path))
        assert path in message  # the exception text names every one of them
    assert message.startswith("7 problem(s) in the dataset at")


def test_skip_keeps_going_records_and_warns_once(image_folder, tmp_path):
    (image_folder / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    csv = tmp_path / "labels.csv"
    write_csv(csv, [(n, "0") for n in ("a.png", "b.npy", "c.npz", "d.nii.gz", "e.dcm", "f", "broken.npy")] +
              [("ghost.png", "1")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FolderDataset(image_folder, labels_csv=csv, on_error="skip")
    assert [str(w.message) for w in caught if "left out" in str(w.message)] == [
        f"FolderDataset {image_folder}: left out 2 unusable file(s)/row(s); 6 usable. "
        "See dataset.problems for each path and reason."]
    assert len(ds) == 6 and "broken.npy" not in ds.files
    assert sorted(p for p, _ in ds.problems) == sorted([str(image_folder / "broken.npy"), f"{csv}:9"])
    assert ds.class_names == ("0", "1") and ds.num_classes == 2  # integer labels keep their values


def test_masks_matched_by_stem(tmp_path):
    root, masks = tmp_path / "img", tmp_path / "seg"
    root.mkdir(), masks.mkdir()
    rng = np.random.default_rng(1)
    truth = {}
    for name in ("p1", "p2", "p3"):
        truth[name] = rng.integers(0, 3, (10, 14))
        np.save(root / f"{name}.npy", rng.random((10, 14)).astype(np.float32))
    write_png(masks / "p1_seg.png", truth["p1"])
    np.save(masks / "p2_seg.npy", truth["p2"].astype(np.int16))
    write_nifti(str(masks / "p3_seg.nii.gz"), truth["p3"].astype(np.float32), (1.0, 1.0))
    ds = FolderDataset(root, masks_dir=masks, mask_suffix="_seg")
    assert len(ds) == 3 and ds.problems == []
    for i, name in enumerate(("p1", "p2", "p3")):
        image, mask = ds[i]
        assert image.shape == (1, 10, 14) and mask.dtype == torch.int64
        np.testing.assert_array_equal(mask.numpy(), truth[name])


def test_mask_problems(tmp_path):
    root, masks = tmp_path / "img", tmp_path / "seg"
    root.mkdir(), masks.mkdir()
    for name in ("ok", "small", "soft", "nomask"):
        np.save(root / f"{name}.npy", np.zeros((8, 8), np.float32))
    np.save(masks / "ok.npy", np.ones((8, 8), np.uint8))
    np.save(masks / "small.npy", np.ones((4, 8), np.uint8))
    np.save(masks / "soft.npy", np.full((8, 8), 0.5, np.float32))
    np.save(masks / "stray.npy", np.ones((8, 8), np.uint8))
    with pytest.raises(DataError) as info:
        FolderDataset(root, masks_dir=masks)
    problems = dict(info.value.problems)
    assert "does not match its image (8, 8)" in problems[str(masks / "small.npy")]
    assert "non-negative integers" in problems[str(masks / "soft.npy")]
    assert "mask without an image" in problems[str(masks / "stray.npy")]
    assert "no mask named nomask.*" in problems[str(root / "nomask.npy")]
    assert len(problems) == 4


def test_volumes_fixed_shape_and_classes_order(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    write_nifti(str(root / "v1.nii"), vol, (3.0, 1.0, 0.5))
    np.save(root / "v2.npy", vol[:, :, :5])
    csv = tmp_path / "y.csv"
    write_csv(csv, [("v1.nii", "tumour"), ("v2.npy", "normal")], header=None)  # headerless CSV
    ds = FolderDataset(root, labels_csv=csv, ndim=3, classes=["tumour", "normal"], on_error="skip")
    image, label = ds[0]
    np.testing.assert_array_equal(image[0].numpy(), vol)
    assert ds.spacings[0] == pytest.approx((3.0, 1.0, 0.5)) and int(label) == 0 and int(ds[1][1]) == 1
    with pytest.raises(DataError, match=r"wrong shape: spatial shape \(4, 5, 5\), expected \(4, 5, 6\)"):
        FolderDataset(root, labels_csv=csv, ndim=3, shape=(4, 5, 6))
    with pytest.raises(DataError, match="label 'tumour' for 'v1.nii' is not one of"):
        FolderDataset(root, labels_csv=csv, ndim=3, classes=["normal"])


def test_unlabeled_folder_and_changed_files(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    np.save(root / "x.npy", np.ones((6, 6), np.float32))
    ds = FolderDataset(root, validate=False)
    assert ds[0].shape == (1, 6, 6)  # image only
    (root / "x.npy").write_bytes(b"gone bad")
    with pytest.raises(DataError, match=r"cannot read item 0 .*\n  .*x\.npy: not a readable npy file"):
        ds[0]


def test_colour_png_becomes_luminance(tmp_path):
    root = tmp_path / "rgb"
    root.mkdir()
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 100
    Image.fromarray(rgb).save(root / "c.png")
    assert FolderDataset(root)[0][0, 0, 0].item() == pytest.approx(29.9, abs=0.01)  # 0.299 * 100 (ITU-R 601-2)
    assert FolderDataset(root, gray=False)[0].shape == (3, 4, 4)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"labels_csv": "x.csv", "masks_dir": "m"}, ValueError, "not both"),
    ({"on_error": "ignore"}, ValueError, "on_error must be 'raise' or 'skip'"),
    ({"ndim": 4}, ValueError, "ndim must be 2"),
    ({"shape": (3, 3, 3)}, ValueError, "shape must have 2 values"),
    ({"labels_csv": "nowhere.csv"}, DataError, "cannot read the labels CSV"),
    ({"masks_dir": "nowhere"}, DataError, "masks_dir .* is not a folder"),
])
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        FolderDataset(tmp_path, **{k: (str(tmp_path / v) if isinstance(v, str) and k != "on_error" else v)
                                   for k, v in kwargs.items()})
    with pytest.raises(DataError, match="is not a folder"):
        FolderDataset(tmp_path / "absent")


def test_csv_header_detection(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    np.save(root / "a.npy", np.zeros((3, 3), np.float32))
    csv = tmp_path / "c.csv"
    write_csv(csv, [("a.npy", "7", "x")], header=("Image", "Score", "Diagnosis"))
    ds = FolderDataset(root, labels_csv=csv)  # recognized: "image" and "diagnosis"
    assert ds.class_names == ("x",)
    ds = FolderDataset(root, labels_csv=csv, label_column="score")
    assert ds.class_names == ("7",) and int(ds[0][1]) == 7
    with pytest.raises(DataError, match="has no column 'grade'"):
        FolderDataset(root, labels_csv=csv, label_column="grade")
    os.remove(csv)
    write_csv(csv, [("a.npy",)], header=("filename",))
    with pytest.raises(DataError, match="names only one of the two columns"):
        FolderDataset(root, labels_csv=csv)
