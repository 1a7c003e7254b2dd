"""The clinical pipeline end to end on real files (pydicom's and nibabel's test data, synthetic DICOM series written
here): geometry round trips, HU, every input file accounted for, tiled == whole-image inference, the FCN class
map, thread safety, no torch, atomic outputs, errors."""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from deploysdk import Runtime, cli
from deploysdk.errors import InputError, SeriesError
from deploysdk.io import SeriesRule, read_nifti, write_dicom_series
from deploysdk.pipeline import Pipeline, Preprocessing, TileConfig, TiledInferer, grown_roi, importance_map
from deploysdk.pipeline import pipeline as pipeline_module

from ._models import export_small, threshold_model, threshold_onnx

pydicom_data = pytest.importorskip("pydicom.data")
nib_testing = pytest.importorskip("nibabel.testing")

WINDOW = Preprocessing(intensity="window", window=(50.0, 100.0), labels={0: "background", 1: "sphere"})
OBLIQUE = (0.9, 0.1, 0.0, 0.0, 0.0, -1.0)  # rows run mostly along +x, columns downwards (a tilted coronal plane)


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _sphere(shape, centre, radius_mm, spacing):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)  # (z, y, x, 3)
    d = (grid - np.asarray(centre)) * np.asarray(spacing)
    return (d ** 2).sum(-1) < radius_mm ** 2


def _test_file(name):
    path = pydicom_data.get_testdata_file(name)
    if path is None or not os.path.isfile(path):
        pytest.skip(f"pydicom test file {name} is not installed here")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"3d": threshold_model(d / "thr3d.onnx", 3, WINDOW, name="thr3d"),
            "2d": threshold_model(d / "thr2d.onnx", 2, WINDOW, name="thr2d"),
            "bare": threshold_onnx(d / "bare.onnx", 3)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """An oblique, non-isotropic CT series (files numbered from the last slice) with a sphere of 100 HU, plus
    real files from pydicom that are not part of it: another CT series, MR files (one truncated), an RT plan, junk,
    and a hidden file."""
    root = tmp_path_factory.mktemp("study")
    spacing = (2.5, 0.7, 0.9)
    inside = _sphere((14, 40, 36), (6.5, 19.0, 17.0), 8.0, spacing)
    hu = np.where(inside, 100.0, -1000.0)
    files = write_dicom_series(hu, root / "ct", spacing=spacing, origin=(-12.0, 30.0, 55.5), orientation=_oblique(),
                               reverse=True, series_description="abdomen portal", uid_seed="pipeline-test")
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_truncated.dcm", "rtplan_truncated.dcm"):
        shutil.copy(_test_file(name), root / name)
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return {"root": str(root), "hu": hu, "files": files, "spacing": spacing}


def _oblique():
    row = _unit(OBLIQUE[:3])
    col = _unit(np.cross(row, (0.0, 1.0, 0.3)))
    return tuple(row) + tuple(col)


def _all_files(folder):
    return {os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs}


# --- geometry, HU, accounting ---------------------------------------------------------------------------------------
def test_dicom_study_mask_lands_on_the_sphere_and_every_file_is_accounted_for(models, study, tmp_path):
    rule = SeriesRule(modality="CT", description="portal")
    with Pipeline.from_model(models["3d"], series_rule=rule) as pipe:
        result = pipe(study["root"], tmp_path / "out")
    truth = study["hu"] > 50
    assert result.labels.shape == truth.shape and result.labels.dtype == np.uint8
    np.testing.assert_array_equal(result.labels, truth)  # no resampling in this model: exact, voxel for voxel
    assert result.volumes["sphere"]["voxels"] == int(truth.sum())
    assert result.volumes["sphere"]["ml"] == pytest.approx(truth.sum() * np.prod(study["spacing"]) / 1000)
    # every file under the input is either used or skipped with a reason
    used, skipped = set(result.inputs_used), {p: r for p, r in result.inputs_skipped}
    assert used == set(study["files"]) and used.isdisjoint(skipped)
    assert used | set(skipped) == _all_files(study["root"])
    base = {os.path.basename(p): r for p, r in skipped.items()}
    assert "another series" in base["CT_small.dcm"] and "does not match 'portal'" in base["CT_small.dcm"]
    assert "modality MR is not CT" in base["MR_small.dcm"] and "another series" in base["MR_truncated.dcm"]
    assert "missing required tags" in base["rtplan_truncated.dcm"]
    assert "not a DICOM file" in base["notes.txt"] and "hidden" in base[".DS_Store"]
    # outputs: the NIfTI mask carries the source affine, the report says what happened
    assert sorted(os.listdir(tmp_path / "out")) == ["mask.nii.gz", "overlay.png", "report.json", "seg.dcm"]
    mask = read_nifti(tmp_path / "out" / "mask.nii.gz", dtype=None)
    np.testing.assert_array_equal(mask.array, result.labels)
    np.testing.assert_allclose(mask.affine, result.volume.affine, atol=1e-4)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"]["name"] == "thr3d" and len(report["model"]["sha256"]) == 64
    assert report["model"]["backend"] == "onnxruntime" and report["input"]["kind"] == "dicom-series"
    assert set(report["timings_s"]) == {"read", "preprocess", "infer", "postprocess", "write"}
    assert len(report["inputs"]["used"]) + len(report["inputs"]["skipped"]) == len(_all_files(study["root"]))
    assert report["labels"]["sphere"]["voxels"] == int(truth.sum())


