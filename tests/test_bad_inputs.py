"""The bad-input corpus: every entry either raises InputError with a clear sentence or loads
correctly with a warning that says what was wrong; plus bounded property-based fuzzing of the
loaders (MEDSEG_FUZZ_EXAMPLES, `make fuzz` runs many more) and the app staying usable."""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import assert_readable
from dicom_factory import axial_series, dicom_slice, zip_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medseg_core.io import InputError, Limits, load_mask, load_volume

PYDICOM = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL = Path(nib.__file__).parent / "tests" / "data"
ROOT = Path(__file__).resolve().parents[1]


def _anat(shape=(20, 16, 12), seed=0):
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)


def _nii(arr, affine=None, gz=True) -> bytes:
    raw = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def _nii_header(edit) -> bytes:
    """A valid NIfTI whose stored header fields are then edited byte-wise (nibabel would re-sync them)."""
    raw = bytearray(nib.Nifti1Image(_anat(), np.eye(4)).to_bytes())
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)), check=False)
    edit(hdr)
    raw[:348] = hdr.binaryblock
    return gzip.compress(bytes(raw))


def _png(arr, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def _huge_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _chunk(b"IEND", b"")
    )


def _huge_nifti() -> bytes:
    def edit(h):
        h["dim"][1:4] = [30000, 30000, 30000]

    return _nii_header(edit)


def _series(n=6, **kw):
    return axial_series(np.random.default_rng(3).integers(0, 2000, (n, 10, 8)).astype(np.uint16), **kw)


def _files(blobs):
    return list(blobs)


def _named(blobs):
    return {f"s{i:03d}.dcm": b for i, b in enumerate(blobs)}


def _missing_slice():
    s = _series(8)
    return [b for i, b in enumerate(s) if i != 4]


def _tilted():
    vol = np.random.default_rng(3).integers(0, 2000, (6, 10, 8)).astype(np.uint16)
    return [dicom_slice(vol[k], (-100.0, -120.0 + 0.8 * k, 30.0 + 2.5 * k), instance=k + 1) for k in range(6)]


def _mixed_orientation():
    s = _series(6)
    odd = dicom_slice(np.zeros((10, 8), np.uint16), (-100.0, -120.0, 200.0), iop=(0, 1, 0, 0, 0, -1), instance=99)
    return s + [odd]


def _duplicate_position():
    s = _series(6)
    return s + [s[2]]


def _uneven():
    vol = np.random.default_rng(3).integers(0, 2000, (6, 10, 8)).astype(np.uint16)
    zs = [0, 2.5, 5, 7.5, 12.0, 14.5]
    return [dicom_slice(vol[k], (-100.0, -120.0, 30.0 + z), instance=k + 1) for k, z in enumerate(zs)]


