"""Canonicalisation and radiological display of (Z, Y, X) RAS+ arrays.

Display convention (radiological, as in OHIF, Slicer and every PACS):

* axial: anterior at the top, patient **left on the image right**;
* coronal: superior at the top, patient left on the image right;
* sagittal: superior at the top, anterior on the image left.

Every 2D picture of a volume goes through :func:`display_slice`; nothing else in the project
flips arrays for display. :func:`display_aspect` gives the physical (row, column) pixel size so
that no picture is stretched.
"""

from __future__ import annotations

import numpy as np

PLANES = ("axial", "coronal", "sagittal")

# Letter shown at the image's left and right edges, and top/bottom, per plane.
EDGE_LABELS = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}


def orientation_known(meta: dict | None) -> bool:
    """Whether the file stated where the patient is, so the R/L/A/P/S/I letters can be shown.

    Loaders record ``meta["orientation_known"]``: False for a DICOM without ImageOrientationPatient /
    ImagePositionPatient (shown with an assumed display orientation) and for 2D image files (PNG,
    JPEG, ...: no orientation in the file). A NIfTI whose qform and sform codes are both 0
    (``meta["geometry_note"]``) states no orientation either. Anything else (NIfTI with a
    transform, DICOM with patient geometry, bundled samples) is known."""
    meta = meta or {}
    if "orientation_known" in meta:
        return bool(meta["orientation_known"])
    return meta.get("geometry_note") != "no qform/sform in header"


def edge_letters(plane: str, known: bool = True) -> dict[str, str]:
    """The orientation letters of a displayed picture's edges (``left``, ``right``, ``top``,
    ``bottom``); empty when the orientation is not known (no letter is better than a wrong one)."""
    return dict(EDGE_LABELS[_check_plane(plane)]) if known else {}


def n_slices(shape: tuple[int, int, int], plane: str) -> int:
    """Number of slices of a (Z, Y, X) array along ``plane``."""
    z, y, x = shape
    return {"axial": z, "coronal": y, "sagittal": x}[_check_plane(plane)]


def _check_plane(plane: str) -> str:
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    return plane


def display_slice(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D picture of slice ``index`` of a canonical (Z, Y, X) RAS+ array, as displayed.

    Works for any array laid out like a volume (images, masks, probability maps; a trailing
    channel axis, e.g. RGB, is kept). The result is a view where possible.
    """
    plane = _check_plane(plane)
    if plane == "axial":
        # rows: Y (posterior->anterior) flipped so anterior is up; cols: X (left->right) flipped so
        # the patient's right is on the image left.
        return array[index, ::-1, ::-1]
    if plane == "coronal":
        return array[::-1, index, ::-1]
    # sagittal: rows Z flipped (superior up); cols Y flipped (anterior on the left)
    return array[::-1, :, index][:, ::-1]


def display_to_index(plane: str, index: int, row: int, col: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Array index (z, y, x) of the pixel at (row, col) of :func:`display_slice`'s picture."""
    z, y, x = shape
    plane = _check_plane(plane)
    if plane == "axial":
        return index, y - 1 - row, x - 1 - col
    if plane == "coronal":
        return z - 1 - row, index, x - 1 - col
    return z - 1 - row, y - 1 - col, index


def display_aspect(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """Physical size in mm of one displayed pixel as (row height, column width)."""
    sz, sy, sx = spacing
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[_check_plane(plane)]


def to_canonical(data_xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient an (x, y, z) array with its affine to the closest canonical RAS+.

    Returns ``(array_zyx, canonical_affine)``. Only flips and axis permutations are applied (no
    resampling), exactly as ``nibabel.as_closest_canonical``.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    canon = nib.orientations.apply_orientation(data_xyz, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data_xyz.shape[:3])
    return np.ascontiguousarray(np.transpose(canon, (2, 1, 0))), new_affine


def from_canonical_xyz(array_zyx: np.ndarray) -> np.ndarray:
    """(Z, Y, X) back to nibabel's (x, y, z) order on the same (canonical) grid."""
    return np.transpose(array_zyx, (2, 1, 0))
