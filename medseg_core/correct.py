"""Correcting a mask (issue 18 item 2, and the corrections half of item 3): brush, eraser and fill on
one slice of any plane, undo / redo, "corrected vs model" numbers, and saved corrections.

No Streamlit here: ``pages/_correct.py`` is the glue that draws ``streamlit-drawable-canvas`` over the
viewer's picture and calls these functions.

Geometry (what a stroke drawn on the picture means in voxels)
--------------------------------------------------------------
The viewer shows slice ``index`` of a plane as :func:`medseg_core.io.display_slice` (radiological
convention), resampled to square pixels by :func:`medseg_core.render.aspect_correct` (nearest
neighbour; display pixel ``i`` shows source pixel ``floor((i + 0.5) * h / new_h)``). The displayed
picture therefore covers exactly ``h * row_mm`` by ``w * col_mm`` millimetres, whatever its size on
screen or on the canvas: a canvas point ``(x, y)`` of a ``W x H`` canvas lies at
``(y / H * h * row_mm, x / W * w * col_mm)`` mm from the slice's top-left corner, and source pixel
``(r, c)`` (of the displayed slice) has its centre at ``((r + 0.5) * row_mm, (c + 0.5) * col_mm)``.

A brush of width ``d`` mm paints every voxel whose centre lies within ``d / 2`` mm of the stroke's
centre line (round caps and joins, as the canvas draws it), measured in millimetres with the plane's
own pixel spacing (:func:`medseg_core.io.display_aspect`), so a 5 mm brush is 5 mm wide on an
anisotropic coronal slice too (Slicer's and ITK-SNAP's paint brushes are sized in mm the same way).
The eraser is the same footprint setting voxels to 0. Fill is a seeded flood fill of the background
region under the click (4-connected; refused when the region reaches the slice's edge, i.e. is not
enclosed), or ``scipy.ndimage.binary_fill_holes`` on the whole slice.

History
-------
:class:`History` keeps the last ``max_steps`` edits (default 50); an edit stores only the voxels it
changed (flat indices and their values before and after), so undo / redo restore exactly and a big CT
costs a few kilobytes per stroke, not a copy of the volume.

Persistence
-----------
:func:`save_correction` writes the corrected label map as a compressed NIfTI
(:func:`medseg_core.io.mask_nifti_bytes`, the source affine) with a JSON sidecar (labels, base
model, reviewer, corrected vs model numbers) under :func:`corrections_dir` (``MEDSEG_CORRECTIONS``;
default: a ``corrections`` folder beside the ``MEDSEG_DB`` file; never inside the repository), records a
verdict ``needs_correction`` whose ``corrected_mask`` names the file (:mod:`medseg_core.store`) and an
audit row ``correction``. :func:`latest_correction` / :func:`load_correction` read it back by case key;
:func:`corrected_reference_cases` lets a cohort run score against the latest correction of each case
(``medseg cohort --references corrected``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike

from .io.orientation import display_aspect, display_slice, display_to_index
from .render import MAX_DISPLAY_SIDE, display_size

if TYPE_CHECKING:
    from .data.datasets import Case
    from .io import Volume
    from .store import Store


ROOT = Path(__file__).resolve().parents[1]

TOOLS = ("brush", "eraser", "fill")


# ----------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class SliceGeometry:
    """One plane's slice as the viewer shows it: the displayed slice is ``h x w`` source pixels of
    ``row_mm x col_mm``; the aspect-corrected picture is ``pic_h x pic_w``."""

    plane: str
    h: int
    w: int
    row_mm: float
    col_mm: float
    pic_h: int
    pic_w: int

    @property
    def extent_mm(self) -> tuple[float, float]:
        return self.h * self.row_mm, self.w * self.col_mm


def slice_geometry(
    shape: Sequence[int], spacing: Sequence[float], plane: str, max_side: int | None = MAX_DISPLAY_SIDE
) -> SliceGeometry:
    """The geometry of ``plane``'s slices of a (Z, Y, X) volume of ``spacing`` (mm), as displayed."""
    z, y, x = (int(s) for s in shape)
    h, w = {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[plane]
    sz, sy, sx = (float(s) for s in spacing)
    row_mm, col_mm = display_aspect((sz, sy, sx), plane)
    ph, pw, _ = display_size((h, w), row_mm, col_mm, max_side)
    return SliceGeometry(plane, h, w, float(row_mm), float(col_mm), ph, pw)


def canvas_to_mm(points_xy: ArrayLike, canvas_wh: tuple[float, float], geom: SliceGeometry) -> np.ndarray:
    """Canvas points ``(x, y)`` (pixels of a ``W x H`` canvas showing the whole picture, stretched)
    -> ``(row_mm, col_mm)`` from the displayed slice's top-left corner (module docstring)."""
    p = np.asarray(points_xy, float).reshape(-1, 2)
    cw, ch = float(canvas_wh[0]), float(canvas_wh[1])
    return np.stack([p[:, 1] / ch * geom.h * geom.row_mm, p[:, 0] / cw * geom.w * geom.col_mm], axis=1)


def mm_to_pixel(points_mm: ArrayLike, geom: SliceGeometry) -> np.ndarray:
    """``(row_mm, col_mm)`` -> the (row, col) of the displayed slice's pixel that contains the point
    (clipped to the slice)."""
    p = np.asarray(points_mm, float).reshape(-1, 2)
    r = np.clip(np.floor(p[:, 0] / geom.row_mm), 0, geom.h - 1).astype(int)
    c = np.clip(np.floor(p[:, 1] / geom.col_mm), 0, geom.w - 1).astype(int)
    return np.stack([r, c], axis=1)


def picture_to_slice(row_d: ArrayLike, col_d: ArrayLike, geom: SliceGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the aspect-corrected picture -> pixels of the displayed slice: the inverse of
    :func:`medseg_core.render.aspect_correct`'s nearest-neighbour resize (the very same index rule)."""
    r = np.minimum(((np.asarray(row_d) + 0.5) * geom.h / geom.pic_h).astype(int), geom.h - 1)
    c = np.minimum(((np.asarray(col_d) + 0.5) * geom.w / geom.pic_w).astype(int), geom.w - 1)
    return r, c


def picture_to_index(
    plane: str,
    index: int,
    row_d: int,
    col_d: int,
    shape: Sequence[int],
    spacing: Sequence[float],
    max_side: int | None = MAX_DISPLAY_SIDE,
) -> tuple[int, int, int]:
    """Array index (z, y, x) of the voxel shown at pixel (row_d, col_d) of the viewer's picture of
    slice ``index`` of ``plane`` (orientation flips and the aspect-correction resize undone)."""
    geom = slice_geometry(shape, spacing, plane, max_side)
    r, c = picture_to_slice(row_d, col_d, geom)
    nz, ny, nx = (int(s) for s in shape)
    return display_to_index(plane, int(index), int(r), int(c), (nz, ny, nx))


def _segment_distance_sq(py, px, a, b) -> np.ndarray:
    """Squared distance (mm^2) from points (py, px) to the segment a-b (both (row_mm, col_mm))."""
    dy, dx = b[0] - a[0], b[1] - a[1]
    L2 = dy * dy + dx * dx
    if L2 == 0.0:
        return (py - a[0]) ** 2 + (px - a[1]) ** 2
    t = np.clip(((py - a[0]) * dy + (px - a[1]) * dx) / L2, 0.0, 1.0)
    return (py - (a[0] + t * dy)) ** 2 + (px - (a[1] + t * dx)) ** 2


def stroke_footprint(points_mm: ArrayLike, width_mm: float, geom: SliceGeometry) -> np.ndarray:
    """Boolean (h, w) picture of the displayed slice: the voxels whose centres lie within
    ``width_mm / 2`` of the polyline ``points_mm`` (``(row_mm, col_mm)`` points; one point = a disk)."""
    pts = np.asarray(points_mm, float).reshape(-1, 2)
    out = np.zeros((geom.h, geom.w), bool)
    if len(pts) == 0 or width_mm <= 0:
        return out
    rad = width_mm / 2.0
    segs = [(pts[0], pts[0])] if len(pts) == 1 else list(itertools.pairwise(pts))
    for a, b in segs:
        lo = np.minimum(a, b) - rad
        hi = np.maximum(a, b) + rad
        r0 = max(0, int(math.floor(lo[0] / geom.row_mm - 0.5)))
        r1 = min(geom.h - 1, int(math.ceil(hi[0] / geom.row_mm - 0.5)))
        c0 = max(0, int(math.floor(lo[1] / geom.col_mm - 0.5)))
        c1 = min(geom.w - 1, int(math.ceil(hi[1] / geom.col_mm - 0.5)))
        if r1 < r0 or c1 < c0:
            continue
        py = ((np.arange(r0, r1 + 1) + 0.5) * geom.row_mm)[:, None]
        px = ((np.arange(c0, c1 + 1) + 0.5) * geom.col_mm)[None, :]
        out[r0 : r1 + 1, c0 : c1 + 1] |= _segment_distance_sq(py, px, a, b) <= rad * rad + 1e-9
    return out


# ------------------------------------------------------------------------------------ the canvas's objects
_ORIGIN = {"left": -0.5, "top": -0.5, "center": 0.0, "right": 0.5, "bottom": 0.5}


def _origin(v) -> float:
    return float(v) - 0.5 if isinstance(v, (int, float)) else _ORIGIN.get(str(v), -0.5)


def _cubic_bounds(p0, p1, p2, p3) -> list[tuple[float, float]]:
    """Extreme points of a cubic Bezier (fabric.js's ``getBoundsOfCurve``)."""
    pts = [tuple(p0), tuple(p3)]
    for axis in (0, 1):
        a0, a1, a2, a3 = p0[axis], p1[axis], p2[axis], p3[axis]
        # derivative / 3: A t^2 + B t + C
        A = -a0 + 3 * a1 - 3 * a2 + a3
        B = 2 * (a0 - 2 * a1 + a2)
        C = a1 - a0
        roots = []
        if abs(A) < 1e-12:
            if abs(B) > 1e-12:
                roots.append(-C / B)
        else:
            disc = B * B - 4 * A * C
            if disc >= 0:
                s = math.sqrt(disc)
                roots += [(-B + s) / (2 * A), (-B - s) / (2 * A)]
        for t in roots:
            if 0 < t < 1:
                u = 1 - t
                pts.append(
                    tuple(u**3 * p0[k] + 3 * u * u * t * p1[k] + 3 * u * t * t * p2[k] + t**3 * p3[k] for k in (0, 1))
                )
    return pts


def path_points(obj: dict, samples_per_curve: int = 8) -> np.ndarray:
    """The centre line of a fabric.js ``Path`` object (the canvas's freehand stroke) in canvas pixels.

    The path's commands are in the coordinates the stroke was drawn in; the object is drawn at its
    centre point (``left`` / ``top`` / origin / size) offset by ``pathOffset`` (the centre of the
    path's bounding box, computed as fabric.js does, quadratic segments bounded as the cubic
    ``(p0, c, c, p1)``), so a stroke moved, scaled or rotated with the canvas's edit tool maps to where
    it is shown. Quadratic segments are sampled at ``samples_per_curve`` points."""
    cmds = obj.get("path") or []
    pts: list[tuple[float, float]] = []
    bounds: list[tuple[float, float]] = []
    cur = start = (0.0, 0.0)
    for c in cmds:
        op = str(c[0]).upper()
        if op == "M":
            cur = start = (float(c[1]), float(c[2]))
            pts.append(cur)
        elif op == "L":
            nxt = (float(c[1]), float(c[2]))
            bounds += [cur, nxt]
            pts.append(nxt)
            cur = nxt
        elif op == "Q":
            ctl, nxt = (float(c[1]), float(c[2])), (float(c[3]), float(c[4]))
            bounds += _cubic_bounds(cur, ctl, ctl, nxt)
            for t in np.linspace(0, 1, samples_per_curve + 1)[1:]:
                u = 1 - t
                pts.append(
                    (
                        u * u * cur[0] + 2 * u * t * ctl[0] + t * t * nxt[0],
                        u * u * cur[1] + 2 * u * t * ctl[1] + t * t * nxt[1],
                    )
                )
            cur = nxt
        elif op == "C":
            c1, c2, nxt = (float(c[1]), float(c[2])), (float(c[3]), float(c[4])), (float(c[5]), float(c[6]))
            bounds += _cubic_bounds(cur, c1, c2, nxt)
            for t in np.linspace(0, 1, samples_per_curve + 1)[1:]:
                u = 1 - t
                pts.append(
                    tuple(u**3 * cur[k] + 3 * u * u * t * c1[k] + 3 * u * t * t * c2[k] + t**3 * nxt[k] for k in (0, 1))
                )
            cur = nxt
        elif op == "Z":
            pts.append(start)
            cur = start
    if not pts:
        return np.zeros((0, 2))
    p = np.asarray(pts, float)
    b = np.asarray(bounds or pts, float)
    offset = (b.min(axis=0) + b.max(axis=0)) / 2.0
    return _placed(obj, p - offset, float(np.ptp(b[:, 0])), float(np.ptp(b[:, 1])))


def _placed(obj: dict, local: np.ndarray, width: float, height: float) -> np.ndarray:
    """Local object coordinates (centred) -> canvas: scale, flip, rotate, then the centre point."""
    sx, sy = float(obj.get("scaleX", 1) or 1), float(obj.get("scaleY", 1) or 1)
    sw = float(obj.get("strokeWidth", 0) or 0)  # fabric.js adds it whether or not the object has a stroke
    uniform = bool(obj.get("strokeUniform"))
    width = float(obj.get("width", width))
    height = float(obj.get("height", height))
    dim_x = (width + (0 if uniform else sw)) * sx + (sw if uniform else 0)
    dim_y = (height + (0 if uniform else sw)) * sy + (sw if uniform else 0)
    left, top = float(obj.get("left", 0)), float(obj.get("top", 0))
    ox, oy = -_origin(obj.get("originX", "left")) * dim_x, -_origin(obj.get("originY", "top")) * dim_y
    ang = math.radians(float(obj.get("angle", 0) or 0))
    ca, sa = math.cos(ang), math.sin(ang)
    # the centre: (left, top) moved from the origin to the centre, rotated about (left, top)
    cx, cy = left + ox * ca - oy * sa, top + ox * sa + oy * ca
    fx = -1.0 if obj.get("flipX") else 1.0
    fy = -1.0 if obj.get("flipY") else 1.0
    lx, ly = local[:, 0] * sx * fx, local[:, 1] * sy * fy
    return np.stack([cx + lx * ca - ly * sa, cy + lx * sa + ly * ca], axis=1)


def circle_centre(obj: dict) -> tuple[float, float]:
    """Centre (canvas pixels) of a fabric.js ``Circle`` (the canvas's point tool: the click)."""
    r = float(obj.get("radius", 0))
    return tuple(_placed(obj, np.zeros((1, 2)), 2 * r, 2 * r)[0])


@dataclass
class CanvasMark:
    """One object drawn on the canvas: a freehand stroke (``points``: its centre line) or a click."""

    kind: str  # "stroke" | "click"
    points: np.ndarray  # (N, 2) canvas (x, y)
    colour: str = ""


def canvas_marks(json_data: dict | None) -> list[CanvasMark]:
    """The strokes and clicks of a drawable-canvas result's ``json_data`` (fabric.js JSON), in order."""
    out = []
    for obj in (json_data or {}).get("objects", []) or []:
        t = str(obj.get("type", "")).lower()
        if t == "path":
            pts = path_points(obj)
            if len(pts):
                out.append(CanvasMark("stroke", pts, str(obj.get("stroke") or "")))
        elif t == "circle":
            out.append(CanvasMark("click", np.asarray([circle_centre(obj)]), str(obj.get("stroke") or "")))
    return out


# ------------------------------------------------------------------------------------------- edits, history
@dataclass
class Edit:
    """Voxels one action changed: flat indices into the label's (Z, Y, X) array, values before and
    after. ``plane`` / ``index`` say where it was made."""

    label: str
    indices: np.ndarray
    before: np.ndarray
    after: np.ndarray
    plane: str
    index: int
    tool: str

    @property
    def n(self) -> int:
        return int(self.indices.size)

    @property
    def nbytes(self) -> int:
        return int(self.indices.nbytes + self.before.nbytes + self.after.nbytes)


class History:
    """Bounded undo / redo over :class:`Edit` records (only the changed voxels are kept)."""

    def __init__(self, max_steps: int = 50) -> None:
        self.max_steps = int(max_steps)
        self._undo: deque[Edit] = deque(maxlen=self.max_steps)
        self._redo: list[Edit] = []

    def push(self, edit: Edit) -> None:
        self._undo.append(edit)
        self._redo.clear()

    def undo(self, masks: dict[str, np.ndarray]) -> Edit | None:
        if not self._undo:
            return None
        e = self._undo.pop()
        masks[e.label].reshape(-1)[e.indices] = e.before
        self._redo.append(e)
        return e

    def redo(self, masks: dict[str, np.ndarray]) -> Edit | None:
        if not self._redo:
            return None
        e = self._redo.pop()
        masks[e.label].reshape(-1)[e.indices] = e.after
        self._undo.append(e)
        return e

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._undo) + sum(e.nbytes for e in self._redo)

    def __len__(self) -> int:
        return len(self._undo)


def _slice_flat_indices(shape: Sequence[int], plane: str, index: int) -> np.ndarray:
    """Flat indices of the (Z, Y, X) array laid out as the displayed slice (h, w)."""
    return display_slice(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(tuple(shape)), plane, index)


def apply_to_slice(
    mask: np.ndarray, plane: str, index: int, footprint: np.ndarray, value: int, label: str = "", tool: str = "brush"
) -> Edit | None:
    """Set the voxels of ``footprint`` (a bool picture of the displayed slice) to ``value`` in the
    (Z, Y, X) ``mask`` (in place); returns the :class:`Edit` (None when nothing changed)."""
    view = display_slice(mask, plane, index)
    fp = np.asarray(footprint, bool)
    if fp.shape != view.shape:
        raise ValueError(f"footprint {fp.shape} does not match the {plane} slice {view.shape}")
    sel = fp & (view != value)
    if not sel.any():
        return None
    idx = _slice_flat_indices(mask.shape, plane, index)[sel]
    flat = mask.reshape(-1)
    before = flat[idx].copy()
    flat[idx] = value
    return Edit(label, idx, before, np.full(idx.shape, value, mask.dtype), plane, int(index), tool)


class FillRefused(ValueError):
    """The clicked region is not enclosed by the mask (a fill would flood the slice)."""


def seeded_fill(slice2d: np.ndarray, row: int, col: int) -> np.ndarray:
    """The footprint of a fill at (row, col) of a displayed slice: the 4-connected background region
    holding the click. Raises :class:`FillRefused` when that region touches the slice's edge (not
    enclosed by the mask). A click on the mask returns an empty footprint (nothing to fill)."""
    from scipy import ndimage

    m = np.asarray(slice2d).astype(bool)
    if m[row, col]:
        return np.zeros_like(m)
    lab, _ = ndimage.label(~m)  # 4-connectivity (the default cross structure)
    region = lab == lab[row, col]
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        raise FillRefused(
            "The click is not inside a closed outline: the fill would flood the slice. "
            "Close the outline with the brush first."
        )
    return region


def holes_footprint(slice2d: np.ndarray) -> np.ndarray:
    """Every hole of the slice's mask (``scipy.ndimage.binary_fill_holes``), as a footprint."""
    from scipy import ndimage

    m = np.asarray(slice2d).astype(bool)
    return ndimage.binary_fill_holes(m) & ~m


# ---------------------------------------------------------------------------------- corrected vs model
def compare_masks(model: np.ndarray, corrected: np.ndarray, voxel_ml: float) -> dict:
    """Corrected vs model for one label: Dice (1.0 when both are empty), volumes (mL), the change
    (corrected - model, mL) and the voxels added / removed by the correction."""
    from . import metrics as M

    a, b = np.asarray(model).astype(bool), np.asarray(corrected).astype(bool)
    d = M.dice(b, a)
    added, removed = int((b & ~a).sum()), int((a & ~b).sum())
    va, vb = float(a.sum()) * voxel_ml, float(b.sum()) * voxel_ml
    return {
        "dice": 1.0 if math.isnan(d) else float(d),
        "model_ml": va,
        "corrected_ml": vb,
        "volume_change_ml": vb - va,
        "voxels_added": added,
        "voxels_removed": removed,
    }


class Correction:
    """A mask being corrected: the model's masks (kept), working copies, the history."""

    def __init__(
        self, base_name: str, masks: dict[str, np.ndarray], spacing: Sequence[float], max_steps: int = 50
    ) -> None:
        self.base_name = str(base_name)
        self.spacing = tuple(float(s) for s in spacing)
        self.base = {k: np.asarray(v) for k, v in masks.items()}
        self.masks = {k: (np.asarray(v) > 0).astype(np.uint8) for k, v in masks.items()}
        self.history = History(max_steps)

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.masks.values())).shape

    @property
    def nbytes(self) -> int:
        """What this correction adds to a session's memory: the working copies and the undo / redo history
        (the model's masks in ``base`` belong to the prediction and are counted with it)."""
        return sum(int(m.nbytes) for m in self.masks.values()) + self.history.nbytes

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def geometry(self, plane: str, max_side: int | None = MAX_DISPLAY_SIDE) -> SliceGeometry:
        return slice_geometry(self.shape, self.spacing, plane, max_side)

    def _commit(self, edit: Edit | None) -> Edit | None:
        if edit is not None:
            self.history.push(edit)
        return edit

    def stroke(
        self, label: str, plane: str, index: int, points_mm: ArrayLike, width_mm: float, erase: bool = False
    ) -> Edit | None:
        """Brush (or eraser) along ``points_mm`` ((row_mm, col_mm) on the displayed slice)."""
        fp = stroke_footprint(points_mm, width_mm, self.geometry(plane))
        return self._commit(
            apply_to_slice(
                self.masks[label], plane, index, fp, 0 if erase else 1, label, "eraser" if erase else "brush"
            )
        )

    def fill(self, label: str, plane: str, index: int, row: int, col: int) -> Edit | None:
        """Seeded fill at pixel (row, col) of the displayed slice (see :func:`seeded_fill`)."""
        fp = seeded_fill(display_slice(self.masks[label], plane, index), row, col)
        return self._commit(apply_to_slice(self.masks[label], plane, index, fp, 1, label, "fill"))

    def fill_holes(self, label: str, plane: str, index: int) -> Edit | None:
        fp = holes_footprint(display_slice(self.masks[label], plane, index))
        return self._commit(apply_to_slice(self.masks[label], plane, index, fp, 1, label, "fill holes"))

    def apply_marks(
        self,
        label: str,
        plane: str,
        index: int,
        marks: Iterable[CanvasMark],
        canvas_wh: tuple[float, float],
        tool: str,
        width_mm: float,
    ) -> list[Edit]:
        """Apply a canvas's strokes (brush / eraser) or clicks (fill) to the slice, in order."""
        geom = self.geometry(plane)
        edits = []
        for mk in marks:
            pts = canvas_to_mm(mk.points, canvas_wh, geom)
            if tool == "fill" or mk.kind == "click":
                r, c = mm_to_pixel(pts[:1], geom)[0]
                e = self.fill(label, plane, index, int(r), int(c))
            else:
                e = self.stroke(label, plane, index, pts, width_mm, erase=tool == "eraser")
            if e is not None:
                edits.append(e)
        return edits

    def undo(self) -> Edit | None:
        return self.history.undo(self.masks)

    def redo(self) -> Edit | None:
        return self.history.redo(self.masks)

    @property
    def changed(self) -> bool:
        return any(not np.array_equal(self.masks[k] > 0, np.asarray(self.base[k]) > 0) for k in self.masks)

    def compare(self) -> dict[str, dict]:
        """:func:`compare_masks` per label."""
        return {k: compare_masks(self.base[k], self.masks[k], self.voxel_ml) for k in self.masks}


