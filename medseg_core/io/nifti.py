"""NIfTI-1 / NIfTI-2 reading with the header checked before any voxel is decoded."""

from __future__ import annotations

import io
import struct

import numpy as np
from numpy.typing import DTypeLike

from .errors import InputError, Limits, check_voxel_budget
from .orientation import to_canonical
from .sniff import gunzip_bounded, gunzip_head, sniff


def _header_dims(head: bytes, kind: str) -> tuple[list[int], int]:
    """(dims, bitpix) read straight from the header bytes."""
    for endian in "<>":
        if kind == "nifti1":
            (size,) = struct.unpack(endian + "i", head[:4])
            if size == 348:
                dim = struct.unpack(endian + "8h", head[40:56])
                (bitpix,) = struct.unpack(endian + "h", head[72:74])
                return list(dim), bitpix
        else:
            (size,) = struct.unpack(endian + "i", head[:4])
            if size == 540:
                dim = struct.unpack(endian + "8q", head[16:80])
                (bitpix,) = struct.unpack(endian + "h", head[14:16])
                return list(dim), bitpix
    raise InputError("The NIfTI header is unreadable; the file is damaged or not NIfTI.")


def _intent_code(head: bytes, kind: str) -> int:
    """The header's intent_code (what the data mean: 0 none, 1002 labels, 3000-3099 CIFTI-2)."""
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if kind == "nifti1" and size == 348:
            return int(struct.unpack(endian + "h", head[68:70])[0])
        if kind == "nifti2" and size == 540:
            return int(struct.unpack(endian + "i", head[504:508])[0])
    return 0


