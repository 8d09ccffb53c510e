"""Named preprocessing steps: pure functions on float arrays, units explicit.

Intensity steps take a ``(Z, Y, X)`` (or 2D) float array and return float32:

============== =============================================================================
name           what it does
============== =============================================================================
none           unchanged (float32)
plain          z-score per axial slice (report 000 "plain"): (x - mean) / std, std floor 1e-6
minmax         linear to [0, 1] from the array's min/max (ultrasound and micro-US grey)
scale255       x / 255 clipped to [0, 1] (fixed scale for the annotation-removal model)
raovseg        RAovSeg: clip to the 1st/99th percentile of the whole array (``clip_scope="slice"``:
               of each axial slice, report 000), rescale to [0, 1],
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from .io import Volume


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


CLIP_SCOPES = ("volume", "slice")


def percentile_clip(x: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0, scope: str = "volume") -> np.ndarray:
    """Clip to the ``lo_pct``/``hi_pct`` percentiles and rescale to [0, 1].

    ``scope="volume"``: one pair of percentiles over the whole array (the official RAovSeg tools,
    methods.md section 1, and every checkpoint trained before the parameter existed: it is the
    default, so a card without ``clip_scope`` runs as it was trained). ``scope="slice"``: a pair per
    axial slice of a (Z, Y, X) array (report 000 section 4.4: the preprocessing is applied
    "slice-wise before feeding the images to the network"); a slice with p_hi <= p_lo becomes 0."""
    if scope not in CLIP_SCOPES:
        raise ValueError(f"clip scope must be one of {CLIP_SCOPES}, got {scope!r}")
    x = np.asarray(x, np.float32)
    if scope == "slice" and x.ndim == 3:
        lo, hi = np.percentile(x, [lo_pct, hi_pct], axis=(1, 2))
        lo, hi = lo[:, None, None].astype(np.float32), hi[:, None, None].astype(np.float32)
        span = hi - lo
        ok = span > 0
        out = (np.clip(x, lo, hi) - lo) / np.where(ok, span, 1)
        return np.where(ok, out, 0).astype(np.float32)
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


def raovseg(
    x: np.ndarray,
    o1: float = 0.24,
    o2: float = 0.30,
    lo_pct: float = 1.0,
    hi_pct: float = 99.0,
    clip_scope: str = "volume",
) -> np.ndarray:
    """RAovSeg: percentile clip (``clip_scope`` volume | slice, see :func:`percentile_clip`) then
    :func:`raovseg_remap`."""
    return raovseg_remap(percentile_clip(x, lo_pct, hi_pct, clip_scope), o1, o2)


def unsharp(x: np.ndarray, sigma_px: float = 2.0, amount: float = 1.0) -> np.ndarray:
    """In-plane unsharp mask: x + amount (x - gaussian(x)), clipped to [0, 1]."""
    x = np.asarray(x, np.float32)
    sig = (0, sigma_px, sigma_px) if x.ndim == 3 else sigma_px
    return np.clip(x + amount * (x - ndimage.gaussian_filter(x, sig)), 0, 1).astype(np.float32)


def raovseg_sharp(x: np.ndarray, sigma_px: float = 2.0, amount: float = 1.0, **kw: Any) -> np.ndarray:
    """Report 000 section 3.3's RAovSeg-style input: :func:`raovseg` (``kw``: o1, o2, percentiles,
    clip_scope) then the "local contrast enhancement (high-pass or sharpening)" as an in-plane
    :func:`unsharp` mask."""
    return unsharp(raovseg(x, **kw), sigma_px=sigma_px, amount=amount)


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


def ct_window(
    x: np.ndarray, lo_hu: float = -57.0, hi_hu: float = 164.0, out_lo: float = 0.0, out_hi: float = 1.0
) -> np.ndarray:
    """HU window ``lo_hu..hi_hu`` mapped linearly to ``out_lo..out_hi``, clipped (MONAI's
    ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)``)."""
    y = np.clip(np.asarray(x, np.float32), np.float32(lo_hu), np.float32(hi_hu))  # a new float32 array
    # in place on that array: a 300 x 512 x 512 CT is 300 MB, every temporary another 300 MB and pass
    y -= np.float32(lo_hu)
    y *= np.float32((out_hi - out_lo) / (hi_hu - lo_hu))
    if out_lo:
        y += np.float32(out_lo)
    return y


PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": none,
    "plain": zscore_per_slice,
    "minmax": minmax,
    "scale255": scale255,
    "raovseg": raovseg,
    "raovseg_sharp": raovseg_sharp,
    "clahe": clahe,
    "ct_window": ct_window,
}
#: steps that map each voxel on its own (no slice or volume statistics): applying them to a sample of
#: voxels gives exactly those voxels of the preprocessed volume
ELEMENTWISE = frozenset({"none", "scale255", "ct_window"})


def preprocess(name: str, x: np.ndarray, **params: Any) -> np.ndarray:
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

    def _zoom(self, x: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
        x = np.asarray(x, np.float32)
        fy, fx = shape[0] / x.shape[-2], shape[1] / x.shape[-1]
        if fy == 1 and fx == 1:
            return x
        z = (1,) * (x.ndim - 2) + (fy, fx)
        out = ndimage.zoom(x, z, order=order, mode="nearest", grid_mode=True)
        return out[..., : shape[0], : shape[1]]

    def forward(self, x: np.ndarray, order: int = 1) -> np.ndarray:
        return self._zoom(x, self.size, order)

    def inverse(self, y: np.ndarray, order: int = 1) -> np.ndarray:
        return self._zoom(y, self.in_shape, order)


def resample_inplane(
    x: np.ndarray, spacing_yx: tuple[float, float], target_yx: tuple[float, float], order: int = 1
) -> tuple[np.ndarray, SliceResize]:
    """Resample (Z, Y, X) in-plane to ``target_yx`` mm; returns (array, SliceResize to go back)."""
    h, w = x.shape[-2:]
    size = (max(1, int(round(h * spacing_yx[0] / target_yx[0]))), max(1, int(round(w * spacing_yx[1] / target_yx[1]))))
    rs = SliceResize((h, w), size)
    return rs.forward(x, order), rs


# ----------------------------------------------------------------------------- report 000 geometry
#: Report 000's in-plane geometry (sections 3.1 and 3.3): resample to a common in-plane resolution
#: (0.35 mm, the RAovSeg tools' grid, methods.md section 1) and crop around the pelvis before
#: resizing to the model input. A card's ``recipe.geometry`` holds these keys.
PELVIS_GEOMETRY = {"inplane_mm": 0.35, "crop": "body", "margin_mm": 10.0}
CROPS = ("none", "body")


def body_box(image: np.ndarray, margin_px: int = 0, square: bool = True) -> tuple[int, int, int, int]:
    """In-plane box ``(y0, y1, x0, x1)`` (end exclusive) around the body of a (Z, Y, X) or (Y, X)
    image: Otsu's threshold (scikit-image) on the mean projection over slices (the body against the
    empty background; a maximum projection would keep only the brightest organs), the largest
    connected component (holes filled), its bounding box grown by ``margin_px`` and, with ``square``, widened
    about its centre to a square (the model input is square; the box may then leave the image and
    the outside is padded with 0, as RAovSeg pads). One box for the whole volume, so every slice
    is cut alike. An image without contrast gives the whole image."""
    from skimage.filters import threshold_otsu

    a = np.asarray(image, np.float32)
    mip = a.mean(axis=0) if a.ndim == 3 else a
    h, w = mip.shape
    if float(mip.max()) <= float(mip.min()):
        return 0, h, 0, w
    fg = ndimage.binary_fill_holes(mip > threshold_otsu(mip))
    lab, n = ndimage.label(fg)
    if n == 0:
        return 0, h, 0, w
    big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    ys, xs = np.nonzero(lab == big)
    y0, y1, x0, x1 = ys.min() - margin_px, ys.max() + 1 + margin_px, xs.min() - margin_px, xs.max() + 1 + margin_px
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if square:
        side = max(y1 - y0, x1 - x0)
        y0 -= (side - (y1 - y0)) // 2
        x0 -= (side - (x1 - x0)) // 2
        y1, x1 = y0 + side, x0 + side
    return int(y0), int(y1), int(x0), int(x1)


@dataclass(frozen=True)
class PelvisGeometry:
    """Report 000's geometry step on a (Z, Y, X) volume, with its exact inverse.

    ``forward``: resample every slice in-plane from ``in_shape`` to ``resampled_shape`` (the
    0.35 mm grid; bilinear, ``order=0`` nearest for masks) and cut ``box`` (zero outside the
    image). ``inverse``: paste a map on the box grid into the resampled grid (0 outside the box)
    and resample back to ``in_shape``. Slices are never touched: the step is in-plane only."""

    in_shape: tuple[int, int]
    resampled_shape: tuple[int, int]
    box: tuple[int, int, int, int]

    @property
    def out_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.box
        return y1 - y0, x1 - x0

    def forward(self, x: np.ndarray, order: int = 1) -> np.ndarray:
        r = SliceResize(self.in_shape, self.resampled_shape).forward(np.asarray(x, np.float32), order)
        y0, y1, x0, x1 = self.box
        H, W = self.resampled_shape
        out = np.zeros(r.shape[:-2] + self.out_shape, np.float32)
        sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)
        out[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = r[..., sy0:sy1, sx0:sx1]
        return out

    def inverse(self, y: np.ndarray, order: int = 1) -> np.ndarray:
        y = np.asarray(y, np.float32)
        y0, y1, x0, x1 = self.box
        H, W = self.resampled_shape
        full = np.zeros(y.shape[:-2] + (H, W), np.float32)
        sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)
        full[..., sy0:sy1, sx0:sx1] = y[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        return SliceResize(self.resampled_shape, self.in_shape).forward(full, order)

    def volume(self, vol: Volume) -> Volume:
        """``vol`` on the step's grid: array resampled and cut, spacing and affine to match (so
        anatomical side masking still finds the patient's left and right)."""
        from .io import Volume

        (h, w), (H, W) = self.in_shape, self.resampled_shape
        ky, kx = h / H, w / W  # input pixels per resampled pixel
        y0, _, x0, _ = self.box
        m = np.eye(4)  # new voxel (x, y, z) -> input voxel, pixel centres as ndimage.zoom(grid_mode=True)
        m[0, 0], m[0, 3] = kx, (x0 + 0.5) * kx - 0.5
        m[1, 1], m[1, 3] = ky, (y0 + 0.5) * ky - 0.5
        spacing = (vol.spacing[0], vol.spacing[1] * ky, vol.spacing[2] * kx)
        return Volume(
            self.forward(vol.array),
            spacing,
            vol.affine @ m,
            modality=vol.modality,
            name=vol.name,
            meta=dict(vol.meta),
            warnings=list(vol.warnings),
        )

    def describe(self) -> str:
        return (
            f"resampled {self.in_shape[0]} x {self.in_shape[1]} -> {self.resampled_shape[0]} x "
            f"{self.resampled_shape[1]} px, pelvis box {self.out_shape[0]} x {self.out_shape[1]} px"
        )


