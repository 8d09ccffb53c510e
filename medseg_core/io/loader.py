"""Public entry points: :func:`load_volume`, :func:`list_series`, :func:`load_mask`,
:func:`save_mask_nifti`.

Supported inputs
----------------
* NIfTI ``.nii`` and ``.nii.gz`` (NIfTI-1 and -2). 4D files: the first volume, with a warning.
* DICOM: one file (also multi-frame, RGB/YBR/palette colour, compressed through pylibjpeg /
  pyjpegls / pydicom's RLE decoder), several files of a series, or one ``.zip`` (or folder) holding
  one or more series (see :func:`list_series`; without a choice the largest image series is loaded).
* PNG, JPEG, TIFF, BMP: one 2D image, colour converted to grey, 1 mm pixels unless given.

The format is recognised from the bytes, not the extension (a mismatch is reported as a warning).
Every failure raises :class:`InputError` with a sentence for a clinician.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings as _warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar

import numpy as np

from . import dicom as _dicom
from .archive import read_zip
from .errors import InputError, Limits, human_bytes
from .image import read_image
from .nifti import nifti_bytes, read_nifti
from .orientation import from_canonical_xyz
from .sniff import ext_of, sniff
from .volume import Volume

_log = logging.getLogger("medseg.io")


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Last line of defence for uploads: any failure other than :class:`InputError` becomes one
    (a plain sentence; the exception type is logged without file contents or names). Tests set
    ``MEDSEG_STRICT_LOADING=1`` so that such a failure is re-raised and found (see the fuzz tests)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except InputError:
            raise
        except MemoryError:
            raise InputError("The upload is too large to load on this server; crop or downsample it first.") from None
        except Exception as e:  # noqa: BLE001 - deliberately broad, see the docstring
            if os.environ.get("MEDSEG_STRICT_LOADING"):
                raise
            _log.warning("unexpected %s in %s", type(e).__name__, func.__name__)
            raise InputError(
                "The file could not be read: it is damaged or uses a variant of the format this server "
                "does not support."
            ) from None

    return wrapper


Source = str | os.PathLike | bytes | bytearray | memoryview | Any

_FORMAT_NAMES = {
    "nifti1": "NIfTI",
    "nifti2": "NIfTI",
    "gzip": "gzip-compressed",
    "dicom": "DICOM",
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "zip": "zip",
}
_EXT_KINDS = {
    ".nii": {"nifti1", "nifti2"},
    ".nii.gz": {"gzip"},
    ".gz": {"gzip"},
    ".dcm": {"dicom"},
    ".png": {"png"},
    ".jpg": {"jpeg"},
    ".jpeg": {"jpeg"},
    ".tif": {"tiff"},
    ".tiff": {"tiff"},
    ".bmp": {"bmp"},
    ".zip": {"zip"},
}


# ---------------------------------------------------------------------------- gathering bytes
def _gather(source: Source, filename: str | None, limits: Limits) -> list[tuple[str, bytes]]:
    """Turn any accepted source into [(name, bytes)]."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError("No files were given; choose one or more files to upload.")
        out = []
        for item in source:
            out.extend(_gather(item, None, limits))
        return out
    if isinstance(source, (bytes, bytearray, memoryview)):
        return [(filename or "upload", bytes(source))]
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
            if not files:
                raise InputError(f"The folder '{p.name}' is empty; choose a folder that holds the image files.")
            total = sum(q.stat().st_size for q in files)
            if total > limits.max_decompressed_bytes:
                raise InputError(f"The folder '{p.name}' holds {human_bytes(total)}, more than this server accepts.")
            return [(q.name, q.read_bytes()) for q in files]
        if not p.exists():
            raise InputError(f"The file '{p.name}' does not exist; check the path.")
        if p.stat().st_size > limits.max_decompressed_bytes:
            raise InputError(f"'{p.name}' is {human_bytes(p.stat().st_size)}, more than this server accepts.")
        return [(filename or p.name, p.read_bytes())]
    if hasattr(source, "read"):  # file-like, e.g. a Streamlit UploadedFile
        name = filename or getattr(source, "name", None) or "upload"
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except Exception:
                pass
        data = source.read()
        if isinstance(data, str):
            data = data.encode()
        return [(os.path.basename(str(name)), bytes(data))]
    raise InputError("The input is neither a file, a folder, bytes, nor a list of files; upload image files.")


