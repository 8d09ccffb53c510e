"""DICOM reading: single files (incl. multi-frame and RGB ultrasound) and series.

Geometry follows the DICOM standard (PS3.3 C.7.6.2): world is LPS in mm; a pixel at column ``i``
and row ``j`` of a slice lies at ``IPP + i * PixelSpacing[1] * rowcos + j * PixelSpacing[0] *
colcos``. Slices are ordered by the projection of ImagePositionPatient on the slice normal
``rowcos x colcos`` (never by InstanceNumber or file name). The LPS affine is turned into RAS+ and
the array into the project's canonical orientation by :func:`orientation.to_canonical`.

Nothing identifying is read into ``meta``: only the whitelisted acquisition facts in
:data:`SAFE_META`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError, Limits, check_voxel_budget
from .orientation import to_canonical

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: DICOM keywords copied into Volume.meta (acquisition facts only; no names, IDs, dates,
#: institutions, free-text descriptions or UIDs).
SAFE_META = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "SliceThickness",
    "SpacingBetweenSlices",
    "KVP",
    "ConvolutionKernel",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "BitsStored",
    "ScanningSequence",
)

_NON_IMAGE_HINTS = {
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT structure set (contours, not an image)",
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation object (upload it as a mask, or the image it belongs to)",
}
SEG_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.66.7",
)  # Segmentation, Label Map Segmentation
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

#: Warning for images without ImageOrientationPatient / ImagePositionPatient (any number of slices).
ORIENTATION_ASSUMED = (
    "This DICOM does not say how the patient lay (no Image Orientation / Image Position "
    "(Patient)): it is shown as stored, so the patient's left and right cannot be known and the "
    "viewer shows no R/L/A/P letters."
)


def is_segmentation(ds: Dataset) -> bool:
    """A DICOM Segmentation (SEG): it has pixel data, but it is a mask, never an image."""
    return str(getattr(ds, "SOPClassUID", "") or "") in SEG_SOP_CLASSES


def _n_segments(ds) -> str:
    n = len(getattr(ds, "SegmentSequence", None) or [])
    return f"{n} segment{'s' if n != 1 else ''}"


def segmentation_as_image_error(ds: Dataset) -> InputError:
    return InputError(
        f"This file is a DICOM Segmentation ({_n_segments(ds)}); upload it as a mask (reference or "
        "prediction) for the image it belongs to."
    )


@dataclass
class SeriesInfo:
    """One DICOM series found in an upload (no identifying fields).

    ``key`` is an opaque hash of the series UID, stable for the same upload.
    """

    key: str
    modality: str
    n_images: int
    n_frames: int
    rows: int
    cols: int
    has_pixels: bool
    kind: str

    def label(self) -> str:
        what = f"{self.modality}, {self.n_frames} slice{'s' if self.n_frames != 1 else ''}, {self.rows} x {self.cols}"
        return what if self.has_pixels else f"{self.modality}, {self.kind} (no image)"


def _read(name: str, data: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, Exception):
        return None


def _is_dicom_dataset(ds) -> bool:
    if ds is None:
        return False
    return "PixelData" in ds or (("SOPClassUID" in ds or "Modality" in ds) and len(ds) > 2)


def parse_files(files: list[tuple[str, bytes]]) -> tuple[list[tuple[str, Dataset]], int]:
    """Parse DICOM files; returns ([(name, dataset)], number of non-DICOM files skipped)."""
    out: list[tuple[str, Dataset]] = []
    skipped = 0
    for name, data in files:
        ds = _read(name, data)
        if not _is_dicom_dataset(ds) or "DirectoryRecordSequence" in ds:
            skipped += 1
            continue
        out.append((name, ds))
    return out, skipped


def _series_key(ds) -> str:
    uid = str(getattr(ds, "SeriesInstanceUID", "") or "no-series-uid")
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


def _modality(ds) -> str:
    m = str(getattr(ds, "Modality", "") or "").upper()
    return m if m in ("CT", "MR", "US") else "OT"


def _sop_name(ds) -> str:
    uid = str(getattr(ds, "SOPClassUID", "") or "")
    if uid in _NON_IMAGE_HINTS:
        return _NON_IMAGE_HINTS[uid]
    try:
        from pydicom.uid import UID

        nm = UID(uid).name
        if "Structured Report" in nm or "SR" in nm.split():
            return "a structured report (text, not an image)"
        return nm or "an object without pixel data"
    except Exception:
        return "an object without pixel data"


def group_series(datasets: list[tuple[str, Dataset]]) -> dict[str, list[tuple[str, Dataset]]]:
    groups: dict[str, list[tuple[str, Dataset]]] = {}
    for name, ds in datasets:
        groups.setdefault(_series_key(ds), []).append((name, ds))
    return groups


def series_infos(groups: dict[str, list]) -> list[SeriesInfo]:
    infos = []
    for key, items in groups.items():
        ds0 = items[0][1]
        with_pix = [ds for _, ds in items if "PixelData" in ds and not is_segmentation(ds)]
        frames = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for ds in with_pix)
        infos.append(
            SeriesInfo(
                key=key,
                modality=_modality(ds0),
                n_images=len(items),
                n_frames=frames,
                rows=int(getattr(with_pix[0] if with_pix else ds0, "Rows", 0) or 0),
                cols=int(getattr(with_pix[0] if with_pix else ds0, "Columns", 0) or 0),
                has_pixels=bool(with_pix),
                kind="image"
                if with_pix
                else (f"a DICOM Segmentation ({_n_segments(ds0)})" if is_segmentation(ds0) else _sop_name(ds0)),
            )
        )
    infos.sort(key=lambda s: (not s.has_pixels, -s.n_frames))
    return infos


def _pixels(ds, name: str) -> np.ndarray:
    """Decoded stored pixel values, colour converted to grey (luminance, ITU-R BT.601)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types; translate all of them
        msg = str(exc).lower()
        ts_name = getattr(ts, "name", None) or "an unknown transfer syntax"
        if any(t in msg for t in ("length", "truncat", "end of", "buffer", "less than expected")):
            raise InputError(
                f"'{name}' is cut short: its pixel data is incomplete; export or copy the DICOM file again."
            ) from None
        if ts is not None and getattr(ts, "is_compressed", False):
            raise InputError(
                f"'{name}' is compressed as {ts_name}, which this server cannot decode; "
                "export the series uncompressed (Explicit VR Little Endian) and upload it again."
            ) from None
        raise InputError(
            f"The pixel data of '{name}' could not be decoded ({ts_name}); the file is damaged or unsupported."
        ) from None
    pi = str(getattr(ds, "PhotometricInterpretation", "") or "").upper()
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        spp = 3
    if spp == 3 and arr.shape[-1] == 3:
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    arr = arr.astype(np.float32)
    if pi == "MONOCHROME1":
        arr = float(arr.max()) + float(arr.min()) - arr
    return arr


