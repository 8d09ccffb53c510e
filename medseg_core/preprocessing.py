"""Named preprocessing steps: pure functions on float arrays, units explicit.

Intensity steps take a ``(Z, Y, X)`` (or 2D) float array and return float32:

============== =============================================================================
name           what it does
============== =============================================================================
none           unchanged (float32)
plain          z-score per axial slice (report 000 "plain"): (x - mean) / std, std floor 1e-6
minmax         linear to [0, 1] from the array's min/max (ultrasound and micro-US grey)
scale255       x / 255 clipped to [0, 1] (fixed scale for the annotation-removal model)
raovseg        RAovSeg: clip to the 1st/99th percentile of the whole array, rescale to [0, 1],
               remap with o1 = 0.24, o2 = 0.30 (``x<o1 -> x``; ``o1<x<=o2 -> 1``;
               ``o2<x<=0.5 -> x``; ``x>0.5 -> 1-x``)
raovseg_sharp  raovseg then an in-plane unsharp mask (report 000's "local contrast
               enhancement"; not in the official code)
clahe          CLAHE per slice with OpenCV's clip limit 2.0 on an 8 x 8 tile grid (report 002),
               output in [0, 1]
ct_window      HU window -57..164 to [0, 1], clipped (report 003's ScaleIntensityRange)
============== =============================================================================

Geometry steps (:class:`SliceResize`, :func:`resample_inplane`) come with their inverse, so a
prediction made on the model grid goes back exactly onto the input grid.

Side masking (:func:`side_mask`, :func:`apply_side_masking`) works on *anatomical* sides: the
patient's left is world x < midline in RAS+, whatever the file's storage order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage


def none(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32)


def zscore_per_slice(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        return ((x - x.mean()) / max(float(x.std()), eps)).astype(np.float32)
    m = x.mean(axis=(-2, -1), keepdims=True)
    s = np.maximum(x.std(axis=(-2, -1), keepdims=True), eps)
    return ((x - m) / s).astype(np.float32)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi <= lo else ((x - lo) / (hi - lo)).astype(np.float32)


def scale255(x: np.ndarray) -> np.ndarray:
    """8-bit grey to [0, 1] with a fixed scale (x / 255, clipped): annotated and clean copies of one
    ultrasound image stay comparable (the annotation-removal model needs that)."""
    return np.clip(np.asarray(x, np.float32) / 255.0, 0, 1)


def percentile_clip(x: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    """Clip to the percentiles of the whole array and rescale to [0, 1]."""
    x = np.asarray(x, np.float32)
    lo, hi = np.percentile(x, [lo_pct, hi_pct])
    if hi <= lo:
        return np.zeros_like(x)
    return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def raovseg_remap(x: np.ndarray, o1: float = 0.24, o2: float = 0.30) -> np.ndarray:
    """RAovSeg's intensity remapping of x in [0, 1] (some derivatives use o1 = 0.22)."""
    x = np.asarray(x, np.float32)
    out = x.copy()
    out[(x > o1) & (x <= o2)] = 1.0
    hi = x > 0.5
    out[hi] = 1.0 - x[hi]
    return out