def _kind(name: str, data: bytes) -> str:
    if len(data) == 0:
        return "empty"
    k = sniff(data)
    if k == "unknown" and ext_of(name) in (".dcm", ".ima", ".dicom"):
        return "dicom"
    return k


def _ext_warning(name: str, kind: str) -> list[str]:
    ext = ext_of(name)
    expected = _EXT_KINDS.get(ext)
    if expected and kind not in expected and not (ext == ".nii" and kind == "gzip"):
        return [
            f"'{name}' is named {ext} but holds {_FORMAT_NAMES.get(kind, kind)} data;"
            f" it was read as {_FORMAT_NAMES.get(kind, kind)}."
        ]
    return []


def _finite(arr: np.ndarray, warnings: list[str], name: str) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if bad.any():
        if bad.all():
            raise InputError(f"'{name}' holds no valid voxel values (all are NaN or infinite); the file is damaged.")
        fill = float(np.min(arr[~bad]))
        arr = np.where(bad, fill, arr).astype(np.float32)
        warnings.append(
            f"{int(bad.sum()):,} voxel(s) were not numbers (NaN or infinite) and were set to the image minimum."
        )
    if arr.size and float(arr.max()) == float(arr.min()):
        warnings.append(f"Every voxel of '{name}' has the same value ({float(arr.min()):g}): the image is blank.")
    return arr


def _unrecognised(name: str) -> InputError:
    return InputError(
        f"'{name}' is not a recognised medical image; upload NIfTI (.nii, .nii.gz), DICOM (files or a .zip) "
        "or an image (PNG, JPEG, TIFF, BMP)."
    )


# ---------------------------------------------------------------------------- public API
def _classify(files: list[tuple[str, bytes]], limits: Limits) -> tuple[list[tuple[str, bytes, str]], list[str]]:
    """Expand zips once; return (files with kinds, warnings)."""
    warnings: list[str] = []
    out = []
    for name, data in files:
        k = _kind(name, data)
        if k == "zip":
            members, w = read_zip(data, name, limits)
            warnings += w
            for mname, mdata in members:
                out.append((mname, mdata, _kind(mname, mdata)))
        else:
            out.append((name, data, k))
    return out, warnings


@_guarded
def list_series(source: Source, filename: str | None = None, limits: Limits | None = None) -> list[_dicom.SeriesInfo]:
    """The DICOM series in a zip, folder or list of files, largest image series first.

    Each :class:`~medseg_core.io.dicom.SeriesInfo` has an opaque ``key`` to pass to
    ``load_volume(..., series=key)`` and a ``label()`` safe to show (no identifiers).
    """
    limits = limits or Limits.from_env()
    files, _ = _classify(_gather(source, filename, limits), limits)
    dcm = [(n, d) for n, d, k in files if k == "dicom"]
    if not dcm:
        return []
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        parsed, _ = _dicom.parse_files(dcm)
    return _dicom.series_infos(_dicom.group_series(parsed))


@_guarded
def load_volume(source: Source, filename: str | None = None, **kwargs: Any) -> Volume:
    """Load an image volume into the canonical (Z, Y, X) RAS+ :class:`Volume`.

    Args:
        source: a path (file or folder), bytes, a file-like object, or a list of these (the files
            of one DICOM series).
        filename: the original file name when ``source`` is bytes (used as a format hint and as the
            volume's name).
        series: for uploads holding several DICOM series, the ``key`` from :func:`list_series`.
        modality: override the modality ("CT", "MR", "US", "OT"); otherwise it comes from DICOM,
            or is guessed for NIfTI (CT when the values look like Hounsfield units, else MR) and
            taken as "US" for image files.
        pixel_spacing_mm: (row, column) pixel size for image files.
        limits: size budgets (defaults from the environment, see :class:`Limits`).

    Raises:
        InputError: for anything that cannot be loaded, with a sentence saying what to do.
    """
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # library chatter must not reach logs or the screen
        return _load_volume(source, filename, **kwargs)


