"""Resampling through the affines: to a new spacing and back onto the source grid (linear images, nearest labels)."""
import numpy as np
import pytest

from deploysdk.io import Volume, affine_from_spacing, resample_like, resample_to_reference, resample_to_spacing


def _ramp_volume(shape=(5, 6, 7), spacing=(2.5, 0.8, 0.6)) -> Volume:
    """A linear function of the patient position: linear interpolation reproduces it exactly inside the grid."""
    vol = Volume(np.zeros(shape, np.float32), affine_from_spacing(spacing, origin=(3.0, -4.0, 5.0)), spacing)
    pts = vol.voxel_to_patient(np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1))
    vol.array = (pts @ np.array([0.5, -1.0, 2.0]) + 10).astype(np.float32)
    return vol


def test_to_spacing_geometry_and_values():
    vol = _ramp_volume()
    out = resample_to_spacing(vol, (1.0, 0.4, 0.3))
    assert out.spacing == (1.0, 0.4, 0.3) and out.array.shape == (11, 11, 13)
    np.testing.assert_allclose(out.affine[:3, 3], vol.affine[:3, 3])  # voxel (0, 0, 0) stays put
    np.testing.assert_allclose(np.diag(out.affine)[:3], (0.3, 0.4, 1.0))
    idx = np.stack(np.meshgrid(*map(np.arange, out.array.shape), indexing="ij"), -1)
    expected = out.voxel_to_patient(idx) @ np.array([0.5, -1.0, 2.0]) + 10
    np.testing.assert_allclose(out.array, expected, atol=1e-4)


def test_round_trip_back_to_source_geometry():
    vol = _ramp_volume()
    back = resample_like(resample_to_spacing(vol, (0.5, 0.5, 0.5)), vol)
    assert back.array.shape == vol.array.shape and np.array_equal(back.affine, vol.affine)
    np.testing.assert_allclose(back.array[1:-1, 1:-1, 1:-1], vol.array[1:-1, 1:-1, 1:-1], atol=1e-4)


def test_labels_use_nearest_and_keep_dtype():
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[1:3, 2:5, 1:4] = 2
    labels[0, 0, 0] = 1
    vol = Volume(labels, affine_from_spacing((2.0, 1.0, 1.0)), (2.0, 1.0, 1.0))
    fine = resample_to_spacing(vol, (0.5, 0.5, 0.5), label=True)
    assert fine.array.dtype == np.uint8 and set(np.unique(fine.array)) == {0, 1, 2}
    back = resample_like(fine, vol, label=True)
    np.testing.assert_array_equal(back.array, labels)


@pytest.mark.parametrize("angle", [0.0, 0.4])  # axis-aligned and general paths
def test_reference_grid_and_outside_is_cval(angle):
    src = _ramp_volume()
    rot = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    rot[:2, :2] = [[c, -s], [s, c]]
    ref_affine = rot @ affine_from_spacing((1.0, 0.5, 0.5), origin=(5.0, -3.0, 6.0))
    out = resample_to_reference(src.array, src.affine, (4, 6, 6), ref_affine, cval=-1024.0)
    ref = Volume(out, ref_affine, (1.0, 0.5, 0.5))
    pts = ref.voxel_to_patient(np.stack(np.meshgrid(*map(np.arange, out.shape), indexing="ij"), -1))
    inside = np.all((src.patient_to_voxel(pts) > -1e-6) & (src.patient_to_voxel(pts) < np.array(src.spatial_shape)
                                                                                        - 1 + 1e-6), axis=-1)
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(out[inside], (pts @ np.array([0.5, -1.0, 2.0]) + 10)[inside], atol=1e-4)
    far = np.any((src.patient_to_voxel(pts) < -0.5 - 1e-6) | (src.patient_to_voxel(pts) >
                                                              np.array(src.spatial_shape) - 0.5 + 1e-6), axis=-1)
    assert far.any() and np.all(out[far] == -1024.0)


def test_2d_and_validation():
    img = Volume(np.arange(20, dtype=np.float32).reshape(4, 5), affine_from_spacing((1.0, 1.0)), (1.0, 1.0))
    up = resample_to_spacing(img, (0.5, 0.5))
    assert up.array.shape == (7, 9)
    np.testing.assert_allclose(up.array[::2, ::2], img.array)
    with pytest.raises(ValueError, match="spacing must hold 2 positive values"):
        resample_to_spacing(img, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="order must be 0..5"):
        resample_to_spacing(img, (1.0, 1.0), order=7)