def _unsupported_compression():
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(PYDICOM / "MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video
    ds.PixelData = encapsulate([b"\x00\x01" * 100])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def _zip_bomb():
    return zip_bytes({"bomb.nii": b"\0" * (64 * 1024 * 1024)})


def _real(name, pkg="pydicom"):
    return ((PYDICOM if pkg == "pydicom" else NIBABEL) / name).read_bytes()


def _header_only_ct():
    return next(PYDICOM.rglob("IM000000")).read_bytes()


def _edit_xform(h):
    h["qform_code"], h["sform_code"] = 0, 0


def _edit_pixdim(h):
    h["qform_code"], h["sform_code"] = 0, 0
    h["pixdim"][1:4] = [0.0, -2.0, np.nan]


def _edit_sform(h):
    h["qform_code"], h["sform_code"] = 0, 1
    h["srow_x"] = [0, 0, 0, 0]


def _nan_inf():
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    a[0, 0, 0], a[1, 1, 1] = np.nan, np.inf
    return _nii(a)


_RGB = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
_SMALL_LIMITS = Limits(max_voxels=10_000, max_decompressed_bytes=32 * 1024 * 1024)

# id -> (source factory, filename, load_volume kwargs, expectation, needle in the message/warnings)
CORPUS = {
    # --- not an image at all
    "empty_file": (lambda: b"", "scan.nii.gz", {}, "error", "empty"),
    "random_bytes": (lambda: np.random.default_rng(0).bytes(4096), "x.bin", {}, "error", "not a recognised"),
    "text_file": (lambda: b"patient notes, not an image\n" * 20, "notes.txt", {}, "error", "not a recognised"),
    "json_file": (lambda: _real("test1.json"), "test1.json", {}, "error", "not a recognised"),
    "gif_image": (lambda: _png(np.zeros((10, 10), np.uint8), "GIF"), "a.gif", {}, "error", "not a recognised"),
    "analyze_header": (lambda: _real("analyze.hdr", "nibabel"), "analyze.hdr", {}, "error", "not a recognised"),
    # --- wrong extensions
    "png_named_nii": (lambda: _png(np.arange(64, dtype=np.uint8).reshape(8, 8)), "scan.nii", {}, "warn", "named .nii"),
    "nifti_named_png": (lambda: _nii(_anat()), "x.png", {}, "warn", "named .png"),
    # --- damaged / truncated
    "truncated_gzip": (lambda: _nii(_anat())[:900], "cut.nii.gz", {}, "error", "cut short"),
    "gzip_cut_in_header": (lambda: _nii(_anat())[:100], "cut.nii.gz", {}, "error", "cut short"),
    "truncated_nii": (lambda: _nii(_anat(), gz=False)[:2000], "cut.nii", {}, "error", "truncated"),
    "gzip_not_nifti": (lambda: gzip.compress(b"hello" * 100), "x.nii.gz", {}, "error", "does not hold a NIfTI"),
    "truncated_dicom": (lambda: _real("MR_truncated.dcm"), "MR_truncated.dcm", {}, "error", "cut short"),
    "dicom_no_meta": (lambda: _real("no_meta.dcm"), "no_meta.dcm", {}, "error", "DICOM"),
    "dicom_header_only": (_header_only_ct, "IM000000", {}, "error", "without pixel data"),
    "truncated_jpeg": (lambda: _png(np.zeros((50, 50), np.uint8), "JPEG")[:200], "a.jpg", {}, "error", "damaged"),
    "bad_png": (lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "a.png", {}, "error", "PNG"),
    # --- sizes
    "huge_nifti_header": (_huge_nifti, "huge.nii.gz", {}, "error", "million"),
    "huge_png_header": (_huge_png, "big.png", {}, "error", "enormous"),
    "over_voxel_budget": (
        lambda: _nii(_anat((40, 40, 40))),
        "big.nii.gz",
        {"limits": _SMALL_LIMITS},
        "error",
        "million",
    ),
    "zero_sized_dim": (lambda: _nii(np.zeros((8, 0, 4), np.float32)), "z.nii.gz", {}, "error", "empty image"),
    "one_voxel_thick": (lambda: _nii(np.ones((8, 8, 1), np.float32)), "thin.nii.gz", {}, "ok", None),
    "extreme_anisotropy": (lambda: _nii(_anat(), np.diag([0.1, 0.1, 50, 1])), "a.nii.gz", {}, "warn", "anisotropic"),
    # --- values and dimensions
    "nan_inf_voxels": (_nan_inf, "n.nii.gz", {}, "warn", "NaN"),
    "all_nan": (lambda: _nii(np.full((4, 4, 4), np.nan, np.float32)), "n.nii.gz", {}, "error", "no valid voxel"),
    "blank_image": (lambda: _nii(np.zeros((5, 5, 5), np.float32)), "b.nii.gz", {}, "warn", "blank"),
    "nifti_4d": (lambda: _nii(np.zeros((4, 5, 6, 3), np.float32)), "t.nii.gz", {}, "warn", "4D"),
    "nifti_5d": (lambda: _nii(np.zeros((4, 4, 4, 2, 2), np.float32)), "t.nii.gz", {}, "warn", "first volume"),
    "complex_nifti": (lambda: _nii(np.ones((5, 5, 5), np.complex64)), "c.nii.gz", {}, "error", "complex"),
    "no_orientation": (lambda: _nii_header(_edit_xform), "o.nii.gz", {}, "warn", "no orientation"),
    "invalid_pixdim": (lambda: _nii_header(_edit_pixdim), "p.nii.gz", {}, "warn", "invalid voxel sizes"),
    "singular_sform": (lambda: _nii_header(_edit_sform), "s.nii.gz", {}, "warn", "no usable orientation"),
    "real_4d_nibabel": (lambda: _real("example4d.nii.gz", "nibabel"), "example4d.nii.gz", {}, "warn", "4D"),
    # --- DICOM content that is not an image
    "dicom_rtstruct": (lambda: _real("rtstruct.dcm"), "rtstruct.dcm", {}, "error", "structure set"),
    "dicom_sr": (lambda: _real("test-SR.dcm"), "test-SR.dcm", {}, "error", "structured report"),
    "dicom_rtplan": (lambda: _real("rtplan.dcm"), "rtplan.dcm", {}, "error", "no image"),
    "dicom_ecg": (lambda: _real("waveform_ecg.dcm"), "ecg.dcm", {}, "error", "no image"),
    "unsupported_compression": (_unsupported_compression, "mpeg.dcm", {}, "error", "cannot decode"),
    # --- series geometry
    "several_series_in_zip": (
        lambda: zip_bytes(_named(_series(4, series_uid="1.2.3") + _series(6, series_uid="1.2.4"))),
        "study.zip",
        {},
        "warn",
        "2 image series",
    ),
    "missing_slice": (lambda: _files(_missing_slice()), None, {}, "warn", "missing"),
    "gantry_tilt": (lambda: _files(_tilted()), None, {}, "warn", "tilt"),
    "mixed_orientations": (lambda: _files(_mixed_orientation()), None, {}, "warn", "orientation"),
    "duplicate_positions": (lambda: _files(_duplicate_position()), None, {}, "warn", "repeat a position"),
    "uneven_spacing": (lambda: _files(_uneven()), None, {}, "warn", "uneven"),
    "dicom_plus_junk_zip": (
        lambda: zip_bytes({**_named(_series(4)), "notes.txt": b"hello"}),
        "s.zip",
        {},
        "warn",
        "not DICOM images",
    ),
    "ybr_colour_us_cine": (lambda: _real("examples_ybr_color.dcm"), "us.dcm", {}, "warn", "cine"),
    # --- archives
    "zip_bomb": (_zip_bomb, "bomb.zip", {"limits": _SMALL_LIMITS}, "error", "expands to"),
    "zip_path_traversal": (
        lambda: zip_bytes({"../../etc/evil.nii.gz": _nii(_anat()), "/abs/x.txt": b"x"}),
        "t.zip",
        {},
        "warn",
        "outside the archive",
    ),
    "nested_zip": (
        lambda: zip_bytes({"inner.zip": zip_bytes({"a.nii.gz": _nii(_anat())})}),
        "o.zip",
        {},
        "error",
        "another archive",
    ),
    "two_niftis_in_zip": (
        lambda: zip_bytes({"a.nii.gz": _nii(_anat()), "b.nii.gz": _nii(_anat())}),
        "o.zip",
        {},
        "error",
        "one volume at a time",
    ),
    "empty_zip": (lambda: zip_bytes({}), "e.zip", {}, "error", "empty archive"),
    "corrupt_zip": (lambda: b"PK\x03\x04" + b"\0" * 50, "a.zip", {}, "error", "zip"),
    # --- 2D images
    "rgb_ultrasound_png": (lambda: _png(_RGB), "us.png", {}, "warn", "colour"),
    "rgba_png": (lambda: _png(np.zeros((10, 10, 4), np.uint8)), "a.png", {}, "warn", "pixel size"),
    "png_16bit": (
        lambda: _png((np.arange(200).reshape(20, 10) * 300).astype(np.uint16)),
        "gi.png",
        {},
        "warn",
        "pixel size",
    ),
    "multipage_tiff": (lambda: _tiff_pages(), "a.tif", {}, "warn", "3 pages"),
}


def _tiff_pages():
    ims = [Image.fromarray(np.full((10, 10), i, np.uint8)) for i in range(3)]
    buf = io.BytesIO()
    ims[0].save(buf, format="TIFF", save_all=True, append_images=ims[1:])
    return buf.getvalue()


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_corpus(case):
    make, filename, kwargs, expect, needle = CORPUS[case]
    src = make()
    if expect == "error":
        with pytest.raises(InputError) as e:
            load_volume(src, filename=filename, **kwargs)
        msg = str(e.value)
        assert needle.lower() in msg.lower(), msg
        assert_readable(msg)
        return
    v = load_volume(src, filename=filename, **kwargs)
    assert v.array.dtype == np.float32 and np.isfinite(v.array).all() and min(v.shape) >= 1
    assert all(s > 0 and np.isfinite(s) for s in v.spacing)
    if expect == "warn":
        assert any(needle.lower() in w.lower() for w in v.warnings), v.warnings
        for w in v.warnings:
            assert_readable(w)


def test_zip_bomb_is_refused_with_bounded_memory():
    import tracemalloc

    data = _zip_bomb()
    tracemalloc.start()
    with pytest.raises(InputError):
        load_volume(data, filename="bomb.zip", limits=_SMALL_LIMITS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 48 * 1024 * 1024, peak  # the 64 MB member is never inflated in full


def test_huge_header_refused_before_allocating():
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(InputError):
        load_volume(_huge_nifti(), filename="huge.nii.gz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak


def test_mask_that_does_not_match_the_image():
    v = load_volume(_nii(_anat()), filename="a.nii.gz")
    with pytest.raises(InputError) as e:
        load_mask(_nii(np.zeros((3, 3, 3), np.uint8)), like=v, filename="m.nii.gz")
    assert "belongs to this image" in str(e.value)
    assert_readable(str(e.value))
    with pytest.raises(InputError) as e:
        load_mask(_nii(np.random.default_rng(0).random((20, 16, 12)).astype(np.float32)), like=v, filename="p.nii.gz")
    assert "probability map" in str(e.value)


# ------------------------------------------------------------------ fuzzing
FUZZ_N = int(os.environ.get("MEDSEG_FUZZ_EXAMPLES", "60"))
SEEDS = {
    "mr.dcm": _real("MR_small.dcm"),
    "ct.dcm": _real("CT_small.dcm"),
    "rle.dcm": _real("MR_small_RLE.dcm"),
    "a.nii.gz": _nii(_anat((6, 5, 4))),
    "a.nii": _nii(_anat((6, 5, 4)), gz=False),
    "us.png": _png(_RGB[:12, :12]),
    "s.zip": zip_bytes(_named(_series(3))),
}
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_N,
    deadline=None,
    derandomize=os.environ.get("MEDSEG_FUZZ_RANDOM") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _load_or_input_error(data: bytes, name: str):
    try:
        v = load_volume(
            data, filename=name, limits=Limits(max_voxels=2_000_000, max_decompressed_bytes=64 * 1024 * 1024)
        )
    except InputError as e:
        assert str(e), "an InputError must carry a message"
        return
    assert np.isfinite(v.array).all()


@FUZZ_SETTINGS
@given(
    data=st.binary(max_size=4096), name=st.sampled_from(["x.nii.gz", "x.nii", "x.dcm", "x.png", "x.zip", "x", "x.jpg"])
)
def test_fuzz_random_bytes_only_input_errors(data, name):
    _load_or_input_error(data, name)


@FUZZ_SETTINGS
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=12),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_fuzz_mutated_real_files_only_input_errors(seed, edits, cut):
    b = bytearray(SEEDS[seed])
    for pos, val in edits:
        b[pos % len(b)] = val  # byte flips, header fields included
    if cut is not None:
        b = b[: int(len(b) * cut)]
    _load_or_input_error(bytes(b), seed)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=2048))