def _load_volume(
    source: Source,
    filename: str | None = None,
    *,
    series: str | None = None,
    modality: str | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    limits: Limits | None = None,
) -> Volume:
    limits = limits or Limits.from_env()
    raw = _gather(source, filename, limits)
    files, warnings = _classify(raw, limits)
    display_name = os.path.basename(str(filename or raw[0][0])) if len(raw) == 1 else f"{len(raw)} files"
    kinds = [k for _, _, k in files]
    if all(k == "empty" for k in kinds):
        raise InputError(f"'{display_name}' is empty (0 bytes); the upload did not complete, so try again.")
    dicoms = [(n, d) for n, d, k in files if k == "dicom"]
    niftis = [(n, d) for n, d, k in files if k in ("nifti1", "nifti2", "gzip")]
    images = [(n, d) for n, d, k in files if k in ("png", "jpeg", "tiff", "bmp")]

    try:
        if dicoms:
            vol = _load_dicom(dicoms, display_name, series, limits, warnings, n_other=len(files) - len(dicoms))
        elif niftis:
            if len(niftis) > 1:
                raise InputError(
                    f"The upload holds {len(niftis)} NIfTI files; load one volume at a time "
                    "(a mask of it is uploaded under 'Masks for this case')."
                )
            n, d = niftis[0]
            warnings += _ext_warning(n, _kind(n, d))
            arr, aff, w, meta = read_nifti(d, n, limits)
            warnings += w
            guess = _guess_modality(arr)
            meta["modality_source"] = "given" if modality else "guessed from intensities"
            vol = Volume(arr, _spacing(aff), aff, modality=guess, name=os.path.basename(n), meta=meta)
        elif images:
            if len(images) > 1:
                raise InputError(f"The upload holds {len(images)} images; load one image at a time.")
            n, d = images[0]
            warnings += _ext_warning(n, _kind(n, d))
            arr, aff, w, meta = read_image(d, n, limits, pixel_spacing_mm)
            warnings += w
            meta["modality_source"] = "given" if modality else "assumed ultrasound (image file)"
            vol = Volume(arr, _spacing(aff), aff, modality="US", name=os.path.basename(n), meta=meta)
        else:
            if len(files) == 1:
                raise (
                    _unrecognised(files[0][0])
                    if kinds[0] != "empty"
                    else InputError(f"'{files[0][0]}' is empty (0 bytes); the upload did not complete, so try again.")
                )
            raise InputError(
                f"None of the {len(files)} files is a recognised medical image; upload NIfTI, DICOM or an image file."
            )
    except InputError:
        raise
    except MemoryError:
        raise InputError(
            f"'{display_name}' is too large to load on this server; crop or downsample it first."
        ) from None
    except Exception as exc:  # last resort: never show a library traceback to a user
        raise InputError(
            f"'{display_name}' could not be read ({type(exc).__name__});"
            " the file is damaged or in an unsupported variant."
        ) from None
    if modality:
        if modality not in ("CT", "MR", "US", "OT"):
            raise InputError(f"Unknown modality '{modality}'; choose CT, MR, US or OT.")
        vol.modality = modality
    vol.array = _finite(vol.array, warnings, display_name)
    vol.warnings = warnings + vol.warnings
    return vol


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # x, y, z
    return float(zooms[2]), float(zooms[1]), float(zooms[0])


def _guess_modality(arr: np.ndarray) -> str:
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return "OT"
    lo = float(np.percentile(finite, 1))
    hi = float(np.percentile(finite, 99.5))
    # Air at about -1000 HU is the signature of CT.
    return "CT" if lo < -500 and hi < 5000 else "MR"


def _load_dicom(
    dicoms: list[tuple[str, bytes]],
    display_name: str,
    series: str | None,
    limits: Limits,
    warnings: list[str],
    n_other: int,
) -> Volume:
    parsed, skipped = _dicom.parse_files(dicoms)
    if not parsed:
        raise InputError(f"'{display_name}' does not hold readable DICOM data; the files are damaged or not DICOM.")
    if skipped + n_other:
        warnings.append(f"{skipped + n_other} file(s) in the upload are not DICOM images and were ignored.")
    groups = _dicom.group_series(parsed)
    infos = _dicom.series_infos(groups)
    if series is not None:
        if series not in groups:
            raise InputError("The chosen series is not in this upload; pick one from the series list again.")
        key = series
    else:
        key = infos[0].key
        image_series = [s for s in infos if s.has_pixels]
        if len(image_series) > 1:
            warnings.append(
                f"The upload holds {len(image_series)} image series; the largest ({infos[0].label()}) is shown. "
                "Pick another in the series list."
            )
    label = f"'{display_name}'" if len(dicoms) == 1 else f"The DICOM series in '{display_name}'"
    arr, aff, w, meta, mod = _dicom.assemble_series(groups[key], limits, label)
    warnings += w
    meta["series_key"] = key
    n = arr.shape[0]
    name = f"DICOM {mod} series ({n} slice{'s' if n != 1 else ''})"
    ref = meta.pop("dicom_ref", None)  # UIDs for a DICOM SEG export, kept out of the displayed meta
    return Volume(arr, _spacing(aff), aff, modality=mod, name=name, meta=meta, dicom_ref=ref)


