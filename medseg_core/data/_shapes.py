"""Geometry helpers for the phantoms: shapes in millimetres on a canonical (Z, Y, X) RAS+ grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Grid:
    """World coordinates (mm, RAS+) of a (Z, Y, X) grid centred on the origin."""

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.axes = [
            (np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s for n, s in zip(self.shape, self.spacing, strict=True)
        ]

    @property
    def affine(self) -> np.ndarray:
        sz, sy, sx = self.spacing
        nz, ny, nx = self.shape
        a = np.diag([sx, sy, sz, 1.0])
        a[:3, 3] = [-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz]
        return a

    def bbox(self, center: Sequence[float], radius: Sequence[float]) -> tuple[slice, ...]:
        """Index slices covering ``center`` +- ``radius`` (mm) along (z, y, x)."""
        out = []
        for ax, c, r, s in zip(self.axes, center, radius, self.spacing, strict=True):
            lo = int(np.searchsorted(ax, c - r - s))
            hi = int(np.searchsorted(ax, c + r + s))
            out.append(slice(max(lo, 0), min(hi, len(ax))))
        return tuple(out)

    def ellipsoid(
        self, center: Sequence[float], radii: Sequence[float], angle_deg: float = 0.0, soft: float = 0.0
    ) -> tuple[tuple[slice, ...], np.ndarray]:
        """(bbox, local float mask in [0, 1]) of an ellipsoid; ``center``/``radii`` in (z, y, x) mm.

        ``angle_deg`` rotates in the axial (x, y) plane. ``soft`` > 0 gives a smooth edge of that
        width in mm (partial-volume look); 0 gives a hard 0/1 mask.
        """
        rmax = max(radii) + soft
        bb = self.bbox(center, (rmax, rmax, rmax))
        z = self.axes[0][bb[0]][:, None, None] - center[0]
        y = self.axes[1][bb[1]][None, :, None] - center[1]
        x = self.axes[2][bb[2]][None, None, :] - center[2]
        t = np.deg2rad(angle_deg)
        xr = x * np.cos(t) + y * np.sin(t)
        yr = -x * np.sin(t) + y * np.cos(t)
        d = np.sqrt((z / radii[0]) ** 2 + (yr / radii[1]) ** 2 + (xr / radii[2]) ** 2)
        if soft <= 0:
            return bb, (d <= 1.0).astype(np.float32)
        edge = soft / max(min(radii), 1e-3)
        return bb, np.clip((1.0 + edge / 2 - d) / edge, 0.0, 1.0).astype(np.float32)


def paint(img: np.ndarray, bb: tuple[slice, ...], m: np.ndarray, value: float) -> None:
    """Blend ``value`` into ``img`` where the local mask ``m`` is > 0 (``m`` is the opacity)."""
    sub = img[bb]
    sub *= 1.0 - m
    sub += m * value


def stamp(mask: np.ndarray, bb: tuple[slice, ...], m: np.ndarray, label: int = 1) -> None:
    mask[bb][m >= 0.5] = label


def smooth_field(shape: Sequence[int], rng: np.random.Generator, strength: float, scale_vox: float = 0.0) -> np.ndarray:
    """A smooth multiplicative field exp(low-order polynomial), mean about 1 (an MRI bias field)."""
    zz, yy, xx = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    c = rng.normal(0, strength, size=6)
    f = (
        c[0] * xx[None, None, :]
        + c[1] * yy[None, :, None]
        + c[2] * zz[:, None, None]
        + c[3] * xx[None, None, :] * yy[None, :, None]
        + c[4] * xx[None, None, :] ** 2
        + c[5] * yy[None, :, None] ** 2
    )
    return np.exp(f).astype(np.float32)