def _rescale(arr: np.ndarray, ds) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    inter = float(getattr(ds, "RescaleIntercept", 0) or 0)
    # Enhanced multi-frame objects keep rescale in the functional groups.
    for seq_name in ("SharedFunctionalGroupsSequence",):
        seq = getattr(ds, seq_name, None)
        if seq:
            pvt = getattr(seq[0], "PixelValueTransformationSequence", None)
            if pvt:
                slope = float(getattr(pvt[0], "RescaleSlope", slope) or slope)
                inter = float(getattr(pvt[0], "RescaleIntercept", inter) or inter)
    if slope != 1.0 or inter != 0.0:
        arr = arr * np.float32(slope) + np.float32(inter)
    return arr


def _floats(v, n):
    try:
        vals = [float(x) for x in v]
        return vals if len(vals) == n and all(np.isfinite(vals)) else None
    except Exception:
        return None


def _pixel_spacing(ds) -> tuple[float, float, str | None]:
    """(row spacing, column spacing) in mm and a note when it is not PixelSpacing."""
    ps = _floats(getattr(ds, "PixelSpacing", None) or [], 2)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if ps is None and shared:
        pm = getattr(shared[0], "PixelMeasuresSequence", None)
        if pm:
            ps = _floats(getattr(pm[0], "PixelSpacing", None) or [], 2)
    if ps and min(ps) > 0:
        return ps[0], ps[1], None
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        r = regions[0]
        # Physical units code 3 = cm
        if (
            int(getattr(r, "PhysicalUnitsXDirection", 0) or 0) == 3
            and int(getattr(r, "PhysicalUnitsYDirection", 0) or 0) == 3
        ):
            dx = abs(float(getattr(r, "PhysicalDeltaX", 0) or 0)) * 10.0
            dy = abs(float(getattr(r, "PhysicalDeltaY", 0) or 0)) * 10.0
            if dx > 0 and dy > 0:
                return dy, dx, "pixel size from the ultrasound region calibration"
    ips = _floats(getattr(ds, "ImagerPixelSpacing", None) or [], 2)
    if ips and min(ips) > 0:
        return ips[0], ips[1], "pixel size from ImagerPixelSpacing (detector plane)"
    return 1.0, 1.0, "no pixel size in the file; 1 mm pixels assumed"


