"""NIfTI bytes for the client-side NiiVue viewer (issue 18 item 5); no Streamlit here.

NiiVue (https://github.com/niivue/niivue, through the ``niivue-streamlit`` component) draws slices,
multiplanar views and a 3D rendering in the browser with WebGL, from NIfTI bytes. What this module
guarantees, and the tests check:

* **Geometry.** The volume and every overlay are written on the case's canonical grid with the
  case's affine (``Volume.affine``: voxel ``(x, y, z)`` -> RAS+ mm), the ``(Z, Y, X)`` arrays
  transposed to NIfTI's ``(x, y, z)`` order. A voxel at array index ``(z, y, x)`` lands at
  ``affine @ (x, y, z, 1)``, the same world point as in the loaded file. NiiVue reorients by the
  sform to RAS itself; its ``radiological`` setting then puts the patient's right on the screen's
  left, the convention of :mod:`medseg_core.io.orientation` and of the PNG viewer.
* **Window.** NiiVue takes the display range from the header's ``cal_min`` / ``cal_max`` when they
  are set (its ``trustCalMinMax`` default; read from the component's bundled NiiVue 0.68 source),
  so a window preset (width, level) of :data:`medseg_core.render.CT_PRESETS` or the auto window
  is written there as ``[level - width / 2, level + width / 2]``.
* **Label colours.** The ``niivue-streamlit`` component accepts only a NiiVue colormap *name*
  per overlay (no label table), so masks travel as one RGBA32 overlay (NIfTI datatype 2304) whose
  voxels carry the exact colour the PNG viewer uses (:data:`medseg_core.render.LABEL_COLOURS`, or
  :data:`medseg_core.render.COMPARE_COLOURS` for TP / FP / FN) and alpha 0 outside every mask.
  :func:`label_lut` gives the same colours as a NiiVue label colormap (``{R, G, B, A, I, labels}``)
  for a viewer that takes one.
* **Size.** Everything goes to the browser base64-encoded over Streamlit's websocket; a volume
  above ``max_voxels`` is sent with every k-th voxel in-plane (and through-plane if needed), the
  affine's columns scaled by k so that each sent voxel keeps its exact world position.
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .io.orientation import from_canonical_xyz

if TYPE_CHECKING:
    from .io import Volume

#: NIfTI ``intent_code`` of a label map (NIFTI_INTENT_LABEL).
INTENT_LABEL = 1002
#: Default voxel budget of what is sent to the browser (int16: 64 MB raw before gzip + base64).
MAX_VOXELS = 32_000_000
RGBA = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])


@dataclass(frozen=True)
class Grid:
    """What is sent: stride per axis ``(sz, sy, sx)`` and the affine of the sent grid."""

    stride: tuple[int, int, int]
    affine: np.ndarray

    @property
    def reduced(self) -> bool:
        return any(s > 1 for s in self.stride)


def sent_grid(shape: Sequence[int], affine: np.ndarray, max_voxels: int = MAX_VOXELS) -> Grid:
    """The stride that brings ``shape`` (Z, Y, X) under ``max_voxels``: in-plane first (Y and X
    together), then through-plane; the affine's voxel columns scaled by the stride (the origin stays:
    sent voxel 0 is voxel 0)."""
    z, y, x = (int(v) for v in shape)
    sz = sxy = 1
    while (-(-z // sz)) * (-(-y // sxy)) * (-(-x // sxy)) > max_voxels:
        if sxy <= sz or z == 1:
            sxy += 1
        else:
            sz += 1
    a = np.asarray(affine, dtype=np.float64).copy()
    a[:3, 0] *= sxy  # column 0: voxel x
    a[:3, 1] *= sxy
    a[:3, 2] *= sz
    return Grid((sz, sxy, sxy), a)


def _reduce(array_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    sz, sy, sx = grid.stride
    return array_zyx[::sz, ::sy, ::sx]


def _encode(
    array_xyz: np.ndarray,
    affine: np.ndarray,
    *,
    cal: tuple[float, float] | None = None,
    intent: int | None = None,
    compress: bool = True,
    level: int = 1,
) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(array_xyz, affine)
    img.set_qform(affine, code=1)  # scanner-anatomical, as medseg_core.io.nifti.nifti_bytes
    img.set_sform(affine, code=1)
    hdr = img.header
    hdr.set_xyzt_units("mm")
    if cal is not None:
        hdr["cal_min"], hdr["cal_max"] = float(cal[0]), float(cal[1])
    if intent is not None:
        hdr["intent_code"] = intent
    raw = img.to_bytes()
    if not compress:
        return raw
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=level, mtime=0) as fh:  # level 1: speed over size
        fh.write(raw)
    return buf.getvalue()


def window_range(width: float, level: float) -> tuple[float, float]:
    """(cal_min, cal_max) of a (width, level) window, as :func:`medseg_core.render.apply_window`."""
    return float(level) - float(width) / 2.0, float(level) + float(width) / 2.0


def volume_nifti(
    vol: Volume, window: tuple[float, float] | None = None, *, max_voxels: int = MAX_VOXELS, compress: bool = True
) -> bytes:
    """NIfTI-1 bytes of a :class:`medseg_core.io.Volume` for NiiVue: the case's affine, its window
    (``(width, level)``) in ``cal_min`` / ``cal_max``; int16 when every value is an integer in the
    int16 range (CT in HU, most MR), float32 otherwise."""
    grid = sent_grid(vol.shape, vol.affine, max_voxels)
    arr = _reduce(vol.array, grid)
    if (
        np.all(np.isfinite(arr))
        and arr.min(initial=0) >= -32768
        and arr.max(initial=0) <= 32767
        and np.array_equal(arr, np.round(arr))
    ):
        data = arr.astype(np.int16)
    else:
        data = arr.astype(np.float32)
    cal = window_range(*window) if window is not None else None
    return _encode(np.ascontiguousarray(from_canonical_xyz(data)), grid.affine, cal=cal, compress=compress)


def rgba_layers(
    shape: Sequence[int], layers: Iterable[tuple[np.ndarray, Sequence[int]]], alpha: float = 1.0
) -> np.ndarray:
    """(Z, Y, X, 4) uint8 of coloured binary layers ``[(mask_zyx, (r, g, b)), ...]``, later layers on
    top (as :func:`medseg_core.render.overlay`), alpha ``alpha`` inside any layer and 0 elsewhere."""
    out = np.zeros(tuple(shape) + (4,), dtype=np.uint8)
    a = int(round(255 * float(np.clip(alpha, 0.0, 1.0))))
    for mask, colour in layers:
        m = np.asarray(mask).astype(bool)
        if m.shape != tuple(shape):
            raise ValueError(f"layer shape {m.shape} does not match the volume {tuple(shape)}")
        out[m, :3] = np.asarray(colour, dtype=np.uint8)[:3]
        out[m, 3] = a
    return out


def overlay_nifti(
    layers: Sequence[tuple[np.ndarray, Sequence[int]]],
    like: Volume,
    *,
    max_voxels: int = MAX_VOXELS,
    compress: bool = True,
) -> bytes:
    """NIfTI-1 RGBA32 bytes (datatype 2304) of coloured masks on ``like``'s grid (a Volume): each
    voxel carries its layer's colour, alpha 255 inside a mask and 0 outside (transparent in NiiVue)."""
    grid = sent_grid(like.shape, like.affine, max_voxels)
    rgba = _reduce(rgba_layers(like.shape, layers), grid)
    packed = np.ascontiguousarray(rgba).view(RGBA)[..., 0]  # (Z, Y, X) of RGBA records
    return _encode(np.ascontiguousarray(from_canonical_xyz(packed)), grid.affine, compress=compress)


