"""Masks made elsewhere (nnU-Net, TotalSegmentator, MONAI Label, a colleague) as one binary mask per
label on an image's grid: :func:`load_label_masks`.

Formats
-------
* **Label maps**: NIfTI, DICOM image series, PNG/JPEG/TIFF/BMP -- read by
  :func:`~medseg_core.io.loader.load_mask`, so the grid rule is the one reference masks follow: the
  same shape, voxel size, orientation and position as the image (another axis order or flips of the
  same grid are fine); nothing is ever resampled. Every non-zero value is one label, named
  ``label_<value>`` unless ``names`` maps the value to a name. A map with no labelled voxel gives one
  empty mask (``label_1``): a prediction that found nothing is still a result to review.
* **DICOM SEG** (binary, fractional -- thresholded at 0.5 -- and label-map segmentations), read with
  highdicom: one mask per segment, named by its Segment Label. Frames are placed by the SOP Instance
  UIDs of the source images they reference when the image came from DICOM
  (:attr:`Volume.dicom_ref`), else by their positions (Image Position / Orientation (Patient) and
  Pixel Spacing) mapped through the image's affine. Either way the in-plane layout (a SEG written in
  the source images' layout is flipped relative to medseg's canonical RAS+ array) comes from the
  frames' orientation. A SEG that references other images, lies in another frame of reference or on
  another grid is refused.
* **DICOM RT Structure Set**: rasterised here. `rt-utils` was considered and not used: it builds
  masks from the image series and the structure set as *files on disk*
  (``RTStructBuilder.create_from(dicom_series_path, rt_struct_path)``), sorts the series itself (not
  medseg's canonical grid) and needs opencv-python; uploads are never written to disk. Each
  CLOSED_PLANAR contour of ``ROIContourSequence`` is mapped from patient millimetres (LPS) to voxel
  indices through the image's affine and filled with :func:`skimage.draw.polygon` on the slice it
  lies on (a voxel whose centre is inside or on the contour is in); several contours of one ROI on
  the same slice combine by the even-odd rule, so a contour inside another is a hole. POINT and
  OPEN_PLANAR contours enclose nothing and are ignored. One mask per ROI Name; contours between the
  image's slices, or a structure set of another frame of reference, are refused.

Every failure raises :class:`~medseg_core.io.errors.InputError` with one sentence.
"""

from __future__ import annotations

import io
import re
import warnings as _warnings
from collections.abc import Container

import numpy as np

from . import dicom as _dicom
from .dicom import LPS_TO_RAS, RTSTRUCT_SOP_CLASS, SEG_SOP_CLASSES
from .errors import InputError, Limits
from .loader import Source, _classify, _gather, _guarded, load_mask
from .volume import Volume

__all__ = ["load_label_masks", "union_mask", "unique_name", "file_stem"]

_ANOTHER_GRID = (
    "The DICOM Segmentation lies on another grid than this image (size, voxel size, orientation or "
    "position differ); upload the segmentation made on this image."
)


@_guarded
def load_label_masks(
    source: Source,
    like: Volume,
    filename: str | None = None,
    names: dict[int, str] | None = None,
    limits: Limits | None = None,
) -> dict[str, np.ndarray]:
    """One uint8 binary mask (0/1, ``like``'s (Z, Y, X) shape) per label of a mask file.

    Args:
        source: a path, bytes, a file-like object (a Streamlit upload), or a list of these (a DICOM
            series of label-map images).
        like: the image the masks belong to.
        filename: the original name when ``source`` is bytes.
        names: label value (label maps), segment number (DICOM SEG) or ROI number (RT Structure
            Set) -> name, overriding the file's own names.

    Returns:
        ``{name: mask}`` in label / segment / ROI order; names are unique.

    Raises:
        InputError: the file cannot be read, is not a mask, or does not lie on ``like``'s grid.
    """
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # pydicom / highdicom chatter must not reach logs or the screen
        return _load_label_masks(source, like, filename, names or {}, limits or Limits.from_env())


def _load_label_masks(source, like, filename, names, limits) -> dict[str, np.ndarray]:
    raw = _gather(source, filename, limits)
    files, _ = _classify(raw, limits)
    special = []
    for name, data, kind in files:
        if kind == "dicom":
            sop = _sop_class(data)
            if sop in SEG_SOP_CLASSES or sop == RTSTRUCT_SOP_CLASS:
                special.append((name, data, sop))
    if special:
        if len(files) > 1:
            raise InputError(
                "Upload a DICOM Segmentation or RT Structure Set on its own (one file, not together with other files)."
            )
        name, data, sop = special[0]
        ds = _dicom._read(name, data)
        if ds is None:
            raise InputError(f"'{name}' could not be read: the DICOM file is damaged.")
        return _seg_masks(ds, like, names) if sop in SEG_SOP_CLASSES else _rtstruct_masks(ds, like, names)
    labels = load_mask(source, like=like, filename=filename, limits=limits)
    values = [int(v) for v in np.unique(labels) if v > 0]
    if not values:
        return {names.get(1, "label_1"): np.zeros(like.shape, np.uint8)}
    out: dict[str, np.ndarray] = {}
    for v in values:
        out[unique_name(names.get(v, f"label_{v}"), out)] = (labels == v).astype(np.uint8)
    return out