def read_nifti(data: bytes, name: str, limits: Limits) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Decode NIfTI bytes (plain or gzip) into a canonical (Z, Y, X) float32 array.

    Returns ``(array_zyx, canonical_affine, warnings, meta)``. 4D data: the first volume is
    kept with a warning (documented choice; a 4D file with one time point loads silently).
    """
    import nibabel as nib

    warnings: list[str] = []
    compressed = sniff(data) == "gzip"
    head = gunzip_head(data, 544) if compressed else data[:544]
    if compressed and len(head) < 348:
        gunzip_bounded(data, limits, name)  # raises a precise "cut short" / "damaged" message
    if len(head) < 348:
        raise InputError(f"'{name}' is cut short: it ends inside the NIfTI header; upload the complete file.")
    kind = sniff(head + b"\x00" * max(0, 1024 - len(head)))
    if kind not in ("nifti1", "nifti2"):
        raise InputError(f"'{name}' is compressed but does not hold a NIfTI image; upload a .nii or .nii.gz file.")
    dims, bitpix = _header_dims(head, kind)
    ndim = dims[0]
    if ndim < 1 or ndim > 7:
        raise InputError(f"'{name}' has an invalid NIfTI header (it declares {ndim} dimensions); the file is damaged.")
    shape = [int(d) for d in dims[1 : 1 + ndim]]
    if any(s <= 0 for s in shape):
        raise InputError(
            f"'{name}' declares an empty image (shape {' x '.join(map(str, shape))}); it holds no voxels to show."
        )
    intent = _intent_code(head, kind)
    if 3000 <= intent <= 3099:  # NIFTI_INTENT_CONNECTIVITY_*: CIFTI-2 (grayordinates, parcels, a matrix)
        raise InputError(
            f"'{name}' is a CIFTI file (brain surface and grayordinate data such as .dconn/.dscalar/.dtseries), "
            "not a voxel image; medseg reads volumes. Upload a NIfTI volume (.nii or .nii.gz)."
        )
    spatial = (shape + [1, 1, 1])[:3]
    if spatial == [1, 1, 1] and int(np.prod(shape)) > 1:
        raise InputError(
            f"'{name}' holds no image grid: its three spatial dimensions are 1 and its "
            f"{int(np.prod(shape)):,} values lie along other dimensions ({' x '.join(map(str, shape))}). "
            "Upload a NIfTI volume."
        )
    check_voxel_budget(spatial, limits, f"file '{name}'")
    if ndim > 3 and int(np.prod(shape[3:])) > 1:
        check_voxel_budget(
            spatial + [int(np.prod(shape[3:]))], Limits(max_voxels=limits.max_voxels * 8), f"file '{name}'"
        )
    if compressed:
        data = gunzip_bounded(data, limits, name)
    try:
        cls = nib.Nifti1Image if kind == "nifti1" else nib.Nifti2Image
        with nib.imageglobals.LoggingOutputSuppressor():  # nibabel logs header fixes; we warn ourselves
            img = cls.from_bytes(data)
        dataobj = img.dataobj
        if ndim > 3 and int(np.prod(shape[3:])) > 1:
            warnings.append(
                f"'{name}' is a {ndim}D series ({' x '.join(map(str, shape))} in the file's x, y, z, t order: "
                f"{int(np.prod(shape[3:]))} volumes); only its first volume is shown."
            )
            arr = np.asarray(dataobj[..., 0] if ndim == 4 else dataobj[(...,) + (0,) * (ndim - 3)])
        else:
            arr = np.asarray(dataobj)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"'{name}' is too large to load on this server; crop or downsample it first.") from None
    except Exception:
        raise InputError(
            f"'{name}' could not be read as NIfTI: the file is truncated or damaged; upload the complete file."
        ) from None
    if np.iscomplexobj(arr) or arr.dtype.names is not None:
        raise InputError(
            f"'{name}' holds complex or RGB NIfTI data, which is not supported; convert it to a scalar image."
        )
    arr = arr.reshape(spatial).astype(np.float32, copy=False)
    hdr = img.header
    klass = nib.Nifti1Header if kind == "nifti1" else nib.Nifti2Header
    size = 348 if kind == "nifti1" else 540  # the header only (zero extension flag): no extensions parsed
    raw_hdr = klass.from_fileobj(io.BytesIO(head[:size] + b"\0\0\0\0"), check=False)
    pix = np.asarray(raw_hdr["pixdim"][1:4], np.float64)  # as stored, before nibabel's fixes
    codes = (int(hdr["qform_code"]), int(hdr["sform_code"]))
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        warnings.append(f"'{name}' has no usable orientation in its header; 1 mm voxels in RAS order are assumed.")
        affine = np.eye(4)
    elif codes == (0, 0):
        warnings.append(
            f"'{name}' stores no orientation (qform and sform codes are 0): its axes are taken "
            "in a default order, so left and right cannot be known from the file"
            " and the viewer shows no orientation letters."
        )
    if codes == (0, 0) and not (np.all(np.isfinite(pix)) and np.all(pix > 0)):
        warnings.append(
            f"'{name}' has invalid voxel sizes in its header ({', '.join(f'{p:g}' for p in pix)}); "
            "1 mm was used where a size was missing or invalid."
        )
    # NIfTI states its spatial unit in xyzt_units; medseg works in mm. Most files say mm or nothing (then mm is
    # assumed, as every viewer does, and the geometry table says so); metres and microns are converted.
    unit = str(hdr.get_xyzt_units()[0])
    to_mm = {"meter": 1000.0, "micron": 0.001}.get(unit)
    if to_mm is not None:
        affine = np.asarray(affine, np.float64).copy()
        affine[:3, :] *= to_mm
        warnings.append(f"'{name}' gives its voxel sizes in {unit}s; they were converted to millimetres.")
    spatial_unit = {"mm": "mm", "unknown": "not stated in the file (mm assumed)"}.get(unit, f"{unit} (converted to mm)")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if zooms.max() / max(zooms.min(), 1e-9) > 20:
        warnings.append(
            f"The voxels are very anisotropic ({' x '.join(f'{z:.3g}' for z in zooms)} mm); "
            "reformatted views will look blocky."
        )
    meta = {
        "format": "NIfTI-1" if kind == "nifti1" else "NIfTI-2",
        # a file without qform/sform states no orientation: the table says so, as the DICOM loader does,
        # instead of the letters of the default axis order (which contradicted the warning above)
        "source_orientation": "not stated (default axis order assumed)"
        if codes == (0, 0)
        else "".join(nib.aff2axcodes(affine)),
        "source_dtype": str(img.get_data_dtype()),
        "bitpix": int(bitpix),
        "spatial_unit": spatial_unit,
    }
    if int(img.header.get("qform_code", 0)) == 0 and int(img.header.get("sform_code", 0)) == 0:
        meta["geometry_note"] = "no qform/sform in header"
    arr_zyx, canon_affine = to_canonical(arr, affine)
    return arr_zyx, canon_affine, warnings, meta


def nifti_bytes(array_xyz: np.ndarray, affine: np.ndarray, compress: bool = True, dtype: DTypeLike = np.uint8) -> bytes:
    """Encode an (x, y, z) array as NIfTI-1 bytes (gzip when ``compress``), spatial units mm."""
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array_xyz, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    raw = img.to_bytes()
    if compress:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as fh:
            fh.write(raw)
        return buf.getvalue()
    return raw