def test_fuzz_mask_loader_only_input_errors(data):
    v = load_volume(SEEDS["a.nii.gz"], filename="a.nii.gz")
    try:
        load_mask(data, like=v, filename="m.nii.gz")
    except InputError:
        pass


# ------------------------------------------------------------------ the app stays usable
APP_SAMPLE = ["truncated_gzip", "random_bytes", "dicom_rtstruct", "huge_nifti_header", "zip_bomb", "empty_file"]


@pytest.mark.parametrize("case", APP_SAMPLE)
def test_app_shows_the_message_and_keeps_the_case(case, monkeypatch):
    """Upload a bad file through the Load case page's handler: the message is shown, the current
    case stays, and the app keeps working (another page renders)."""
    from streamlit.testing.v1 import AppTest

    make, filename, kwargs, _, needle = CORPUS[case]
    if "limits" in kwargs:
        monkeypatch.setenv("MEDSEG_MAX_DECOMPRESSED_BYTES", str(kwargs["limits"].max_decompressed_bytes))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    before = at.session_state["case_key"]
    at.switch_page("pages/load_case.py").run()
    at.file_uploader(key="upload").set_value((filename or "upload.bin", make(), "application/octet-stream")).run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    assert needle.lower() in shown.lower(), shown
    assert at.session_state["case_key"] == before  # the previous case is still loaded
    at.switch_page("pages/segment.py").run()
    assert not at.exception and at.title[0].value == "Segment & review"