def raovseg(x: np.ndarray, o1: float = 0.24, o2: float = 0.30, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    return raovseg_remap(percentile_clip(x, lo_pct, hi_pct), o1, o2)


def unsharp(x: np.ndarray, sigma_px: float = 2.0, amount: float = 1.0) -> np.ndarray:
    """In-plane unsharp mask: x + amount (x - gaussian(x)), clipped to [0, 1]."""
    x = np.asarray(x, np.float32)
    sig = (0, sigma_px, sigma_px) if x.ndim == 3 else sigma_px
    return np.clip(x + amount * (x - ndimage.gaussian_filter(x, sig)), 0, 1).astype(np.float32)


def raovseg_sharp(x: np.ndarray, **kw) -> np.ndarray:
    return unsharp(raovseg(x, **kw))


def clahe(x: np.ndarray, clip_limit: float = 2.0, tiles: int = 8, nbins: int = 256) -> np.ndarray:
    """CLAHE per slice. ``clip_limit`` uses OpenCV's convention (multiple of the mean bin count);
    scikit-image's normalised limit is ``clip_limit / nbins``. Output in [0, 1]."""
    from skimage import exposure

    x = np.asarray(x, np.float32)
    arr = x[None] if x.ndim == 2 else x
    out = np.empty_like(arr)
    for z in range(arr.shape[0]):
        s = minmax(arr[z])
        k = (max(s.shape[0] // tiles, 1), max(s.shape[1] // tiles, 1))
        out[z] = exposure.equalize_adapthist(s, kernel_size=k, clip_limit=clip_limit / nbins, nbins=nbins)
    return (out[0] if x.ndim == 2 else out).astype(np.float32)


def ct_window(x: np.ndarray, lo_hu: float = -57.0, hi_hu: float = 164.0, out_lo: float = 0.0,
              out_hi: float = 1.0) -> np.ndarray:
    """HU window ``lo_hu..hi_hu`` mapped linearly to ``out_lo..out_hi``, clipped (MONAI's
    ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)``)."""
    x = np.asarray(x, np.float32)
    y = (np.clip(x, lo_hu, hi_hu) - lo_hu) / (hi_hu - lo_hu)
    return (y * (out_hi - out_lo) + out_lo).astype(np.float32)


PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": none, "plain": zscore_per_slice, "minmax": minmax, "scale255": scale255, "raovseg": raovseg, "raovseg_sharp": raovseg_sharp,
    "clahe": clahe, "ct_window": ct_window,
}


def preprocess(name: str, x: np.ndarray, **params) -> np.ndarray:
    """Apply the named step; ``params`` are its keyword parameters (a model card's
    ``recipe.preprocessing.params``, e.g. ``lo_hu``/``hi_hu`` for ``ct_window``)."""
    try:
        fn = PREPROCESSING[name]
    except KeyError:
        raise KeyError(f"unknown preprocessing {name!r}; choose one of {', '.join(PREPROCESSING)}") from None
    return fn(x, **params)


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class SliceResize:
    """Resize the in-plane axes of (Z, Y, X) to ``size`` and back (bilinear, or nearest for labels).

    ``forward`` maps input -> model grid; ``inverse`` maps a model-grid map back to the input's
    (Y, X); ``inverse(forward(x))`` has exactly the input's shape.
    """

    in_shape: tuple[int, int]
    size: tuple[int, int]

    def _zoom(self, x, shape, order):
        x = np.asarray(x, np.float32)
        fy, fx = shape[0] / x.shape[-2], shape[1] / x.shape[-1]
        if fy == 1 and fx == 1:
            return x
        z = (1,) * (x.ndim - 2) + (fy, fx)
        out = ndimage.zoom(x, z, order=order, mode="nearest", grid_mode=True)
        return out[..., : shape[0], : shape[1]]

    def forward(self, x, order: int = 1):
        return self._zoom(x, self.size, order)

    def inverse(self, y, order: int = 1):
        return self._zoom(y, self.in_shape, order)


def resample_inplane(x: np.ndarray, spacing_yx: tuple[float, float], target_yx: tuple[float, float], order: int = 1):
    """Resample (Z, Y, X) in-plane to ``target_yx`` mm; returns (array, SliceResize to go back)."""
    h, w = x.shape[-2:]
    size = (max(1, int(round(h * spacing_yx[0] / target_yx[0]))), max(1, int(round(w * spacing_yx[1] / target_yx[1]))))
    rs = SliceResize((h, w), size)
    return rs.forward(x, order), rs


# ----------------------------------------------------------------------------- side masking
SIDE_MODES = ("none", "left", "right", "oracle", "two_pass")


def world_x_of_columns(volume) -> np.ndarray:
    """World x (mm, RAS+: larger is the patient's right) of each array column at the grid centre."""
    z, y, _ = (np.asarray(volume.shape) - 1) / 2.0
    cols = np.arange(volume.shape[2], dtype=float)
    return np.array([volume.index_to_world(z, y, c)[0] for c in cols])


def midline_x(volume, method: str = "image") -> float:
    """World x of the left/right dividing line: the image centre (report 000's halves) or, with
    ``method="body"``, the intensity-weighted centre of the body (robust to an off-centre patient)."""
    wx = world_x_of_columns(volume)
    if method == "image":
        return float((wx[0] + wx[-1]) / 2)
    a = np.asarray(volume.array, np.float32)
    body = a > np.percentile(a, 60)
    prof = body.sum(axis=(0, 1)).astype(float)
    return float((prof * wx).sum() / max(prof.sum(), 1.0))


def side_mask(volume, side: str, method: str = "image") -> np.ndarray:
    """Boolean (Z, Y, X): voxels on the patient's ``side`` ("left" or "right") of the midline."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    wx = world_x_of_columns(volume)
    mid = midline_x(volume, method)
    cols = wx < mid if side == "left" else wx >= mid
    return np.broadcast_to(cols[None, None, :], volume.shape).copy()


def side_of_mask(mask2d_or_3d: np.ndarray, volume) -> str | None:
    """Anatomical side of a mask's horizontal centroid (None if empty)."""
    m = np.asarray(mask2d_or_3d) > 0
    if not m.any():
        return None
    cols = np.nonzero(m.reshape(-1, m.shape[-1]).any(0))[0]
    weights = m.reshape(-1, m.shape[-1]).sum(0)[cols]
    wx = world_x_of_columns(volume)[cols]
    cx = float((wx * weights).sum() / weights.sum())
    return "left" if cx < midline_x(volume) else "right"


def apply_side_masking(image: np.ndarray, volume, mode: str, reference: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Zero the other half of ``image`` (Z, Y, X) per report 000 section 3.5.

    ``left`` / ``right``: keep that anatomical side. ``oracle`` (evaluation only): per slice, the
    side of the reference mask's horizontal centroid; slices without reference use the side of
    the whole reference volume. ``none`` and ``two_pass`` return the image unchanged (two-pass
    runs the model once per side; see :mod:`medseg_core.inference`). Returns (image, info).
    """
    if mode not in SIDE_MODES:
        raise ValueError(f"side masking mode must be one of {SIDE_MODES}")
    img = np.asarray(image, np.float32)
    if mode in ("none", "two_pass"):
        return img, {"mode": mode}
    if mode in ("left", "right"):
        keep = side_mask(volume, mode)
        return np.where(keep, img, 0).astype(np.float32), {"mode": mode, "sides": [mode] * img.shape[0]}
    if reference is None:
        raise ValueError("oracle side masking needs the ground-truth mask")
    default = side_of_mask(reference, volume) or "left"
    left, right = side_mask(volume, "left"), side_mask(volume, "right")
    out = np.empty_like(img)
    sides = []
    for z in range(img.shape[0]):
        s = side_of_mask(reference[z], volume) or default
        sides.append(s)
        out[z] = np.where((left if s == "left" else right)[z], img[z], 0)
    return out, {"mode": "oracle", "sides": sides, "note": "oracle uses the ground truth: evaluation only"}