def corrected_name(base_name: str, reviewer: str) -> str:
    """The corrected result's name, e.g. 'ovary_unet (corrected by A. Reviewer)'."""
    return f"{base_name} (corrected by {reviewer.strip() or 'reviewer'})"


# ------------------------------------------------------------------------------------------- persistence
def corrections_dir(db: str | None = None) -> Path:
    """Where saved corrections go: ``MEDSEG_CORRECTIONS``; else a ``corrections`` folder beside the
    ``MEDSEG_DB`` SQLite file (``db`` overrides it); for a database server URL, beside the default
    database path (``$XDG_DATA_HOME/medseg``). A folder inside the repository is refused (patient
    masks must not end up in a checkout or a commit)."""
    from . import store as S

    env = os.environ.get("MEDSEG_CORRECTIONS", "").strip()
    if env:
        path = Path(env).expanduser().resolve()
    else:
        url = S.db_url(db)
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///") :]).parent / "corrections"
        else:
            path = S.default_path().parent / "corrections"
    path = path.resolve()
    if path == ROOT or ROOT in path.parents:
        raise ValueError(
            f"The corrections folder {path} lies inside the repository; set MEDSEG_CORRECTIONS "
            "(or MEDSEG_DB) to a folder outside it."
        )
    return path


def _label_map(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, int], int]:
    """A uint8 label map (label k -> value k + 1, later labels over earlier ones) and the overlap."""
    names = list(masks)
    out = np.zeros(next(iter(masks.values())).shape, np.uint8)
    overlap = 0
    for k, n in enumerate(names):
        m = np.asarray(masks[n]) > 0
        overlap += int((m & (out > 0)).sum())
        out[m] = k + 1
    return out, {n: k + 1 for k, n in enumerate(names)}, overlap


