"""Lesion synthesis (Li et al. 2016): cut lesions out of lesion images and paste them into healthy ones.

Few lesion cases, many healthy ones: pasting each lesion at new plausible places gives new labeled samples with
exact masks. A lesion is cut at its mask's bounding box and placed uniformly at random among the positions where
the whole mask lies inside the organ mask (when given) and at least one pixel away from the image border (the
ring the blending needs). Two blendings:

- ``"feathered"``: alpha blending with a distance-based soft edge; alpha = min(1, d / feather) where d is each
  lesion pixel's Euclidean distance to the nearest non-lesion pixel (1 at the edge), so the lesion's core is
  pasted as is and its rim fades into the healthy tissue. 2D and 3D.
- ``"poisson"``: seamless cloning (Perez et al. 2003): inside the mask, solve the discrete Poisson equation
  whose guidance field is the lesion's gradients, with the healthy image as the Dirichlet boundary; the lesion's
  texture is kept and its intensity level adapts to the surroundings. Sparse direct solve (scipy), 2D and 3D.

Pixels outside the lesion mask are never changed, and the returned mask is the lesion mask at its new place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.signal
import scipy.sparse
import scipy.sparse.linalg
import torch

__all__ = ["LesionPlacementError", "PastedLesion", "LesionSamples", "paste_lesion", "synthesize_lesions",
           "poisson_blend", "feather_alpha", "valid_offsets"]

BLENDS = ("feathered", "poisson")


class LesionPlacementError(ValueError):
    """No position puts the lesion fully inside the image (with a 1-pixel ring) and the organ mask."""


@dataclass(frozen=True)
class PastedLesion:
    image: torch.Tensor  # (C, *spatial), the healthy image's dtype
    mask: torch.Tensor  # (*spatial), the lesion mask's dtype and values
    offset: tuple[int, ...]  # where the lesion's bounding box starts, tensor order
    label: Any = None  # the lesion's class label, passed through


@dataclass(frozen=True)
class LesionSamples:
    images: torch.Tensor  # (n, C, *spatial)
    masks: torch.Tensor  # (n, *spatial)
    labels: torch.Tensor  # (n,) the pasted lesion's label
    lesion_index: torch.Tensor  # (n,) which lesion image each sample took its lesion from
    healthy_index: torch.Tensor  # (n,) which healthy image it was pasted into
    offsets: torch.Tensor  # (n, ndim) bounding-box start, tensor order


def _image(name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (C, H, W) or (C, D, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"{name} must be (C, H, W) or (C, D, H, W), got shape {tuple(x.shape)}")
    return x


def _mask(name: str, m: Any, spatial: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.dim() == len(spatial) + 1 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != spatial:
        raise ValueError(f"{name} must be {spatial} (or (1, *{spatial})) like its image, got shape {tuple(m.shape)}")
    return m


def valid_offsets(patch_mask: np.ndarray, spatial: tuple[int, ...], organ: np.ndarray | None) -> np.ndarray:
    """(K, ndim) bounding-box starts that keep every lesion pixel inside ``organ`` and a 1-pixel ring inside the
    image; row-major order, so a seeded draw among them is reproducible."""
    size = patch_mask.shape
    lo = np.ones(len(size), dtype=int)
    hi = np.array(spatial) - np.array(size) - 1  # inclusive
    if np.any(hi < lo):
        return np.zeros((0, len(size)), dtype=int)
    ok = np.ones(tuple(hi - lo + 1), dtype=bool)
    if organ is not None:
        outside = (~organ).astype(np.float64)
        hits = scipy.signal.correlate(outside, patch_mask.astype(np.float64), mode="valid")  # (S - size + 1)
        ok &= hits[tuple(slice(1, h + 1) for h in hi)] < 0.5  # FFT rounding: counts are integers
    return np.argwhere(ok) + lo


def feather_alpha(patch_mask: np.ndarray, feather: float) -> np.ndarray:
    """alpha = min(1, d / feather), d = distance of each lesion pixel to the nearest non-lesion pixel; 0 outside."""
    padded = np.pad(patch_mask, 1)  # the bounding box's edge is lesion edge too
    d = ndi.distance_transform_edt(padded)[tuple(slice(1, -1) for _ in patch_mask.shape)]
    return np.clip(d / feather, 0.0, 1.0) * patch_mask


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Seamless cloning of ``source`` into ``target`` inside ``mask`` (Perez et al. 2003), any number of dims.

    target/source: (C, *R); mask: (*R) bool, False on the array border. For each mask pixel p with neighbours q:
    2*ndim f_p - sum_{q in mask} f_q = sum_{q not in mask} target_q + sum_q (source_p - source_q). Returns target
    with the mask filled by the solution (float64).
    """
    if mask.shape != target.shape[1:] or source.shape != target.shape:
        raise ValueError(f"poisson_blend: target {target.shape}, source {source.shape} and mask {mask.shape} "
                         "must agree (C, *R) / (*R)")
    border = np.ones_like(mask)
    border[tuple(slice(1, -1) for _ in mask.shape)] = False
    if np.any(mask & border):
        raise ValueError("poisson_blend: the mask touches the array border; the boundary ring must lie inside")
    pts = np.nonzero(mask)  # coordinates of the unknowns
    k, nd = len(pts[0]), mask.ndim
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[pts] = np.arange(k)
    tgt, src = target.astype(np.float64), source.astype(np.float64)
    b = np.zeros((target.shape[0], k))
    rows, cols = [np.arange(k)], [np.arange(k)]
    vals = [np.full(k, 2.0 * nd)]
    for axis in range(nd):
        for step in (-1, 1):
            q = list(pts)
            q[axis] = q[axis] + step
            q = tuple(q)
            inside = mask[q]
            rows.append(np.nonzero(inside)[0])
            cols.append(index[q][inside])
            vals.append(np.full(int(inside.sum()), -1.0))
            b += src[(slice(None),) + pts] - src[(slice(None),) + q]  # guidance: the lesion's gradients
            b += np.where(inside, 0.0, tgt[(slice(None),) + q])  # Dirichlet boundary: the healthy image
    a = scipy.sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    f = scipy.sparse.linalg.splu(a).solve(np.ascontiguousarray(b.T))  # (K, C)
    out = tgt.copy()
    out[(slice(None),) + pts] = f.T
    return out


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    nz = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in nz)


