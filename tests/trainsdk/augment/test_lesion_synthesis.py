"""Lesion synthesis: placement inside the organ, untouched surroundings, feathered core, Poisson equation."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from trainsdk.augment import LesionPlacementError, paste_lesion, poisson_blend, synthesize_lesions


def _disk(size, centre, radius):
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in size], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


@pytest.fixture
def case():
    """A bright disk lesion on a noisy 40x40 background, a noisy 64x64 healthy image, a round organ mask."""
    g = torch.Generator().manual_seed(0)
    lesion_mask = _disk((40, 40), (15, 22), 5)
    lesion = 0.2 + 0.05 * torch.rand(1, 40, 40, generator=g, dtype=torch.float64) + 0.6 * lesion_mask
    healthy = 0.3 + 0.05 * torch.rand(1, 64, 64, generator=g, dtype=torch.float64)
    organ = _disk((64, 64), (32, 32), 16)
    return lesion, lesion_mask, healthy, organ


@pytest.mark.parametrize("blend", ["feathered", "poisson"])
def test_lesion_lands_inside_the_organ_and_nothing_else_changes(case, blend):
    lesion, lesion_mask, healthy, organ = case
    offsets = set()
    for seed in range(4):
        r = paste_lesion(healthy, lesion, lesion_mask, organ_mask=organ, blend=blend,
                         generator=torch.Generator().manual_seed(seed))
        assert r.mask.dtype == torch.bool and not (r.mask & ~organ).any()
        box = tuple(slice(o, o + 11) for o in r.offset)  # the disk's bounding box is 11 x 11
        assert torch.equal(r.mask[box], lesion_mask[10:21, 17:28]) and r.mask.sum() == lesion_mask.sum()
        assert torch.equal(r.image[:, ~r.mask], healthy[:, ~r.mask])
        assert not torch.equal(r.image[:, r.mask], healthy[:, r.mask])
        offsets.add(r.offset)
    assert len(offsets) > 1  # random placement


def test_3d_feathered_paste_stays_in_the_organ():
    g = torch.Generator().manual_seed(2)
    lesion_mask = _disk((12, 12, 12), (6, 6, 6), 3).to(torch.uint8) * 2  # label value 2 is kept
    lesion = torch.rand(1, 12, 12, 12, generator=g, dtype=torch.float64) + lesion_mask
    healthy = torch.rand(1, 20, 24, 28, generator=g, dtype=torch.float64)
    organ = _disk((20, 24, 28), (10, 12, 14), 7)
    r = paste_lesion(healthy, lesion, lesion_mask, organ_mask=organ, label="metastasis", generator=g)
    assert r.mask.dtype == torch.uint8 and set(r.mask.unique().tolist()) == {0, 2} and r.label == "metastasis"
    inside = r.mask != 0
    assert not (inside & ~organ).any() and inside.sum() == (lesion_mask != 0).sum()
    assert torch.equal(r.image[:, ~inside], healthy[:, ~inside])


def test_feathered_core_is_the_lesion_and_the_rim_is_a_mix(case):
    lesion, lesion_mask, healthy, _ = case
    r = paste_lesion(healthy, lesion, lesion_mask, blend="feathered", feather=2.0, location=(20, 30))
    d = torch.from_numpy(ndimage.distance_transform_edt(lesion_mask[10:21, 17:28].numpy()))
    placed, src = r.image[0, 20:31, 30:41], lesion[0, 10:21, 17:28]
    core, rim = d >= 2, (d > 0) & (d < 2)
    assert torch.equal(placed[core], src[core])
    alpha = (d[rim] / 2.0)
    torch.testing.assert_close(placed[rim], alpha * src[rim] + (1 - alpha) * healthy[0, 20:31, 30:41][rim])


@pytest.mark.parametrize("spatial", [(40, 40), (12, 14, 16)])
def test_poisson_keeps_the_lesion_gradients_and_meets_the_healthy_boundary(spatial):
    """With the healthy boundary equal to lesion + c, the unique solution inside is lesion + c."""
    g = torch.Generator().manual_seed(1)
    lesion_mask = _disk(spatial, [s / 2 for s in spatial], 4)
    lesion = torch.rand(2, *spatial, generator=g, dtype=torch.float64) + 0.5 * lesion_mask
    healthy = torch.rand(2, *(s + 10 for s in spatial), generator=g, dtype=torch.float64)
    shift = 5  # lesion pixel p lands at p + shift along every axis
    ring = torch.from_numpy(ndimage.binary_dilation(lesion_mask.numpy())) & ~lesion_mask
    region = (slice(None),) + tuple(slice(shift, shift + s) for s in spatial)  # healthy pixels under the lesion image
    healthy[region][:, ring] = lesion[:, ring] + 0.7  # (a view) the boundary the solution must meet
    location = tuple(int(b.min()) + shift for b in np.nonzero(lesion_mask.numpy()))
    r = paste_lesion(healthy, lesion, lesion_mask, blend="poisson", location=location)
    out = r.image[region]
    torch.testing.assert_close(out[:, lesion_mask], lesion[:, lesion_mask] + 0.7, rtol=0, atol=1e-9)
    assert torch.equal(out[:, ring], healthy[region][:, ring])
    assert r.offset == location and torch.equal(r.mask[region[1:]], lesion_mask)


def test_poisson_blend_solves_the_discrete_equation():
    rng = np.random.default_rng(0)
    target, source = rng.random((1, 20, 20)), rng.random((1, 20, 20))
    mask = np.zeros((20, 20), bool)
    mask[4:15, 6:13] = True
    mask[9, 13:16] = True  # an irregular shape
    f = poisson_blend(target, source, mask)[0]
    lap = lambda a: 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]  # noqa: E731
    inner = mask[1:-1, 1:-1]
    np.testing.assert_allclose(lap(f)[inner], lap(source[0])[inner], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(f[~mask], target[0][~mask])
    with pytest.raises(ValueError, match="touches the array border"):
        poisson_blend(target, source, np.pad(mask[1:, :], ((0, 1), (0, 0))) | (np.arange(20)[:, None] == 0))


def test_location_and_placement_errors(case):
    lesion, lesion_mask, healthy, organ = case
    with pytest.raises(LesionPlacementError, match=r"location \(0, 0\) does not put the lesion"):
        paste_lesion(healthy, lesion, lesion_mask, location=(0, 0))
    with pytest.raises(LesionPlacementError, match=r"location \(3, 3\) .*inside the organ mask"):
        paste_lesion(healthy, lesion, lesion_mask, organ_mask=organ, location=(3, 3))
    tiny = _disk((64, 64), (32, 32), 3)
    with pytest.raises(LesionPlacementError, match=r"no position fits the lesion \(bounding box \(11, 11\)\) inside"):
        paste_lesion(healthy, lesion, lesion_mask, organ_mask=tiny)
    with pytest.raises(LesionPlacementError, match="no position fits"):
        paste_lesion(healthy[:, :12, :12], lesion, lesion_mask)


def test_bad_inputs_raise(case):
    lesion, lesion_mask, healthy, organ = case
    with pytest.raises(ValueError, match="lesion_mask is empty"):
        paste_lesion(healthy, lesion, torch.zeros_like(lesion_mask))
    with pytest.raises(ValueError, match="same channels"):
        paste_lesion(healthy.repeat(3, 1, 1), lesion, lesion_mask)
    with pytest.raises(ValueError, match=r"lesion_mask must be \(40, 40\)"):
        paste_lesion(healthy, lesion, lesion_mask[:30])
    with pytest.raises(ValueError, match=r"organ_mask must be \(64, 64\)"):
        paste_lesion(healthy, lesion, lesion_mask, organ_mask=organ[:10])
    with pytest.raises(ValueError, match="blend must be one of"):
        paste_lesion(healthy, lesion, lesion_mask, blend="alpha")
    with pytest.raises(TypeError, match="healthy must be a floating-point tensor"):
        paste_lesion(healthy.long(), lesion, lesion_mask)
    with pytest.raises(ValueError, match=r"healthy must be \(C, H, W\) or \(C, D, H, W\)"):
        paste_lesion(healthy[0], lesion, lesion_mask)


def test_batch_helper_builds_labeled_samples(case):
    lesion, lesion_mask, healthy, organ = case
    lesions = torch.stack([lesion, lesion.flip(-1)])
    masks = torch.stack([lesion_mask, lesion_mask.flip(-1)])
    healthies, organs = healthy.expand(3, -1, -1, -1), organ.expand(3, -1, -1)
    s = synthesize_lesions(lesions, masks, [4, 7], healthies, 6, organ_masks=organs, blend="poisson",
                           generator=torch.Generator().manual_seed(0))
    assert s.images.shape == (6, 1, 64, 64) and s.masks.shape == (6, 64, 64) and s.offsets.shape == (6, 2)
    assert torch.equal(s.labels, torch.tensor([4, 7])[s.lesion_index])
    assert not (s.masks & ~organ).any() and torch.equal(s.masks.sum((1, 2)), torch.full((6,), 81))
    again = synthesize_lesions(lesions, masks, [4, 7], healthies, 6, organ_masks=organs, blend="poisson",
                               generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.images, again.images) and torch.equal(s.offsets, again.offsets)


def test_batch_helper_redraws_pairs_without_room_and_gives_up_clearly(case):
    lesion, lesion_mask, healthy, organ = case
    organs = torch.stack([_disk((64, 64), (32, 32), 3), organ])  # the first organ is too small
    s = synthesize_lesions(lesion[None], lesion_mask[None], [1], healthy.expand(2, -1, -1, -1), 4,
                           organ_masks=organs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.healthy_index, torch.ones(4, dtype=torch.long))
    with pytest.raises(LesionPlacementError, match="5 draws in a row found no valid placement"):
        synthesize_lesions(lesion[None], lesion_mask[None], [1], healthy[None], 2, organ_masks=organs[:1],
                           max_tries=5)
    with pytest.raises(ValueError, match="same M lesions"):
        synthesize_lesions(lesion[None], lesion_mask[None], [1, 2], healthy[None], 2)