@dataclass
class SavedCorrection:
    path: Path
    verdict_id: int
    name: str
    record: dict = field(default_factory=dict)


def save_correction(
    correction: Correction,
    volume: Volume,
    case_key: str,
    reviewer_name: str,
    *,
    reviewer_email: str | None = None,
    signed_in: bool = False,
    options: dict | None = None,
    note: str = "",
    store: Store | None = None,
    folder: str | Path | None = None,
) -> SavedCorrection:
    """Write the corrected masks (compressed NIfTI on ``volume``'s grid + JSON sidecar) under
    :func:`corrections_dir` / case key, record a ``needs_correction`` verdict referencing the file and
    an audit row ``correction``. Returns where it went and the verdict's id."""
    from . import store as S
    from .io import mask_nifti_bytes

    store = store or S.Store()
    S._check_key(case_key)
    if not (reviewer_name or "").strip():
        raise ValueError("A correction needs the reviewer's name.")
    folder = Path(folder) if folder is not None else corrections_dir(store.url)
    (folder / case_key).mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"_{time.time_ns() % 1_000_000_000:09d}"
    path = folder / case_key / f"correction_{stamp}.nii.gz"
    label_map, values, overlap = _label_map(correction.masks)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(mask_nifti_bytes(label_map, volume))
    tmp.replace(path)
    cmp = correction.compare()
    name = corrected_name(correction.base_name, reviewer_name)
    record = {
        "case_key": case_key,
        "name": name,
        "base_model": correction.base_name,
        "labels": values,
        "overlap_voxels": overlap,
        "reviewer": reviewer_name.strip(),
        "reviewer_email": reviewer_email,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corrected_vs_model": cmp,
        "edits": len(correction.history),
    }
    path.with_name(path.name[: -len(".nii.gz")] + ".json").write_text(json.dumps(record, indent=1))
    first = next(iter(cmp))
    summary = (
        f"corrected {first}: Dice vs model {cmp[first]['dice']:.3f}, "
        f"volume change {cmp[first]['volume_change_ml']:+.2f} mL"
    )
    vid = store.add_verdict(
        case_key,
        "needs_correction",
        reviewer_name,
        reviewer_email,
        signed_in=signed_in,
        note=(note + " · " if note else "") + summary,
        model=correction.base_name,
        options=options,
        corrected_mask=str(path),
    )
    store.add_audit(
        "correction", reviewer_name, reviewer_email, case_key=case_key, model=correction.base_name, detail=summary
    )
    return SavedCorrection(path, vid, name, record)


