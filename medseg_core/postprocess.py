"""Post-processing of binary masks. Every function returns ``(kept, removed)`` so the app can
highlight what was taken away; ``removed`` is ``original & ~kept`` (closing may also *add*
voxels: :func:`raovseg_postprocess` reports those as ``added``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every non-zero voxel of ``mask`` (None when it is empty). Axis by
    axis inside the box found so far, so a small structure in a big volume costs about one pass."""
    box: list[slice] = [slice(0, s) for s in mask.shape]
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        hit = np.flatnonzero(np.any(mask[tuple(box)], axis=other))
        if hit.size == 0:
            return None
        box[ax] = slice(box[ax].start + int(hit[0]), box[ax].start + int(hit[-1]) + 1)
    return tuple(box)


def _largest(mask: np.ndarray, structure: np.ndarray | None = None, k: int = 1) -> np.ndarray:
    """The ``k`` largest components of a boolean ``mask``, labelled inside its bounding box only
    (components cannot reach outside it; labelling a whole 300 x 512 x 512 CT took 1.1 s)."""
    box = bounding_box(mask)
    if box is None:
        return np.zeros(mask.shape, bool)
    crop = mask[box]
    lab, n = ndimage.label(crop, structure=structure)
    if n <= k:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.argsort(-sizes, kind="stable")[:k] + 1
    out = np.zeros(mask.shape, bool)
    out[box] = np.isin(lab, keep)
    return out


def largest_component_3d(mask: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest 3D connected component (``connectivity`` 1: 6-neighbours, scipy's default;
    3: 26-neighbours)."""
    m = np.asarray(mask)
    # results start as np.zeros (pages the OS zero-fills on demand) and are written inside the mask's
    # bounding box only: on a 300 x 512 x 512 CT every fully written copy costs about 0.1-0.3 s
    kept, removed = np.zeros(m.shape, np.uint8), np.zeros(m.shape, np.uint8)
    box = bounding_box(m)
    if box is None:
        return kept, removed
    crop = m[box] > 0
    k = _largest(crop, ndimage.generate_binary_structure(m.ndim, connectivity))
    kept[box] = k
    removed[box] = crop & ~k
    return kept, removed


def largest_component_per_slice(mask: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest 2D component on every axial slice (report 000's post-processing)."""
    m = np.asarray(mask) > 0
    st = ndimage.generate_binary_structure(2, connectivity)
    kept = np.zeros_like(m)
    for z in range(m.shape[0]):
        if m[z].any():
            kept[z] = _largest(m[z], st)
    return kept.astype(np.uint8), (m & ~kept).astype(np.uint8)


def keep_k_largest(mask: np.ndarray, k: int, per_slice: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` largest components (3D, or per axial slice)."""
    m = np.asarray(mask) > 0
    if per_slice:
        kept = np.zeros_like(m)
        for z in range(m.shape[0]):
            kept[z] = _largest(m[z], None, k)
    else:
        kept = _largest(m, None, k)
    return kept.astype(np.uint8), (m & ~kept).astype(np.uint8)


def remove_small(
    mask: np.ndarray, spacing: Sequence[float], min_size: float, per_slice: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Remove components smaller than ``min_size``: mm^3 in 3D, mm^2 per slice with ``per_slice``.

    ``spacing`` is (z, y, x) in mm."""
    m = np.asarray(mask) > 0
    kept = np.zeros_like(m)
    if per_slice:
        unit = float(np.prod(spacing[1:]))
        for z in range(m.shape[0]):
            lab, n = ndimage.label(m[z])
            if n:
                sizes = np.bincount(lab.ravel()) * unit
                ok = np.nonzero(sizes >= min_size)[0]
                kept[z] = np.isin(lab, ok[ok > 0])
    else:
        unit = float(np.prod(spacing))
        lab, n = ndimage.label(m)
        if n:
            sizes = np.bincount(lab.ravel()) * unit
            ok = np.nonzero(sizes >= min_size)[0]
            kept = np.isin(lab, ok[ok > 0])
    return kept.astype(np.uint8), (m & ~kept).astype(np.uint8)


def raovseg_postprocess(mask: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Official RAovSeg: ``binary_closing`` (scipy default cross, ``iterations``) then the largest
    3D component (6-connectivity). Returns ``(kept, removed, added)``.

    Closing counts voxels, not millimetres: on 6 mm slices 10 iterations reach 60 mm through-plane
    but only 3.5-7 mm in-plane. The mask is zero-padded by ``iterations`` before closing: scipy's
    closing erodes from the array border, which on a 24-slice pelvis would otherwise delete an
    ovary whose dilation reaches the first or last slice.
    """
    m = np.asarray(mask) > 0
    pad = iterations
    padded = np.pad(m, pad)
    closed = ndimage.binary_closing(padded, iterations=iterations)[tuple(slice(pad, -pad) for _ in m.shape)]
    kept = _largest(closed, ndimage.generate_binary_structure(m.ndim, 1))
    return kept.astype(np.uint8), (m & ~kept).astype(np.uint8), (kept & ~m).astype(np.uint8)


POSTPROCESSING = {"largest_3d": largest_component_3d, "largest_2d": largest_component_per_slice}