def label_nifti(mask: np.ndarray, like: Volume, *, max_voxels: int = MAX_VOXELS, compress: bool = True) -> bytes:
    """A uint8 label map (0 background, 1..n labels) with NIfTI intent LABEL, on ``like``'s grid."""
    m = np.asarray(mask)
    if m.shape != like.shape:
        raise ValueError(f"mask shape {m.shape} does not match volume shape {like.shape}")
    grid = sent_grid(like.shape, like.affine, max_voxels)
    data = np.ascontiguousarray(from_canonical_xyz(_reduce(m.astype(np.uint8), grid)))
    return _encode(data, grid.affine, intent=INTENT_LABEL, compress=compress)


def label_lut(names: Sequence[str], colours: Sequence[Sequence[int]]) -> dict:
    """A NiiVue label colormap (``nv.setColormapLabel``'s input): index 0 transparent background,
    label k (1-based) in ``colours[k - 1]``, opaque."""
    names, colours = list(names), [tuple(int(c) for c in col[:3]) for col in colours]
    if len(names) != len(colours):
        raise ValueError("one colour per label name")
    return {
        "R": [0] + [c[0] for c in colours],
        "G": [0] + [c[1] for c in colours],
        "B": [0] + [c[2] for c in colours],
        "A": [0] + [255] * len(colours),
        "I": list(range(len(colours) + 1)),
        "labels": ["background"] + names,
    }


def data_url(nifti: bytes) -> str:
    """A ``data:`` URL of NIfTI bytes (gzip or not), for a viewer that loads images by URL."""
    kind = "application/gzip" if nifti[:2] == b"\x1f\x8b" else "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(nifti).decode()}"


def world_of_voxel(affine: np.ndarray, zyx: Sequence[float]) -> np.ndarray:
    """RAS+ mm of array index ``(z, y, x)`` under a voxel ``(x, y, z)`` affine."""
    z, y, x = zyx
    return (np.asarray(affine, dtype=np.float64) @ np.array([x, y, z, 1.0]))[:3]