def _crop_with_ring(image: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """image[:, box] grown by one pixel per side: the lesion image's own pixels where it has them (its real edge
    gradients guide the Poisson solve), edge-replicated beyond its border."""
    grown = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, s)) for b, s in zip(box, image.shape[1:]))
    pads = [(0, 0)] + [(g.start - (b.start - 1), (b.stop + 1) - g.stop) for b, g in zip(box, grown)]
    return np.pad(image[(slice(None),) + grown], pads, mode="edge")


def _place(patch_mask: np.ndarray, spatial: tuple[int, ...], organ: np.ndarray | None, location: Any,
           generator: torch.Generator | None) -> tuple[int, ...]:
    offsets = valid_offsets(patch_mask, spatial, organ)
    if location is not None:
        loc = tuple(int(v) for v in location)
        if len(loc) != len(spatial) or not (offsets == np.array(loc)).all(-1).any():
            raise LesionPlacementError(
                f"location {loc} does not put the lesion (bounding box {patch_mask.shape}) inside the image "
                f"{spatial} with a 1-pixel ring{' and inside the organ mask' if organ is not None else ''}")
        return loc
    if len(offsets) == 0:
        where = " inside the organ mask" if organ is not None else ""
        raise LesionPlacementError(f"no position fits the lesion (bounding box {patch_mask.shape}){where} in an "
                                   f"image of spatial size {spatial} (a 1-pixel ring must stay inside)")
    pick = int(torch.randint(len(offsets), (1,), generator=generator))
    return tuple(int(v) for v in offsets[pick])