# ---------------------------------------------------------------------------- masks
@_guarded
def load_mask(source: Source, like: Volume, filename: str | None = None, limits: Limits | None = None) -> np.ndarray:
    """Load a label map aligned to ``like``: uint8, same (Z, Y, X) shape and orientation.

    The mask file goes through the same reader and canonicalisation as images, so a mask stored
    with another axis order or flips but the same physical grid lines up. A mask on another grid
    (shape, spacing or position) is refused: resampling a reference silently would change it.
    Colour masks (e.g. MMOTU PNGs) become binary (any non-black pixel is foreground).
    """
    limits = limits or Limits.from_env()
    try:
        mvol = load_volume(
            source,
            filename,
            limits=limits,
            pixel_spacing_mm=_inplane(like) if like.is_2d else None,
            modality=like.modality,
        )
    except InputError as e:
        raise InputError(f"The mask could not be loaded: {str(e)[0].lower()}{str(e)[1:]}") from None
    if mvol.shape != like.shape:
        raise InputError(
            f"The mask is {_fmt(mvol.shape)} voxels but the image is {_fmt(like.shape)}; upload the mask that "
            "belongs to this image."
        )
    if not like.is_2d or mvol.meta.get("format", "").startswith(("NIfTI", "DICOM")):
        sp_ok = np.allclose(mvol.spacing, like.spacing, rtol=1e-3, atol=1e-4)
        off = np.abs(mvol.affine[:3, 3] - like.affine[:3, 3]).max()
        rot_ok = np.allclose(mvol.affine[:3, :3], like.affine[:3, :3], atol=1e-3 * max(like.spacing))
        if not (sp_ok and rot_ok and off <= 0.5 * min(like.spacing)):
            raise InputError(
                "The mask has the image's size but a different position, orientation or voxel size; upload the "
                "mask exported with this image."
            )
    arr = mvol.array
    if "RGB" in str(mvol.meta.get("image_mode", "")) or mvol.meta.get("image_mode") in ("P", "RGBA"):
        return (arr > 0).astype(np.uint8)
    if arr.min() < 0 or arr.max() > 255:
        raise InputError("The mask holds values outside 0-255; a label map must hold small whole numbers.")
    labels = np.rint(arr)
    if np.abs(labels - arr).max() > 1e-3:
        raise InputError("The mask holds fractional values; upload a label map (whole numbers), not a probability map.")
    return labels.astype(np.uint8)


def _inplane(v: Volume) -> tuple[float, float]:
    return v.spacing[1], v.spacing[2]


def _fmt(shape: Sequence[int]) -> str:
    return " x ".join(str(s) for s in shape)


def mask_nifti_bytes(mask: np.ndarray, like: Volume, compress: bool = True) -> bytes:
    """NIfTI-1 bytes of a (Z, Y, X) label map on ``like``'s grid (uint8, source affine)."""
    mask = np.asarray(mask)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {mask.shape} does not match volume shape {like.shape}")
    if mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError("label values must lie in 0..255 for a uint8 label map")
    return nifti_bytes(from_canonical_xyz(mask.astype(np.uint8)), like.affine, compress=compress)


def save_mask_nifti(mask: np.ndarray, like: Volume, path_or_buffer: str | os.PathLike | BinaryIO) -> None:
    """Write a uint8 label map with ``like``'s affine; gzip unless the path ends in ``.nii``.

    Loading it back with :func:`load_mask` gives the identical array.
    """
    if isinstance(path_or_buffer, (str, os.PathLike)):
        compress = not str(path_or_buffer).lower().endswith(".nii")
        Path(path_or_buffer).write_bytes(mask_nifti_bytes(mask, like, compress=compress))
    else:
        path_or_buffer.write(mask_nifti_bytes(mask, like, compress=True))