def _thickness(ds) -> float:
    for kw in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(getattr(ds, kw, 0) or 0)
            if v > 0:
                return v
        except Exception:
            pass
    return 1.0


def _plane_geometry(ds, frame: int | None = None):
    """(IOP (6,), IPP (3,)) or None, for a classic slice or a frame of an enhanced object."""
    iop = _floats(getattr(ds, "ImageOrientationPatient", None) or [], 6)
    ipp = _floats(getattr(ds, "ImagePositionPatient", None) or [], 3)
    if frame is not None:
        shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
        per = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
        if shared and iop is None:
            po = getattr(shared[0], "PlaneOrientationSequence", None)
            if po:
                iop = _floats(po[0].ImageOrientationPatient, 6)
        if per and len(per) > frame:
            fg = per[frame]
            pp = getattr(fg, "PlanePositionSequence", None)
            if pp:
                ipp = _floats(pp[0].ImagePositionPatient, 3)
            po = getattr(fg, "PlaneOrientationSequence", None)
            if po and iop is None:
                iop = _floats(po[0].ImageOrientationPatient, 6)
        elif frame > 0:
            gfov = getattr(ds, "GridFrameOffsetVector", None)  # RT dose grids
            if gfov is not None and ipp is not None and iop is not None and len(gfov) > frame:
                n = np.cross(np.array(iop[:3]), np.array(iop[3:]))
                ipp = list(np.array(ipp) + float(gfov[frame]) * n)
            else:
                ipp = None
    if iop is None or ipp is None:
        return None
    r, c = np.array(iop[:3]), np.array(iop[3:])
    if np.linalg.norm(r) < 1e-6 or np.linalg.norm(c) < 1e-6:
        return None
    return np.array(iop), np.array(ipp)


def _safe_meta(ds) -> dict:
    meta = {}
    for kw in SAFE_META:
        v = getattr(ds, kw, None)
        if v is None or v == "":
            continue
        try:
            meta[kw] = (
                float(v)
                if isinstance(v, (int, float)) or type(v).__name__ in ("DSfloat", "IS", "DSdecimal")
                else str(v)
            )
        except Exception:
            continue
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        meta["TransferSyntax"] = getattr(ts, "name", str(ts))
    return meta