def plan_geometry(
    vol: Volume, inplane_mm: float | None = 0.35, crop: str = "body", margin_mm: float = 10.0, square: bool = True
) -> PelvisGeometry:
    """The :class:`PelvisGeometry` of one volume (a card's ``recipe.geometry`` are the keywords):
    in-plane resampling to ``inplane_mm`` (None: keep the spacing) and, with ``crop="body"``, the
    :func:`body_box` of the resampled image grown by ``margin_mm``."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    h, w = vol.shape[-2:]
    sy, sx = vol.spacing[1], vol.spacing[2]
    if inplane_mm:
        H, W = max(1, int(round(h * sy / inplane_mm))), max(1, int(round(w * sx / inplane_mm)))
    else:
        H, W = h, w
    if crop == "body":  # found on the input grid (cheaper), then scaled to the resampled grid
        y0, y1, x0, x1 = body_box(vol.array, 0, square=False)
        fy, fx = H / h, W / w
        mpx = int(round(margin_mm / float(inplane_mm or sy)))
        y0, y1 = max(int(np.floor(y0 * fy)) - mpx, 0), min(int(np.ceil(y1 * fy)) + mpx, H)
        x0, x1 = max(int(np.floor(x0 * fx)) - mpx, 0), min(int(np.ceil(x1 * fx)) + mpx, W)
        if square:
            side = max(y1 - y0, x1 - x0)
            y0 -= (side - (y1 - y0)) // 2
            x0 -= (side - (x1 - x0)) // 2
            y1, x1 = y0 + side, x0 + side
        box = (y0, y1, x0, x1)
    else:
        box = (0, H, 0, W)
    return PelvisGeometry((h, w), (H, W), box)


# ----------------------------------------------------------------------------- side masking
SIDE_MODES = ("none", "left", "right", "oracle", "two_pass")


def world_x_of_columns(volume: Volume) -> np.ndarray:
    """World x (mm, RAS+: larger is the patient's right) of each array column at the grid centre."""
    z, y, _ = (np.asarray(volume.shape) - 1) / 2.0
    cols = np.arange(volume.shape[2], dtype=float)
    return np.array([volume.index_to_world(z, y, c)[0] for c in cols])


def midline_x(volume: Volume, method: str = "image") -> float:
    """World x of the left/right dividing line: the image centre (report 000's halves) or, with
    ``method="body"``, the intensity-weighted centre of the body (robust to an off-centre patient)."""
    wx = world_x_of_columns(volume)
    if method == "image":
        return float((wx[0] + wx[-1]) / 2)
    a = np.asarray(volume.array, np.float32)
    body = a > np.percentile(a, 60)
    prof = body.sum(axis=(0, 1)).astype(float)
    return float((prof * wx).sum() / max(prof.sum(), 1.0))


def side_mask(volume: Volume, side: str, method: str = "image") -> np.ndarray:
    """Boolean (Z, Y, X): voxels on the patient's ``side`` ("left" or "right") of the midline."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    wx = world_x_of_columns(volume)
    mid = midline_x(volume, method)
    cols = wx < mid if side == "left" else wx >= mid
    return np.broadcast_to(cols[None, None, :], volume.shape).copy()


def side_of_mask(mask2d_or_3d: np.ndarray, volume: Volume) -> str | None:
    """Anatomical side of a mask's horizontal centroid (None if empty)."""
    m = np.asarray(mask2d_or_3d) > 0
    if not m.any():
        return None
    cols = np.nonzero(m.reshape(-1, m.shape[-1]).any(0))[0]
    weights = m.reshape(-1, m.shape[-1]).sum(0)[cols]
    wx = world_x_of_columns(volume)[cols]
    cx = float((wx * weights).sum() / weights.sum())
    return "left" if cx < midline_x(volume) else "right"


def apply_side_masking(
    image: np.ndarray, volume: Volume, mode: str, reference: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
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
