"""The :class:`Volume` every part of medseg passes around.

Array orientation (the one convention of this project)
-----------------------------------------------------
``Volume.array`` has shape ``(Z, Y, X)`` and is stored in the *closest canonical RAS+*
orientation that nibabel's ``as_closest_canonical`` gives:

* X (axis 2) increases towards the patient's **R**ight,
* Y (axis 1) increases towards **A**nterior,
* Z (axis 0) increases towards **S**uperior.

``Volume.affine`` is the NIfTI-style 4x4 voxel-to-world matrix (world in RAS+ millimetres, as in
NIfTI and nibabel) that maps the voxel index ``(x, y, z, 1)`` -- i.e. ``(array index 2, 1, 0)`` --
to world coordinates. :meth:`Volume.index_to_world` takes indices in array order so nobody has to
remember the reversal. ``spacing`` is ``(sz, sy, sx)`` in millimetres, the array's axis order.

Display is radiological (patient left on image right, anterior up), by
:mod:`medseg_core.io.orientation`; never show ``array[z]`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import format_value

MODALITIES = ("CT", "MR", "US", "OT")


@dataclass
class Volume:
    """An image volume with its geometry.

    Attributes:
        array: float32, ``(Z, Y, X)``, canonical RAS+ (see the module docstring). A 2D image
            is ``(1, Y, X)``.
        spacing: voxel size in mm, ``(sz, sy, sx)``.
        affine: 4x4 voxel-to-world (RAS+, mm) for voxel index ``(x, y, z)``.
        modality: "CT" (values in HU), "MR", "US" or "OT".
        name: a display name (the file name without identifying data).
        meta: non-identifying acquisition facts (never names, IDs, dates, institutions).
        warnings: things the loader corrected or noticed, in plain sentences.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    modality: str = "OT"
    name: str = "volume"
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: DICOM inputs only: the Study / Series / Frame of Reference / SOP Instance UIDs a DICOM SEG
    #: export needs to reference its source images. Kept apart from ``meta`` (which is shown and may
    #: be logged), never displayed, never written anywhere but into a SEG export.
    dicom_ref: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (Z, Y, X); got shape {arr.shape}")
        self.array = np.ascontiguousarray(arr, dtype=np.float32)
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        if len(self.spacing) != 3:
            raise ValueError("Volume.spacing must have three entries (sz, sy, sx) in mm")
        self.affine = np.asarray(self.affine, dtype=np.float64).reshape(4, 4)
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")

    # ------------------------------------------------------------------ geometry helpers
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def is_2d(self) -> bool:
        return self.array.shape[0] == 1

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def orientation(self) -> str:
        """Axis codes of ``affine`` for (x, y, z), e.g. ``"RAS"``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def index_to_world(self, z: float, y: float, x: float) -> np.ndarray:
        """World RAS+ position in mm of array index ``(z, y, x)``."""
        return (self.affine @ np.array([x, y, z, 1.0]))[:3]

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A copy on the same grid with another array (shape must match)."""
        if np.shape(array) != self.array.shape:
            raise ValueError(f"shape {np.shape(array)} does not match volume shape {self.array.shape}")
        kw: dict[str, Any] = dict(
            array=array,
            spacing=self.spacing,
            affine=self.affine.copy(),
            modality=self.modality,
            name=self.name,
            meta=dict(self.meta),
            warnings=list(self.warnings),
            dicom_ref=self.dicom_ref,
        )
        kw.update(changes)
        return Volume(**kw)

    def describe(self) -> dict[str, Any]:
        """Geometry facts for display (no identifiers)."""
        z, y, x = self.shape
        return {
            "shape (Z, Y, X)": f"{z} x {y} x {x}",
            "spacing (mm, Z/Y/X)": " x ".join(f"{s:.4g}" for s in self.spacing),
            "orientation": self.orientation,
            "source orientation": self.meta.get("source_orientation", "unknown"),
            "modality": self.modality + _modality_note(self.meta.get("modality_source")),
            "field of view (mm, Z/Y/X)": " x ".join(
                f"{n * s:.1f}" for n, s in zip(self.shape, self.spacing, strict=True)
            ),
            "intensity range"
            + (" (HU)" if self.modality == "CT" else ""): f"{format_value(float(self.array.min()), '.4g')} .. "
            f"{format_value(float(self.array.max()), '.4g')}",
            **({"spatial unit": self.meta["spatial_unit"]} if self.meta.get("spatial_unit", "mm") != "mm" else {}),
        }


def _modality_note(source: str | None) -> str:
    """What the geometry table adds to a modality the file did not state."""
    if source and source.startswith("guessed"):
        return " (guessed from the intensities: the file does not say)"
    if source and source.startswith("assumed"):
        return " (assumed for a picture file; choose another on Load case)"
    return ""