def _sop_class(data: bytes) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(getattr(ds, "SOPClassUID", "") or "")
    except Exception:
        return ""


# ---------------------------------------------------------------------------- helpers
def unique_name(name: str, taken: Container[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when it is already in ``taken``."""
    name = (name or "").strip() or "prediction"
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


def file_stem(filename: str) -> str:
    """A file name without its folder and medical-image extensions: ``case_01.nii.gz`` -> ``case_01``."""
    base = re.split(r"[\\/]", str(filename or ""))[-1]
    stem = re.sub(
        r"(\.nii\.gz|\.nii|\.dcm|\.dicom|\.ima|\.zip|\.png|\.jpe?g|\.tiff?|\.bmp|\.gz)$", "", base, flags=re.IGNORECASE
    )
    return stem or base or "prediction"


def union_mask(masks: dict[str, np.ndarray]) -> np.ndarray:
    """One binary uint8 mask: the voxels of any label."""
    arrays = [np.asarray(m) for m in masks.values()]
    if not arrays:
        raise InputError("The mask holds no label; upload a mask with at least one label.")
    out = np.zeros(arrays[0].shape, bool)
    for m in arrays:
        out |= m > 0
    return out.astype(np.uint8)


def _index_affine(like: Volume) -> np.ndarray:
    """4x4 mapping array index (z, y, x, 1) to LPS millimetres."""
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # (z, y, x) -> (x, y, z)
    return LPS_TO_RAS @ np.asarray(like.affine, float) @ perm


# ---------------------------------------------------------------------------- DICOM SEG
def _seg_masks(ds, like: Volume, names: dict[int, str]) -> dict[str, np.ndarray]:
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception:
        raise InputError(
            "The DICOM Segmentation could not be read: it is damaged or uses a variant this server does not support."
        ) from None
    numbers = [int(n) for n in seg.segment_numbers]
    if not numbers:
        raise InputError("The DICOM Segmentation holds no segment; upload a segmentation with at least one segment.")
    labels: list[str] = []
    for n in numbers:
        own = str(getattr(seg.get_segment_description(n), "segment_label", "") or "").strip()
        labels.append(unique_name(names.get(n, own or f"segment_{n}"), labels))
    fractional = str(getattr(seg, "SegmentationType", "")).upper() == "FRACTIONAL"
    dtype = np.float32 if fractional else np.uint8

    ref = like.dicom_ref or {}
    seg_for = str(getattr(seg, "FrameOfReferenceUID", "") or "")
    try:
        source_uids = {str(u[2]) for u in seg.get_source_image_uids()}
    except Exception:
        source_uids = set()
    vol_uids = list(ref.get("instance_uids") or [])
    placed = None
    if vol_uids and source_uids & set(vol_uids):
        outside = source_uids - set(vol_uids)
        if outside:
            raise InputError(
                f"The DICOM Segmentation refers to {len(outside)} image(s) that are not slices of this "
                "series; upload the whole series it was made on, or the segmentation made on this image."
            )
        try:
            arr = seg.get_pixels_by_source_instance(
                vol_uids, segment_numbers=numbers, assert_missing_frames_are_empty=True, dtype=dtype
            )
        except Exception:
            arr = None  # e.g. spatial locations not preserved: place the frames by position instead
        if arr is not None:
            placed = _place(arr, _uid_mapping(seg, like, arr.shape), like.shape, by_uid=True)
    if placed is None:
        if ref.get("frame_of_reference_uid") and seg_for and seg_for != ref["frame_of_reference_uid"]:
            raise InputError(
                "The DICOM Segmentation belongs to another image (it references other images and another "
                "frame of reference); upload the segmentation made on this image."
            )
        if ref and source_uids and not seg_for:
            raise InputError(
                "The DICOM Segmentation references other images than this one; upload the segmentation "
                "made on this image."
            )
        try:
            hv = seg.get_volume(segment_numbers=numbers, dtype=dtype)
        except Exception:
            raise InputError(
                "The DICOM Segmentation's frames do not form a regular grid of slices, so they cannot be "
                "placed on this image; upload a segmentation made on this image."
            ) from None
        arr = np.asarray(hv.array)
        if arr.ndim == 3:
            arr = arr[..., None]
        mapping = np.linalg.solve(_index_affine(like), np.asarray(hv.affine, float))
        placed = _place(arr, mapping, like.shape, by_uid=False)
    thr = 0.5 if fractional else 0.0  # fractional values are probabilities in 0..1 (rescaled by highdicom)
    return {lab: ((placed[..., i] >= thr) & (placed[..., i] > 0)).astype(np.uint8) for i, lab in enumerate(labels)}


def _seg_orientation(seg) -> np.ndarray:
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = getattr(seg, seq_name, None)
        if seq:
            po = getattr(seq[0], "PlaneOrientationSequence", None)
            if po and getattr(po[0], "ImageOrientationPatient", None):
                return np.array([float(v) for v in po[0].ImageOrientationPatient])
    # No geometry: the loader lays such images out as IOP (1, 0, 0, 0, 1, 0), and so does this.
    return np.array([1.0, 0, 0, 0, 1, 0])


def _seg_pixel_spacing(seg):
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = getattr(seg, seq_name, None)
        if seq:
            pm = getattr(seq[0], "PixelMeasuresSequence", None)
            if pm and getattr(pm[0], "PixelSpacing", None):
                return [float(v) for v in pm[0].PixelSpacing]
    return None


def _uid_mapping(seg, like: Volume, shape) -> np.ndarray:
    """Index mapping (slice, row, col) -> (z, y, x) for frames fetched in the volume's slice order: the
    slice is the volume's, the in-plane layout comes from the frames' orientation."""
    iop = _seg_orientation(seg)
    row_dir = iop[:3] / max(np.linalg.norm(iop[:3]), 1e-9)  # along a row: increasing column
    col_dir = iop[3:] / max(np.linalg.norm(iop[3:]), 1e-9)  # down a column: increasing row
    ia = _index_affine(like)
    ay = ia[:3, 1] / np.linalg.norm(ia[:3, 1])  # array y direction, LPS
    ax = ia[:3, 2] / np.linalg.norm(ia[:3, 2])  # array x direction, LPS
    rot = np.array([[np.dot(col_dir, ay), np.dot(row_dir, ay)], [np.dot(col_dir, ax), np.dot(row_dir, ax)]])
    r = np.round(rot)
    if (
        np.abs(rot - r).max() > 1e-2
        or sorted(np.abs(r).sum(axis=0)) != [1, 1]
        or sorted(np.abs(r).sum(axis=1)) != [1, 1]
    ):
        raise InputError(_ANOTHER_GRID)
    ps = _seg_pixel_spacing(seg)
    if ps is not None:
        # PixelSpacing is (between rows, between columns); the volume's in-plane spacing is (sy, sx).
        theirs = np.abs(r) @ np.array(ps)  # spacing along the volume's (y, x)
        if not np.allclose(theirs, like.spacing[1:], rtol=1e-3, atol=1e-4):
            raise InputError(_ANOTHER_GRID)
    m = np.eye(4)
    m[1:3, 1:3] = r
    for i in (1, 2):  # a flipped axis counts from the far end
        j = int(np.argmax(np.abs(r[i - 1]))) + 1
        m[i, 3] = 0.0 if r[i - 1, j - 1] > 0 else float(shape[j] - 1)
    return m


def _place(arr: np.ndarray, mapping: np.ndarray, shape, by_uid: bool) -> np.ndarray:
    """Put ``arr`` (slices, rows, cols, segments) onto a (Z, Y, X, segments) array of ``shape`` through
    ``mapping`` (4x4, source index -> volume index), which must be a signed permutation with a whole
    voxel offset. In-plane the frames must cover the image exactly; they may cover a subset of slices."""
    rot = np.array(mapping[:3, :3], float)
    if arr.shape[0] == 1:  # one frame: the slice step is unknown and irrelevant, keep its direction only
        col = rot[:, 0]
        rot[:, 0] = col / max(np.abs(col).max(), 1e-9)
    r = np.round(rot)
    perm_ok = (
        sorted(np.abs(r).sum(axis=0)) == [1, 1, 1]
        and sorted(np.abs(r).sum(axis=1)) == [1, 1, 1]
        and np.abs(r).max() == 1
    )
    if not perm_ok or np.abs(rot - r).max() * max(max(shape), 1) > 0.5:
        raise InputError(_ANOTHER_GRID)
    src_axis = [int(np.argmax(np.abs(r[i]))) for i in range(3)]
    signs = [float(r[i, src_axis[i]]) for i in range(3)]
    a = np.transpose(arr, src_axis + [3])
    offsets = []
    for i in range(3):
        t = float(mapping[i, 3])
        if signs[i] < 0:
            a = np.flip(a, axis=i)
            t -= arr.shape[src_axis[i]] - 1
        if abs(t - round(t)) > 0.3:
            raise InputError(_ANOTHER_GRID)
        offsets.append(int(round(t)))
    out = np.zeros(tuple(shape) + (arr.shape[3],), a.dtype)
    region = []
    for i in range(3):
        n, o, size = a.shape[i], offsets[i], shape[i]
        if src_axis[i] != 0 and (o != 0 or n != size):  # in-plane: frames are whole images
            raise InputError(_ANOTHER_GRID)
        lo, hi = max(o, 0), min(o + n, size)
        if hi <= lo:
            raise InputError(
                "The DICOM Segmentation's frames lie outside this image; upload the segmentation made on this image."
            )
        region.append((lo, hi, lo - o, hi - o))
    inside = a[tuple(slice(s0, s1) for _, _, s0, s1 in region)]
    if np.count_nonzero(inside) != np.count_nonzero(a):
        raise InputError(
            "Part of the DICOM Segmentation lies outside this image; upload the segmentation made on this image."
        )
    out[tuple(slice(lo, hi) for lo, hi, _, _ in region)] = inside
    return out


# ---------------------------------------------------------------------------- RT Structure Set
def _rtstruct_masks(ds, like: Volume, names: dict[int, str]) -> dict[str, np.ndarray]:
    from skimage.draw import polygon

    rois = {}
    frames = set()
    for item in getattr(ds, "StructureSetROISequence", None) or []:
        try:
            rois[int(item.ROINumber)] = str(getattr(item, "ROIName", "") or "").strip()
        except Exception:
            continue
        if getattr(item, "ReferencedFrameOfReferenceUID", None):
            frames.add(str(item.ReferencedFrameOfReferenceUID))
    for item in getattr(ds, "ReferencedFrameOfReferenceSequence", None) or []:
        if getattr(item, "FrameOfReferenceUID", None):
            frames.add(str(item.FrameOfReferenceUID))
    contours = getattr(ds, "ROIContourSequence", None) or []
    if not contours:
        raise InputError("The RT Structure Set holds no contours; upload a structure set with at least one ROI.")
    own_for = (like.dicom_ref or {}).get("frame_of_reference_uid")
    if own_for and frames and own_for not in frames:
        raise InputError(
            "The RT Structure Set was drawn on another image (another frame of reference); upload the "
            "structure set made on this image."
        )
    to_index = np.linalg.inv(_index_affine(like))
    shape = like.shape
    out: dict[str, np.ndarray] = {}
    n_in = n_out = 0
    for item in contours:
        try:
            number = int(item.ReferencedROINumber)
        except Exception:
            continue
        name = unique_name(names.get(number) or rois.get(number) or f"ROI {number}", out)
        mask = np.zeros(shape, bool)
        for c in getattr(item, "ContourSequence", None) or []:
            if str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR") or "CLOSED_PLANAR").upper() != "CLOSED_PLANAR":
                continue
            try:
                pts = np.asarray([float(v) for v in c.ContourData], float)
            except Exception:
                raise InputError(
                    "An RT Structure Set contour holds values that are not numbers; the file is damaged."
                ) from None
            if pts.size < 9 or pts.size % 3 or not np.all(np.isfinite(pts)):
                continue
            idx = (to_index @ np.c_[pts.reshape(-1, 3), np.ones(pts.size // 3)].T).T[:, :3]  # (z, y, x)
            spans = np.ptp(idx, axis=0)
            axis = int(np.argmin(spans))
            k = float(np.mean(idx[:, axis]))
            if spans[axis] > 0.1 or abs(k - round(k)) > 0.25:
                raise InputError(
                    "The RT Structure Set's contours do not lie on this image's slices; upload the "
                    "structure set drawn on this image."
                )
            k = int(round(k))
            if not 0 <= k < shape[axis]:
                n_out += 1
                continue
            n_in += 1
            a0, a1 = [a for a in range(3) if a != axis]
            rr, cc = polygon(idx[:, a0], idx[:, a1], shape=(shape[a0], shape[a1]))
            plane = np.zeros((shape[a0], shape[a1]), bool)
            plane[rr, cc] = True
            sel: list[slice | int] = [slice(None)] * 3
            sel[axis] = k
            mask[tuple(sel)] ^= plane
        out[name] = mask.astype(np.uint8)
    if not out:
        raise InputError("The RT Structure Set holds no usable ROI; upload a structure set with at least one contour.")
    if n_out and not n_in:
        raise InputError(
            "The RT Structure Set's contours all lie outside this image; upload the structure set drawn on this image."
        )
    return out