def paste_lesion(healthy: torch.Tensor, lesion_image: torch.Tensor, lesion_mask: torch.Tensor, *,
                 organ_mask: torch.Tensor | None = None, blend: str = "feathered", feather: float = 2.0,
                 location: Sequence[int] | None = None, label: Any = None,
                 generator: torch.Generator | None = None) -> PastedLesion:
    """Paste the lesion (``lesion_mask != 0`` of ``lesion_image``) into ``healthy`` at a random valid place,
    or at ``location`` (bounding-box start, tensor order). Images are (C, *spatial) with the same C; the mask
    keeps ``lesion_mask``'s dtype and values; ``label`` is handed back with the result."""
    healthy, lesion_image = _image("healthy", healthy), _image("lesion_image", lesion_image)
    if lesion_image.dim() != healthy.dim() or lesion_image.shape[0] != healthy.shape[0]:
        raise ValueError(f"lesion_image {tuple(lesion_image.shape)} and healthy {tuple(healthy.shape)} must have "
                         "the same channels and number of spatial dims")
    spatial = tuple(healthy.shape[1:])
    lesion_mask = _mask("lesion_mask", lesion_mask, tuple(lesion_image.shape[1:]))
    organ = None if organ_mask is None else _mask("organ_mask", organ_mask, spatial).cpu().numpy() != 0
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if not feather > 0:
        raise ValueError(f"feather must be > 0 pixels, got {feather}")
    lesion_np = lesion_mask.cpu().numpy()
    if not lesion_np.any():
        raise ValueError("lesion_mask is empty: there is no lesion to cut")
    box = _bbox(lesion_np != 0)
    patch_mask = lesion_np[box] != 0  # (*b)
    offset = _place(patch_mask, spatial, organ, location, generator)

    # the placed bounding box plus the 1-pixel ring (poisson's boundary), in healthy coordinates
    ring = tuple(slice(o - 1, o + s + 1) for o, s in zip(offset, patch_mask.shape))
    target = healthy[(slice(None),) + ring].detach().cpu().numpy().astype(np.float64)  # (C, *b + 2)
    source = _crop_with_ring(lesion_image.detach().cpu().numpy().astype(np.float64), box)  # (C, *b + 2)
    region_mask = np.pad(patch_mask, 1)
    if blend == "poisson":
        blended = poisson_blend(target, source, region_mask)
    else:
        alpha = feather_alpha(region_mask, feather)[None]
        blended = alpha * source + (1.0 - alpha) * target
    blended = np.where(region_mask[None], blended, target)  # bit-exact outside the lesion
    image = healthy.clone()
    image[(slice(None),) + ring] = torch.from_numpy(blended).to(device=healthy.device, dtype=healthy.dtype)
    mask = torch.zeros(spatial, dtype=lesion_mask.dtype, device=lesion_mask.device)
    inner = tuple(slice(o, o + s) for o, s in zip(offset, patch_mask.shape))
    mask[inner] = torch.where(torch.from_numpy(patch_mask).to(lesion_mask.device), lesion_mask[box], 0)
    return PastedLesion(image=image, mask=mask, offset=offset, label=label)


def _items(name: str, x: Any) -> Sequence:
    if isinstance(x, torch.Tensor) or isinstance(x, Sequence):
        if len(x) == 0:
            raise ValueError(f"{name} is empty")
        return x
    raise TypeError(f"{name} must be a batched tensor or a sequence of tensors, got {type(x).__name__}")


def synthesize_lesions(lesion_images: Any, lesion_masks: Any, labels: Any, healthy_images: Any, n: int, *,
                       organ_masks: Any = None, blend: str = "feathered", feather: float = 2.0,
                       generator: torch.Generator | None = None, max_tries: int = 20) -> LesionSamples:
    """Build ``n`` new labeled samples: each pastes a random lesion (with its label) into a random healthy image.

    lesion_images (M, C, *S1) or a sequence of (C, *Si); lesion_masks alike ((M, *S1) or sequence); labels (M,);
    healthy_images (K, C, *S2) or a sequence of same-size (C, *S2); organ_masks (K, *S2) or None. A pair with no
    valid placement is redrawn, up to ``max_tries`` times in a row.
    """
    lesions, masks = _items("lesion_images", lesion_images), _items("lesion_masks", lesion_masks)
    healthy = _items("healthy_images", healthy_images)
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or not (len(masks) == len(lesions) == labels.shape[0]):
        raise ValueError(f"lesion_images ({len(lesions)}), lesion_masks ({len(masks)}) and labels "
                         f"{tuple(labels.shape)} must describe the same M lesions (labels (M,))")
    if organ_masks is not None and len(_items("organ_masks", organ_masks)) != len(healthy):
        raise ValueError(f"organ_masks ({len(organ_masks)}) must pair with healthy_images ({len(healthy)})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    shapes = {tuple(h.shape) for h in healthy}
    if len(shapes) != 1:
        raise ValueError(f"healthy_images must share one shape to batch the results, got {sorted(shapes)}")
    out, picks, failures = [], [], []
    while len(out) < n:
        i = int(torch.randint(len(lesions), (1,), generator=generator))
        j = int(torch.randint(len(healthy), (1,), generator=generator))
        try:
            r = paste_lesion(healthy[j], lesions[i], masks[i], organ_mask=None if organ_masks is None
                             else organ_masks[j], blend=blend, feather=feather, generator=generator)
        except LesionPlacementError as e:
            failures.append(f"lesion {i} -> healthy {j}: {e}")
            if len(failures) >= max_tries:
                raise LesionPlacementError(f"{max_tries} draws in a row found no valid placement; last: "
                                           f"{failures[-1]}") from e
            continue
        failures.clear()
        out.append(r)
        picks.append((i, j))
    idx = torch.tensor(picks, dtype=torch.long)
    return LesionSamples(images=torch.stack([r.image for r in out]), masks=torch.stack([r.mask for r in out]),
                         labels=labels[idx[:, 0]], lesion_index=idx[:, 0], healthy_index=idx[:, 1],
                         offsets=torch.tensor([r.offset for r in out], dtype=torch.long))