def test_dicom_seg_references_the_source_series(models, study, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    with Pipeline.from_model(models["3d"], series_rule=SeriesRule(modality="CT", min_slices=2)) as pipe:
        result = pipe(study["root"], tmp_path)
    seg = pydicom.dcmread(result.outputs["seg"])
    source = pydicom.dcmread(study["files"][0], stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == source.StudyInstanceUID
    refs = {r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence}
    assert refs == {source.SeriesInstanceUID}
    assert seg.SegmentSequence[0].SegmentLabel == "sphere"
    assert int(seg.NumberOfFrames) == int((result.labels.reshape(result.labels.shape[0], -1) > 0).any(1).sum())


def test_resampling_to_the_model_spacing_and_back_keeps_the_geometry(study, tmp_path):
    spec = Preprocessing(spacing=(2.0, 2.0, 2.0), intensity="window", window=(50.0, 100.0), labels={1: "sphere"})
    path = threshold_model(tmp_path / "iso2mm.onnx", 3, spec)
    with Pipeline.from_model(path, series_rule=SeriesRule(modality="CT", min_slices=2)) as pipe:
        result = pipe(study["root"])
    truth = study["hu"] > 50
    assert result.model_geometry["resampled"] and result.model_geometry["spacing_mm"] == [2.0, 2.0, 2.0]
    assert result.labels.shape == truth.shape  # back on the source grid
    dice = 2 * (result.labels.astype(bool) & truth).sum() / (result.labels.sum() + truth.sum())
    assert dice > 0.85
    vol = result.volume
    centre_mask = vol.voxel_to_patient(np.argwhere(result.labels).mean(0))
    centre_truth = vol.voxel_to_patient(np.argwhere(truth).mean(0))
    assert np.linalg.norm(centre_mask - centre_truth) < 1.0  # mm, with 2 mm model voxels
    assert abs(result.volumes["sphere"]["ml"] - 4 / 3 * np.pi * 8.0 ** 3 / 1000) < 0.25 * 2.14


def test_ct_small_in_hounsfield_units(models):
    """pydicom's CT_small.dcm: stored values x RescaleSlope + RescaleIntercept; label 1 exactly where HU > 50."""
    pydicom = pytest.importorskip("pydicom")
    path = _test_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    with Pipeline.from_model(models["2d"]) as pipe:
        result = pipe(path)
    assert result.input_kind == "dicom-file" and result.volume.modality == "CT"
    np.testing.assert_allclose(result.volume.array, hu)
    np.testing.assert_array_equal(result.labels, hu > 50)
    entry = result.volumes["sphere"]
    assert entry["voxels"] == int((hu > 50).sum()) and entry["ml"] is None  # a 2D image has no slice thickness
    assert entry["mm2"] == pytest.approx(entry["voxels"] * float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]))
    assert result.inputs_used == [path] and result.inputs_skipped == []


def test_nibabel_nifti_mask_keeps_the_file_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    src = os.path.join(nib_testing.data_path, "anatomical.nii")
    spec = Preprocessing(intensity="minmax", clip_percentiles=(0.0, 100.0), labels={1: "bright"})
    path = threshold_model(tmp_path / "thr.onnx", 3, spec)
    with Pipeline.from_model(path, largest_component=True) as pipe:
        result = pipe(src, tmp_path / "out")
    mask, image = nib.load(result.outputs["mask"]), nib.load(src)
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    data = np.asarray(image.dataobj, dtype=np.float64)
    assert mask.shape == data.shape
    lo, hi = data.min(), data.max()
    bright = (data - lo) / (hi - lo) > 0.5
    got = np.asarray(mask.dataobj) > 0
    assert got.sum() > 0 and np.all(got <= bright)  # largest component: a subset of the thresholded voxels
    assert result.volumes["bright"]["voxels"] == int(got.sum())


