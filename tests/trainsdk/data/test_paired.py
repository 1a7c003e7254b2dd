"""make_paired_modalities: deterministic pairs of one anatomy, the documented MR/CT contrast relation, splits and
datasets, and clear errors for bad arguments."""
import numpy as np
import pytest
import torch

from trainsdk.data import CT_HU, MR_SIGNAL, TISSUES, PairedConfig, hu_to_unit, make_paired_modalities, unit_to_hu


@pytest.fixture(scope="module")
def pairs():
    return make_paired_modalities(12, 48, seed=3)


def test_same_seed_same_pairs_other_seed_other_pairs(pairs):
    again = make_paired_modalities(12, 48, seed=3)
    for name in ("source", "target", "tissues"):
        np.testing.assert_array_equal(getattr(pairs, name), getattr(again, name))
    other = make_paired_modalities(12, 48, seed=4)
    assert not np.array_equal(pairs.target, other.target)


def test_shapes_dtypes_and_ranges(pairs):
    assert pairs.source.shape == pairs.target.shape == (12, 1, 48, 48)
    assert pairs.tissues.shape == (12, 48, 48) and pairs.tissues.dtype == np.int64
    assert pairs.source.dtype == pairs.target.dtype == np.float32
    assert pairs.target.min() >= 0.0 and pairs.target.max() <= 1.0 and pairs.source.min() >= 0.0
    assert pairs.tissue_names == TISSUES and len(pairs) == 12 and pairs.spatial_shape == (48, 48)
    present = set(np.unique(pairs.tissues).tolist())
    assert {TISSUES.index(t) for t in ("air", "fat", "soft_tissue", "organ", "bone")} <= present


def test_documented_contrast_relation(pairs):
    """Bone: brightest in CT, darker than every soft tissue and fat in MR; fat: brightest in MR, darker than every
    soft tissue in CT. No single increasing intensity map turns the MR into the CT."""
    mr, ct = pairs.tissue_means("source"), pairs.tissue_means("target")
    soft = ("soft_tissue", "organ")
    assert ct["bone"] > max(v for k, v in ct.items() if k != "bone")
    assert mr["bone"] < min(mr[k] for k in soft + ("fat",))
    assert mr["fat"] > max(v for k, v in mr.items() if k != "fat")
    assert ct["fat"] < min(ct[k] for k in soft) and ct["air"] < ct["fat"]
    assert mr["fat"] > mr["organ"] and ct["fat"] < ct["organ"]  # order reversed between the modalities


def test_ct_matches_the_hu_table_inside_tissues(pairs):
    """Away from partial-volume edges the CT is the tabulated HU (plus texture and 5-15 HU noise)."""
    from scipy import ndimage

    for tissue in ("soft_tissue", "bone"):
        k = TISSUES.index(tissue)
        core = np.stack([ndimage.binary_erosion(m, iterations=2) for m in pairs.tissues == k])
        hu = unit_to_hu(pairs.target[:, 0][core])
        assert abs(float(np.median(hu)) - CT_HU[tissue]) < 25.0


def test_hu_conversion_round_trip():
    np.testing.assert_allclose(hu_to_unit([-1000.0, 0.0, 1000.0]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(unit_to_hu(hu_to_unit(np.array([-100.0, 40.0, 900.0]))), [-100.0, 40.0, 900.0])
    assert set(CT_HU) == set(MR_SIGNAL) == set(TISSUES)


def test_without_noise_jitter_or_bias_mr_is_the_signal_table():
    cfg = PairedConfig(mr_jitter=0.0, mr_bias_strength=0.0, mr_noise_std=(0.0, 0.0), ct_noise_hu=(0.0, 0.0))
    p = make_paired_modalities(4, 48, seed=0, config=cfg)
    from scipy import ndimage

    for tissue in ("soft_tissue", "organ"):  # large regions: a core away from partial-volume edges
        core = np.stack([ndimage.binary_erosion(m, iterations=2) for m in p.tissues == TISSUES.index(tissue)])
        np.testing.assert_allclose(np.median(p.source[:, 0][core]), MR_SIGNAL[tissue], atol=0.02)


def test_split_subset_and_dataset(pairs):
    train, test = pairs.split(0.25, seed=0)
    assert len(train) + len(test) == 12 and len(test) >= 1
    ds = train.dataset()
    src, tgt = ds[0]
    assert isinstance(src, torch.Tensor) and src.shape == tgt.shape == (1, 48, 48)
    np.testing.assert_array_equal(tgt.numpy(), train.target[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be >= 1"),
    (dict(size=16), "at least 32"),
    (dict(size=(32, 32, 32)), "2D slices"),
    (dict(config=PairedConfig(lesions=(0, 5))), "lesions"),
    (dict(config=PairedConfig(gas_probability=1.5)), "gas_probability"),
    (dict(config=PairedConfig(mr_noise_std=(0.1, 0.0))), "low <= high"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make_paired_modalities(**{"n": 2, "size": 32, **kwargs})


def test_tissue_means_rejects_unknown_modality(pairs):
    with pytest.raises(ValueError, match="'source' or 'target'"):
        pairs.tissue_means("pet")