def assemble_series(
    items: list[tuple[str, Dataset]], limits: Limits, label: str
) -> tuple[np.ndarray, np.ndarray, list[str], dict, str]:
    """Build (array_zyx, affine, spacing-free warnings, meta, modality) from one series."""
    warnings: list[str] = []
    if is_segmentation(items[0][1]):
        raise segmentation_as_image_error(items[0][1])
    images = [(n, ds) for n, ds in items if "PixelData" in ds]
    if not images:
        sop = _sop_name(items[0][1])
        if "Image Storage" in sop:
            raise InputError(
                f"{label} is {sop} without pixel data (only the header is there); upload the complete image files."
            )
        raise InputError(f"{label} holds no image: it is {sop}; upload the image series instead.")
    if len(images) < len(items):
        warnings.append(f"{len(items) - len(images)} file(s) of this series hold no pixel data and were skipped.")
    ds0 = images[0][1]
    rows, cols = int(getattr(ds0, "Rows", 0) or 0), int(getattr(ds0, "Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise InputError(f"{label} declares an image of {rows} x {cols} pixels; the file is damaged.")
    n_frames_total = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for _, ds in images)
    check_voxel_budget((n_frames_total, rows, cols), limits, label)

    # Expand to a list of 2D slices: (name, ds, frame_index or None, pixels-later)
    slices: list[tuple[str, Dataset, int | None]] = []
    for n, ds in images:
        nf = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if int(getattr(ds, "Rows", 0) or 0) != rows or int(getattr(ds, "Columns", 0) or 0) != cols:
            warnings.append(f"'{n}' has a different image size and was skipped.")
            continue
        if nf > 1:
            for f in range(nf):
                slices.append((n, ds, f))
        else:
            slices.append((n, ds, None))

    geoms = [_plane_geometry(ds, f) for n, ds, f in slices]
    row_sp, col_sp, sp_note = _pixel_spacing(ds0)
    if sp_note:
        warnings.append(sp_note[0].upper() + sp_note[1:] + ".")

    orientation_known = all(g is not None for g in geoms) and len(slices) >= 1
    if orientation_known:
        iops = [np.round(g[0], 3) for g in geoms]
        keys = [tuple(i) for i in iops]
        counts: dict = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        if len(counts) > 1:
            best = max(counts, key=counts.__getitem__)
            warnings.append(
                f"The series mixes {len(counts)} slice orientations; only the {counts[best]} slices sharing "
                "the most common orientation are shown."
            )
            keep = [i for i, k in enumerate(keys) if k == best]
            slices = [slices[i] for i in keep]
            geoms = [geoms[i] for i in keep]
        iop = geoms[0][0]
        rowcos, colcos = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
        normal = np.cross(rowcos, colcos)
        pos = np.array([float(np.dot(g[1], normal)) for g in geoms])
        order = np.argsort(pos, kind="stable")
        slices = [slices[i] for i in order]
        geoms = [geoms[i] for i in order]
        pos = pos[order]
        # duplicates (e.g. several echoes or time points at one position)
        if len(pos) > 1:
            d = np.diff(pos)
            dup = np.concatenate([[False], np.abs(d) < 1e-3])
            if dup.any():
                warnings.append(
                    f"{int(dup.sum())} slice(s) repeat a position already present (several echoes or time "
                    "points?); only the first image at each position is shown."
                )
                first_at = ~dup
                slices = [s for s, k in zip(slices, first_at, strict=True) if k]
                geoms = [g for g, k in zip(geoms, first_at, strict=True) if k]
                pos = pos[first_at]
        if len(pos) > 1:
            d = np.diff(pos)
            step = float(np.median(d))
            ratio = d / step
            gaps = np.round(ratio) - 1
            if np.any(gaps >= 1) and np.all(np.abs(ratio - np.round(ratio)) < 0.1):
                missing = int(gaps[gaps >= 1].sum())
                warnings.append(
                    f"{missing} slice(s) appear to be missing from the series"
                    f" (gaps of {step * (gaps.max() + 1):.2f} mm "
                    f"where the spacing is {step:.2f} mm); the volume is shown with the gaps closed, so "
                    "distances across them are wrong."
                )
            elif np.any(np.abs(ratio - 1) > 0.05):
                warnings.append(
                    f"The slice spacing is uneven ({d.min():.2f} to {d.max():.2f} mm); a uniform {step:.2f} mm is used."
                )
            first, last = geoms[0][1], geoms[-1][1]
            stepvec = (last - first) / (len(pos) - 1)
            cosang = abs(float(np.dot(stepvec, normal))) / max(float(np.linalg.norm(stepvec)), 1e-9)
            tilt = float(np.degrees(np.arccos(np.clip(cosang, -1, 1))))
            if tilt > 0.5:
                warnings.append(
                    f"The slices are tilted by {tilt:.1f} degrees (gantry tilt); positions are kept exact "
                    "but the voxel grid is sheared."
                )
                # keep the true step vector but scale it to the median spacing
                stepvec = stepvec / max(float(np.dot(stepvec, normal)), 1e-9) * step
            else:
                stepvec = normal * step
        else:
            stepvec = normal * _thickness(ds0)
        lps = np.eye(4)
        lps[:3, 0] = rowcos * col_sp
        lps[:3, 1] = colcos * row_sp
        lps[:3, 2] = stepvec
        lps[:3, 3] = geoms[0][1]
        affine = LPS_TO_RAS @ lps
    else:
        if len(slices) > 1:

            def inst(s):
                try:
                    return int(getattr(s[1], "InstanceNumber", 0) or 0)
                except Exception:
                    return 0

            if any(s[2] is None for s in slices):
                slices.sort(key=inst)
            warnings.append(
                "The images carry no patient position; they are stacked in acquisition order "
                + (
                    "(frames of a cine loop are shown as slices)."
                    if any(s[2] is not None for s in slices)
                    else "(by instance number)."
                )
            )
        warnings.append(ORIENTATION_ASSUMED)
        # Display-ready orientation: rows run anterior->posterior, columns patient right->left.
        affine = LPS_TO_RAS @ np.diag([col_sp, row_sp, _thickness(ds0), 1.0])

    # decode pixels (each multi-frame dataset once)
    cache: dict[int, np.ndarray] = {}
    planes = []
    for n, ds, frame in slices:
        if id(ds) not in cache:
            cache[id(ds)] = _rescale(_pixels(ds, n), ds)
        px = cache[id(ds)]
        planes.append(px[frame] if frame is not None else px)
    try:
        stack = np.stack(planes, axis=0).astype(np.float32)  # (k, rows, cols)
    except ValueError:
        raise InputError(f"{label} mixes images of different shapes; upload one series at a time.") from None
    data_xyz = np.transpose(stack, (2, 1, 0))  # (i=col, j=row, k)
    meta = _safe_meta(ds0)
    meta["format"] = "DICOM"
    meta["n_slices"] = int(stack.shape[0])
    import nibabel as nib

    meta["source_orientation"] = (
        "".join(nib.aff2axcodes(affine)) if orientation_known else "not stated (display order assumed)"
    )
    meta["orientation_known"] = bool(orientation_known)
    if sp_note and sp_note.startswith("no pixel size"):
        meta["spacing_source"] = "assumed"  # the export's scale bar is then labelled in pixels
    arr_zyx, canon = to_canonical(data_xyz, affine)
    ref = _seg_reference(slices, data_xyz.shape, affine, ds0)
    if ref:
        meta["dicom_ref"] = ref
    return arr_zyx, canon, warnings, meta, _modality(ds0)


def _seg_reference(slices, shape_xyz, affine, ds0) -> dict | None:
    """What a DICOM SEG export needs to reference the source images: the study, series and frame of
    reference UIDs and, for every canonical axial slice, the SOP Instance UID of the source image
    it came from. UIDs only (no names, IDs or dates); kept in memory, never displayed. ``None``
    when canonical slices do not map one-to-one onto single-frame source images (multi-frame,
    non-axial acquisitions, missing UIDs)."""
    if any(f is not None for _, _, f in slices):
        return None
    uids = [str(getattr(ds, "SOPInstanceUID", "") or "") for _, ds, _ in slices]
    needed = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID")
    if not all(uids) or not all(getattr(ds0, k, None) for k in needed):
        return None
    idx = np.broadcast_to(np.arange(shape_xyz[2], dtype=np.int32)[None, None, :], shape_xyz)
    idx_zyx, _ = to_canonical(np.ascontiguousarray(idx), affine)
    per_z = []
    for z in range(idx_zyx.shape[0]):
        k = np.unique(idx_zyx[z])
        if k.size != 1:
            return None  # the acquisition's slices are not the canonical axial slices
        per_z.append(uids[int(k[0])])
    return {
        "study_uid": str(ds0.StudyInstanceUID),
        "series_uid": str(ds0.SeriesInstanceUID),
        "frame_of_reference_uid": str(ds0.FrameOfReferenceUID),
        "sop_class_uid": str(ds0.SOPClassUID),
        "instance_uids": per_z,
    }