def test_four_channel_nifti_refused_for_a_one_channel_model(models):
    src = os.path.join(nib_testing.data_path, "example4d.nii.gz")
    with Pipeline.from_model(models["3d"]) as pipe, pytest.raises(InputError, match="2 channels; the model takes 1"):
        pipe(src)


# --- inference: tiling, whole images, 2D on 3D, FCN ---------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_unet(tmp_path_factory):
    """Ronneberger's valid-convolution U-Net, small (depth 2, 4 base channels): output 20 px smaller per side."""
    torch = pytest.importorskip("torch")
    from trainsdk.models import create_model

    torch.manual_seed(0)
    model = create_model("unet_original", depth=2, base_width=4, num_classes=3).eval()
    path = export_small(model, tmp_path_factory.mktemp("unet") / "unet_valid.onnx", model.example_input(),
                        Preprocessing(intensity="zscore"))
    return model, path


def test_tiled_inference_equals_the_whole_image_and_pytorch(valid_unet):
    torch = pytest.importorskip("torch")
    model, path = valid_unet
    image = np.random.default_rng(3).normal(size=(100, 88)).astype(np.float32)
    # window 76 -> 36-pixel tiles, steps of 24: every window starts on the pooling grid, so overlap-tile is exact
    tiled = Pipeline.from_model(path, tile=TileConfig(roi_size=(76, 76), overlap=1 / 3, batch_size=2))
    whole = Pipeline.from_model(path, tile=None)
    a, b = tiled(image, probabilities=True), whole(image, probabilities=True)
    assert a.model_geometry["window"] == [76, 76] and b.model_geometry["window"] == [140, 128]
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    z = (image - image.mean()) / image.std()
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(np.pad(z, 20, mode="reflect"))[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(b.probabilities, ref, atol=1e-4)
    np.testing.assert_array_equal(a.labels, ref.argmax(0))
    # a 2D model on a volume runs slice by slice
    volume = np.stack([image, image[::-1].copy()])
    c = tiled(volume, probabilities=True)
    np.testing.assert_allclose(c.probabilities[:, 0], a.probabilities, atol=1e-5)
    np.testing.assert_array_equal(c.labels[1], tiled(image[::-1].copy()).labels)
    # the same pipeline on the torch backend (the eager model behind a Runtime) agrees with ONNX Runtime
    eager = Pipeline(Runtime(model, backend="torch"), Preprocessing(intensity="zscore"),
                     tile=TileConfig(roi_size=(76, 76), overlap=1 / 3, batch_size=2))
    assert eager.model.backend == "torch" and eager.model.sha256 is None
    np.testing.assert_allclose(eager(image, probabilities=True).probabilities, a.probabilities, atol=1e-4)
    tiled.close(), whole.close()


def test_fcn_gives_a_class_map_over_an_arbitrary_size_image(tmp_path):
    torch = pytest.importorskip("torch")
    from trainsdk.models import create_model

    torch.manual_seed(0)
    model = create_model("fcn32s", num_classes=3, in_channels=1, hidden_dim=16, zero_init_scores=False).eval()
    path = export_small(model, tmp_path / "fcn32s.onnx", torch.randn(1, 1, 64, 64), Preprocessing(intensity="zscore"))
    image = np.random.default_rng(4).normal(size=(70, 95)).astype(np.float32)
    with Pipeline.from_model(path, tile=None) as pipe:
        result = pipe(image)
    assert result.labels.shape == (70, 95) and result.model_geometry["window"] == [70, 95]
    with torch.no_grad():
        ref = model(torch.from_numpy((image - image.mean()) / image.std())[None, None])[0].numpy()
    np.testing.assert_array_equal(result.labels, ref.argmax(0))
    assert len(np.unique(result.labels)) > 1  # a map, not one class


def test_larger_tiles_cover_the_image_with_fewer_voxels():
    assert grown_roi((1024, 1024), (128, 128), (1024, 1024), (0, 0), 0.25, 16) == (1024, 1024)
    assert grown_roi((1000,), (128,), (1024,), (0,), 0.25, 16) == (1008,)
    assert grown_roi((3000,), (128,), (1024,), (0,), 0.25, 16)[0] <= 1024
    assert grown_roi((300,), (44,), (400,), (20,), 0.25, 4, -4) == (340,)  # valid conv: 300 + 2 x 20, as 4k - 4
    seen = []

    def model(batch):
        seen.append(batch.shape)
        return batch

    image = np.random.default_rng(5).normal(size=(1, 200, 150)).astype(np.float32)
    out = TiledInferer(model, TileConfig(roi_size=(32, 32), max_roi_size=(256, 256), roi_step=16, border=0))(image)
    np.testing.assert_allclose(out, image, atol=1e-6)
    assert seen == [(1, 1, 208, 160)]


def test_gaussian_monai_is_monai_importance_map():
    monai_utils = pytest.importorskip("monai.data.utils")
    for shape in [(9, 12), (64, 64), (16, 24, 20)]:
        ours = importance_map(shape, "gaussian_monai", 0.125)
        ref = monai_utils.compute_importance_map(shape, mode="gaussian", sigma_scale=0.125).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


# --- embedding: threads, no torch, atomic outputs, CLI --------------------------------------------------------------
def test_thread_safe_with_four_threads(models):
    rng = np.random.default_rng(6)
    images = [rng.normal(50, 60, size=(12, 40, 40)).astype(np.float32) for _ in range(8)]
    pipe = Pipeline.from_model(models["3d"], tile=TileConfig(roi_size=(8, 16, 16), batch_size=3))
    expected = [pipe(im).labels for im in images]
    got, errors = {}, []

    def work(i):
        try:
            for k in range(i, len(images), 4):
                got[k] = pipe(images[k]).labels
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for k, labels in enumerate(expected):
        np.testing.assert_array_equal(got[k], labels)
        np.testing.assert_array_equal(labels, images[k] > 50)


def test_pipeline_never_imports_torch(models, tmp_path):
    code = f"""
import sys, numpy as np
from deploysdk.pipeline import Pipeline
with Pipeline.from_model({models['3d']!r}) as pipe:
    r = pipe(np.full((4, 20, 20), 80, np.float32), {str(tmp_path / 'out')!r})
assert r.labels.all(), r.labels.mean()
assert 'torch' not in sys.modules, 'torch was imported'
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_a_failed_run_leaves_no_output_files(models, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline_module, "write_overlay_png", broken)
    with Pipeline.from_model(models["3d"]) as pipe, pytest.raises(OSError, match="disk full"):
        pipe(np.zeros((4, 16, 16), np.float32), tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other.txt").write_text("x")
    with Pipeline.from_model(models["3d"]) as pipe, pytest.raises(OSError):
        pipe(np.zeros((4, 16, 16), np.float32), tmp_path / "kept")
    assert os.listdir(tmp_path / "kept") == ["other.txt"]  # no mask, no staging folder


def test_cli_run_on_a_study_and_still_on_npy(models, study, tmp_path, capsys):
    rc = cli.main(["run", models["3d"], "--input", study["root"], "--output", str(tmp_path / "out"),
                   "--modality", "CT", "--series-description", "portal"])
    text = capsys.readouterr().out
    assert rc == 0 and "label:   sphere" in text and "skipped" in text
    assert (tmp_path / "out" / "mask.nii.gz").is_file() and (tmp_path / "out" / "report.json").is_file()
    np.save(tmp_path / "x.npy", np.ones((1, 1, 4, 4, 4), np.float32))
    assert cli.main(["run", models["3d"], "--input", str(tmp_path / "x.npy")]) == 0
    assert "output output: float32[1, 2, 4, 4, 4]" in capsys.readouterr().out
    assert cli.main(["run", models["3d"], "--input", study["root"]]) == 2
    assert "--output DIR" in capsys.readouterr().err


# --- errors -------------------------------------------------------------------------------------------------------
def test_errors_name_what_was_wrong(models, tmp_path):
    with pytest.raises(InputError, match="carries no 'sdk.preprocessing' metadata"):
        Pipeline.from_model(models["bare"])
    (tmp_path / "empty").mkdir()
    with Pipeline.from_model(models["3d"]) as pipe:
        with pytest.raises(SeriesError, match="no DICOM series found"):
            pipe(str(tmp_path / "empty"))
        bad = tmp_path / "bad"
        bad.mkdir()
        for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
            shutil.copy(_test_file(name), bad / name)
        with pytest.raises(SeriesError, match="no usable slice") as info:
            pipe(str(bad))
        assert {os.path.basename(p) for p, _ in info.value.problems} == {"MR_truncated.dcm", "rtplan_truncated.dcm"}
        with pytest.raises(InputError, match="3D model cannot run on a 2D image"):
            pipe(np.zeros((16, 16), np.float32))
        with pytest.raises(TypeError, match="source must be"):
            pipe(42)
    with pytest.raises(InputError, match="no sdk.input_contract default_size"):
        Pipeline.from_model(models["bare"], preprocessing=WINDOW)
    cls = threshold_onnx(tmp_path / "cls.onnx", 2, classifier=True)
    with pytest.raises(InputError, match="not a class map"):
        Pipeline.from_model(cls, preprocessing=WINDOW, tile=None)
    with pytest.raises(InputError, match="threshold"):
        Pipeline.from_model(models["3d"], threshold=1.5)