def test_unexpected_loader_failures_become_input_errors(monkeypatch):
    """Outside the tests (no MEDSEG_STRICT_LOADING) a loader bug still reaches the user as a sentence."""
    import medseg_core.io.loader as L

    def broken(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.delenv("MEDSEG_STRICT_LOADING")
    monkeypatch.setattr(L, "read_nifti", broken)
    with pytest.raises(InputError) as e:
        load_volume(_nii(_anat()), filename="a.nii.gz")
    assert "damaged" in str(e.value) and "boom" not in str(e.value)
    assert_readable(str(e.value))


def test_uploads_never_touch_the_disk(watched_disk):
    """An upload (a DICOM zip and a mask) is read in memory: nothing is written to the temporary
    folder or the working directory, so there is nothing to leak or to clean up afterwards."""
    from streamlit.testing.v1 import AppTest

    tmp, work = watched_disk
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/load_case.py").run()
    at.file_uploader(key="upload").set_value(("study.zip", zip_bytes(_named(_series(6))), "application/zip")).run()
    at.run()
    assert at.session_state["volume"].meta["format"] == "DICOM"
    from medseg_core.io import mask_nifti_bytes

    vol = at.session_state["volume"]
    mask = np.zeros(vol.shape, np.uint8)
    mask[2:5, 3:6, 1:4] = 1
    at.file_uploader(key="gt_upload").set_value(("mask.nii.gz", mask_nifti_bytes(mask, vol), "application/gzip")).run()
    assert not at.exception
    assert int(at.session_state["gt_mask"].sum()) == int(mask.sum())
    assert list(tmp.rglob("*")) == [] and list(work.rglob("*")) == []