def sidecar(path: str | Path) -> dict:
    """The JSON record saved beside a correction's NIfTI ({} when missing)."""
    p = Path(path)
    j = p.with_name(re.sub(r"\.nii(\.gz)?$", "", p.name) + ".json")
    try:
        return json.loads(j.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def latest_correction(case_key: str, store: Store | None = None) -> dict | None:
    """The newest verdict row of ``case_key`` that references a corrected mask whose file exists."""
    from . import store as S

    store = store or S.Store()
    for row in store.verdicts(case_key):
        p = row.get("corrected_mask")
        if p and Path(p).is_file():
            return row
    return None


def load_correction(path: str | Path, like: Volume) -> dict[str, np.ndarray]:
    """The masks of a saved correction, by label name (from its sidecar; 'mask' when it has none)."""
    from .io import load_label_masks

    labels = sidecar(path).get("labels") or {"mask": 1}
    return load_label_masks(str(path), like, names={int(v): k for k, v in labels.items()})


class _CorrectedCase:
    """A dataset case whose reference is replaced by a saved correction (delegates everything else)."""

    def __init__(self, case, path: Path, label: str | None) -> None:
        self._case, self.correction_path, self._label = case, Path(path), label

    def __getattr__(self, name):
        return getattr(self._case, name)

    def load(self):
        vol, masks = self._case.load()
        corrected = load_correction(self.correction_path, vol)
        masks = dict(masks)
        names = [k for k in masks if k != "ovary_other"]
        for lab, m in corrected.items():
            target = lab if lab in masks else (self._label or (names[0] if names else lab))
            masks[target] = m
        return vol, masks


def corrected_reference_cases(
    cases: Iterable[Case], store: Store | None = None, label: str | None = None
) -> tuple[list[Case], dict[str, str]]:
    """``cases`` with each reference replaced by the case's latest saved correction where one exists.

    A case matches by its dataset case id or by the app's case key (the content hash of its volume,
    :func:`medseg_core.review.case_key`, which is what the review page records). Returns
    ``(cases, used)`` with ``used`` mapping case id -> correction file. ``label``: the reference to
    replace when the correction's label is not a reference name (default: the first reference)."""
    from . import store as S
    from .review import case_key as content_key

    store = store or S.Store()
    by_key: dict[str, str] = {}
    for row in reversed(store.verdicts()):  # oldest first: later rows overwrite
        p = row.get("corrected_mask")
        if p and Path(p).is_file():
            by_key[row["case_key"]] = p
    out: list[Case] = []
    used: dict[str, str] = {}
    for case in cases:
        path = by_key.get(str(case.case_id))
        if path is None and by_key:
            vol, _ = case.load()
            path = by_key.get(content_key(vol))
        if path is None:
            out.append(case)
        else:
            used[str(case.case_id)] = path
            out.append(cast("Case", _CorrectedCase(case, Path(path), label)))  # a Case stand-in (__getattr__)
    return out, used
