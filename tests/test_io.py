"""medseg_core.io: formats, orientation, DICOM geometry, masks, errors, patient data."""

from __future__ import annotations

import gzip
import io
import random
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, assert_readable
from dicom_factory import PATIENT_ID, PATIENT_NAME, axial_series, dicom_slice, zip_bytes
from PIL import Image

from medseg_core.io import (
    InputError,
    Limits,
    Volume,
    display_aspect,
    display_slice,
    display_to_index,
    list_series,
    load_mask,
    load_volume,
    mask_nifti_bytes,
    save_mask_nifti,
)


def nifti(arr_xyz, affine, gz=True) -> bytes:
    img = nib.Nifti1Image(arr_xyz, affine)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def anatomy(shape=(20, 16, 12), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, size=shape).astype(np.int16)


# ------------------------------------------------------------------ layout
def test_core_imports_without_streamlit():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'streamlit' or name.startswith('streamlit.'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import medseg_core, medseg_core.io\n"
        "assert 'streamlit' not in sys.modules\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# ------------------------------------------------------------------ NIfTI + orientation
@pytest.mark.parametrize("gz", [True, False])
def test_nifti_loads_float32_zyx_with_spacing(gz):
    data = anatomy()
    aff = np.diag([0.7, 0.8, 3.0, 1.0])
    v = load_volume(nifti(data, aff, gz), filename="x.nii.gz" if gz else "x.nii")
    assert v.array.dtype == np.float32
    assert v.shape == (12, 16, 20)
    assert v.spacing == pytest.approx((3.0, 0.8, 0.7))
    assert v.orientation == "RAS"
    np.testing.assert_array_equal(v.array, np.transpose(data, (2, 1, 0)).astype(np.float32))
    assert v.meta["source_orientation"] == "RAS"


def test_same_anatomy_two_affines_same_canonical_array():
    data = anatomy()
    aff_ras = np.diag([0.7, 0.8, 3.0, 1.0])
    aff_ras[:3, 3] = (-10, 20, -5)
    a = load_volume(nifti(data, aff_ras), filename="ras.nii.gz")
    # Store the same anatomy as LPI with axes permuted (y, x, z): voxel (j, i, k) holds data[i, j, k]
    # flipped along x, y and z.
    nx, ny, nz = data.shape
    stored = np.transpose(data[::-1, ::-1, ::-1], (1, 0, 2))
    aff2 = np.zeros((4, 4))
    aff2[3, 3] = 1
    # stored[j', i', k'] = data[nx-1-i', ny-1-j', nz-1-k']  -> world x of i' decreases, etc.
    aff2[:3, 1] = [-0.7, 0, 0]  # second stored axis runs along -x
    aff2[:3, 0] = [0, -0.8, 0]  # first stored axis along -y
    aff2[:3, 2] = [0, 0, -3.0]  # third along -z
    aff2[:3, 3] = aff_ras[:3, 3] + np.array([0.7 * (nx - 1), 0.8 * (ny - 1), 3.0 * (nz - 1)])
    b = load_volume(nifti(stored, aff2), filename="lpi.nii.gz")
    assert b.meta["source_orientation"] == "PLI"
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)


def test_patient_left_marker_appears_on_image_right():
    data = np.zeros((21, 15, 5), np.int16)
    # RAS affine with world x = i - 10: i < 10 is the patient's LEFT (negative x is left).
    aff = np.eye(4)
    aff[:3, 3] = (-10, -7, 0)
    data[2, 7, 2] = 1000  # world x = -8: patient left
    data[10, 12, 2] = 500  # world y = +5: anterior
    v = load_volume(nifti(data, aff), filename="m.nii.gz")
    pic = display_slice(v.array, "axial", 2)
    r, c = np.argwhere(pic == 1000)[0]
    assert c > pic.shape[1] / 2, "patient left must be on the image right (radiological)"
    r2, _ = np.argwhere(pic == 500)[0]
    assert r2 < pic.shape[0] / 2, "anterior must be at the top"
    # the inverse mapping returns the array index of that pixel
    z, y, x = display_to_index("axial", 2, r, c, v.shape)
    assert v.array[z, y, x] == 1000
    cor = display_slice(v.array, "coronal", 7)
    assert np.argwhere(cor == 1000)[0][1] > cor.shape[1] / 2


def test_display_aspect_follows_spacing():
    assert display_aspect((6.0, 0.7, 0.5), "axial") == (0.7, 0.5)
    assert display_aspect((6.0, 0.7, 0.5), "coronal") == (6.0, 0.5)
    assert display_aspect((6.0, 0.7, 0.5), "sagittal") == (6.0, 0.7)


def test_4d_nifti_keeps_first_volume_with_warning():
    data = np.stack([np.full((4, 5, 6), t, np.float32) for t in range(3)], axis=-1)
    v = load_volume(nifti(data, np.eye(4)), filename="t.nii.gz")
    assert v.shape == (6, 5, 4) and float(v.array.max()) == 0.0
    assert any("4D" in w for w in v.warnings)


def test_cifti_file_refused_not_shown_as_one_voxel(nibabel_files):
    """nibabel's bundled CIFTI-2 connectivity file (a NIfTI-2 whose dims are 1 x 1 x 1 x 1 x N x M)
    loaded as a 1 x 1 x 1 'MR' before; it is refused with what it is."""
    with pytest.raises(InputError) as e:
        load_volume((nibabel_files / "row_major.dconn.nii").read_bytes(), filename="row_major.dconn.nii")
    assert "CIFTI" in str(e.value) and "not a voxel image" in str(e.value)
    assert_readable(str(e.value))


def test_nifti_with_values_only_outside_space_refused():
    img = nib.Nifti1Image(np.arange(12, dtype=np.float32).reshape(1, 1, 1, 1, 12), np.eye(4))
    with pytest.raises(InputError) as e:
        load_volume(img.to_bytes(), filename="vector.nii")
    assert "no image grid" in str(e.value) and "12" in str(e.value)
    assert_readable(str(e.value))


def test_geometry_table_says_what_the_file_did_not(nibabel_files):
    """nibabel's standard.nii.gz states no spatial unit and no modality: the table says mm was assumed and
    the modality guessed; a CT's intensities are in HU; a header in metres is converted to mm."""
    d = load_volume((nibabel_files / "standard.nii.gz").read_bytes(), filename="standard.nii.gz").describe()
    assert d["spatial unit"] == "not stated in the file (mm assumed)"
    assert d["modality"] == "MR (guessed from the intensities: the file does not say)"
    img = nib.Nifti1Image(np.full((4, 5, 6), -1000, np.int16), np.diag([0.0008, 0.0008, 0.003, 1]))
    img.header.set_xyzt_units("meter")
    v = load_volume(img.to_bytes(), filename="metres.nii", modality="CT")
    assert v.spacing == pytest.approx((3.0, 0.8, 0.8))
    assert any("metres" in w or "meters" in w for w in v.warnings)
    assert "intensity range (HU)" in v.describe() and "(guessed" not in v.describe()["modality"]


def test_geometry_table_writes_large_intensities_out():
    data = np.full((3, 4, 5), -1024, np.float32)
    data[1, 2, 3] = 31744.0
    d = load_volume(nifti(data, np.eye(4)), filename="ct.nii.gz").describe()
    assert d["intensity range"] == "-1,024 .. 31,744"


def test_nan_inf_replaced_with_warning():
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    v = load_volume(nifti(data, np.eye(4)), filename="n.nii.gz")
    assert np.isfinite(v.array).all()
    assert any("NaN" in w for w in v.warnings)


def test_huge_header_refused_before_allocation():
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    raw = bytearray(img.to_bytes())
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)))
    hdr.set_data_shape((30000, 30000, 30000))
    raw[:348] = hdr.binaryblock
    with pytest.raises(InputError) as e:
        load_volume(bytes(raw), filename="huge.nii")
    assert "million" in str(e.value)
    assert_readable(str(e.value))


def test_truncated_gzip_nifti():
    good = nifti(anatomy(), np.eye(4))
    with pytest.raises(InputError) as e:
        load_volume(good[: len(good) // 2], filename="cut.nii.gz")
    assert_readable(str(e.value))


def test_extension_mismatch_warns_and_loads():
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    v = load_volume(buf.getvalue(), filename="scan.nii")
    assert v.shape == (1, 8, 8)
    assert any("named .nii" in w for w in v.warnings)


# ------------------------------------------------------------------ images
def test_png_rgb_to_grey_displays_as_file():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    v = load_volume(buf.getvalue(), filename="us.png")
    assert v.shape == (1, 30, 40) and v.modality == "US" and v.spacing == (1.0, 1.0, 1.0)
    grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    np.testing.assert_allclose(display_slice(v.array, "axial", 0), grey, rtol=1e-5, atol=1e-3)
    assert any("colour" in w for w in v.warnings)


def test_png_16bit_and_given_spacing():
    arr = (np.arange(20 * 10).reshape(20, 10) * 300).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    v = load_volume(buf.getvalue(), filename="gi.png", pixel_spacing_mm=(1.5, 1.25), modality="MR")
    assert v.modality == "MR" and float(v.array.max()) == float(arr.max())
    assert v.spacing[1:] == pytest.approx((1.5, 1.25))
    np.testing.assert_array_equal(display_slice(v.array, "axial", 0), arr.astype(np.float32))


# ------------------------------------------------------------------ DICOM series
def stored_volume(nk=6, rows=10, cols=8):
    rng = np.random.default_rng(3)
    return rng.integers(0, 2000, (nk, rows, cols)).astype(np.uint16)


def test_dicom_series_shuffled_files_sorted_by_position_and_rescaled():
    vol = stored_volume()
    files = axial_series(vol, slope=1.0, intercept=-1024.0)
    shuffled = files[:]
    random.Random(5).shuffle(shuffled)
    v = load_volume(shuffled)
    assert v.modality == "CT"
    assert v.shape == (6, 10, 8)
    assert v.spacing == pytest.approx((2.5, 0.8, 0.7))
    # canonical RAS: z increases superior = slice index; DICOM rows run to posterior and columns to
    # patient left, so canonical y and x are both reversed relative to (row, col).
    expected = vol.astype(np.float32)[:, ::-1, ::-1] - 1024.0
    np.testing.assert_array_equal(v.array, expected)
    # the first stored voxel (row 0, col 0, slice 0) keeps its world position (LPS -> RAS)
    world = v.index_to_world(0, 9, 7)
    np.testing.assert_allclose(world, [100.0, 120.0, 30.0], atol=1e-6)
    assert not v.warnings


def test_dicom_and_nifti_of_same_anatomy_agree():
    vol = stored_volume()
    v_dcm = load_volume(axial_series(vol))
    # The same anatomy as NIfTI in RAS: x = -(LPS x), y = -(LPS y).
    data_xyz = np.transpose(vol, (2, 1, 0)).astype(np.int16)  # (col, row, slice)
    aff = np.array([[-0.7, 0, 0, 100.0], [0, -0.8, 0, 120.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    v_nii = load_volume(nifti(data_xyz, aff), filename="same.nii.gz")
    np.testing.assert_array_equal(v_dcm.array, v_nii.array)
    np.testing.assert_allclose(v_dcm.affine, v_nii.affine, atol=1e-6)


def test_rescale_slope_intercept_per_slice():
    vol = np.full((2, 4, 4), 100, np.uint16)
    files = [
        dicom_slice(vol[0], (0, 0, 0), slope=2.0, intercept=-1000.0, instance=1),
        dicom_slice(vol[1], (0, 0, 2.5), slope=0.5, intercept=10.0, instance=2),
    ]
    v = load_volume(files)
    assert v.array[0].max() == pytest.approx(-800.0)
    assert v.array[1].max() == pytest.approx(60.0)


def test_missing_slice_detected():
    files = axial_series(stored_volume(nk=8))
    del files[4]
    v = load_volume(files)
    assert v.shape[0] == 7
    assert any("missing" in w for w in v.warnings)


def test_uneven_spacing_reported():
    vol = stored_volume(nk=5)
    zs = [0, 2.5, 5.0, 8.0, 10.0]
    files = [dicom_slice(vol[k], (0, 0, z), instance=k + 1) for k, z in enumerate(zs)]
    v = load_volume(files)
    assert any("uneven" in w for w in v.warnings)


def test_gantry_tilt_reported_and_positions_exact():
    vol = stored_volume(nk=5)
    files = [dicom_slice(vol[k], (0, 0.5 * k, 2.5 * k), instance=k + 1) for k in range(5)]
    v = load_volume(files)
    assert any("tilt" in w for w in v.warnings)
    # last slice's first pixel (row 0, col 0) is at LPS (0, 2.0, 10) -> RAS (0, -2.0, 10)
    z, y, x = 4, v.shape[1] - 1, v.shape[2] - 1
    np.testing.assert_allclose(v.index_to_world(z, y, x), [0, -2.0, 10.0], atol=1e-6)


def test_mixed_orientations_keeps_majority():
    vol = stored_volume(nk=4)
    files = axial_series(vol)
    files.append(dicom_slice(vol[0], (0, 0, 0), iop=(0, 1, 0, 0, 0, -1), instance=9))
    v = load_volume(files)
    assert v.shape[0] == 4
    assert any("orientations" in w for w in v.warnings)


def test_zip_with_two_series_list_and_pick():
    a = axial_series(stored_volume(nk=3), series_uid="1.2.3.1")
    b = axial_series(stored_volume(nk=5), series_uid="1.2.3.2", modality="MR")
    members = {f"study/a/{i}.dcm": d for i, d in enumerate(a)}
    members.update({f"study/b/{i}.dcm": d for i, d in enumerate(b)})
    members["study/README.txt"] = b"hello"
    z = zip_bytes(members)
    infos = list_series(z, filename="study.zip")
    assert [s.n_frames for s in infos] == [5, 3]
    for s in infos:
        assert "1.2.3" not in s.label() and PATIENT_NAME not in s.label()
    v = load_volume(z, filename="study.zip")
    assert v.shape[0] == 5 and v.modality == "MR"
    assert any("2 image series" in w for w in v.warnings)
    v3 = load_volume(z, filename="study.zip", series=infos[1].key)
    assert v3.shape[0] == 3 and v3.modality == "CT"


def test_folder_of_dicom(tmp_path):
    for i, d in enumerate(axial_series(stored_volume(nk=4))):
        (tmp_path / f"IM{i:04d}").write_bytes(d)
    assert load_volume(tmp_path).shape == (4, 10, 8)


def test_zip_path_traversal_names_read_in_memory_only(tmp_path):
    files = axial_series(stored_volume(nk=3))
    z = zip_bytes({f"../../../tmp/evil{i}.dcm": d for i, d in enumerate(files)})
    before = set(p.name for p in tmp_path.parent.iterdir())
    v = load_volume(z, filename="evil.zip")
    assert v.shape[0] == 3
    assert any("outside the archive" in w for w in v.warnings)
    assert set(p.name for p in tmp_path.parent.iterdir()) == before


def test_zip_bomb_refused():
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.dcm", b"\0" * (64 * 1024 * 1024))
    with pytest.raises(InputError) as e:
        load_volume(buf.getvalue(), filename="bomb.zip", limits=Limits(max_decompressed_bytes=8 * 1024 * 1024))
    assert_readable(str(e.value))


def test_patient_identifiers_never_in_volume():
    v = load_volume(axial_series(stored_volume(nk=3)))
    text = repr(v.meta) + v.name + " ".join(v.warnings)
    for ident in (PATIENT_NAME, "DOE", "JANE", PATIENT_ID, "19700101", "Example Hospital", "ACC998877", "1.2.3.4"):
        assert ident not in text
    assert v.meta["Manufacturer"] == "TestVendor"


# ------------------------------------------------------------------ masks
def _vol():
    data = anatomy((12, 10, 8))
    aff = np.array([[0, -0.9, 0, 5], [0.7, 0, 0, -3], [0, 0, 4.0, 2], [0, 0, 0, 1.0]])
    return load_volume(nifti(data, aff), filename="img.nii.gz"), data, aff


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_mask_round_trip_identical(tmp_path, suffix):
    v, _, _ = _vol()
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, v.shape).astype(np.uint8)
    p = tmp_path / f"m{suffix}"
    save_mask_nifti(mask, v, p)
    back = load_mask(p, like=v)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)
    img = nib.load(p)
    np.testing.assert_allclose(img.affine, v.affine)
    assert img.get_data_dtype() == np.uint8


def test_mask_in_source_orientation_aligns():
    v, data, aff = _vol()
    # a mask written in the *source* (non-canonical) orientation of the image
    mask_src = (data > 500).astype(np.uint8)
    m = load_mask(nifti(mask_src, aff), like=v, filename="mask.nii.gz")
    np.testing.assert_array_equal(m, (v.array > 500).astype(np.uint8))


def test_mask_geometry_mismatch_refused():
    v, data, aff = _vol()
    with pytest.raises(InputError) as e:
        load_mask(nifti(np.zeros((5, 5, 5), np.uint8), aff), like=v, filename="m.nii.gz")
    assert_readable(str(e.value))
    shifted = aff.copy()
    shifted[:3, 3] += 40
    with pytest.raises(InputError) as e2:
        load_mask(nifti(np.zeros(data.shape, np.uint8), shifted), like=v, filename="m.nii.gz")
    assert "position" in str(e2.value)
    assert_readable(str(e2.value))


def test_mask_buffer_export_round_trip():
    v, _, _ = _vol()
    mask = (v.array > 300).astype(np.uint8)
    buf = io.BytesIO()
    save_mask_nifti(mask, v, buf)
    np.testing.assert_array_equal(load_mask(buf.getvalue(), like=v, filename="x.nii.gz"), mask)
    assert mask_nifti_bytes(mask, v)[:2] == b"\x1f\x8b"


# ------------------------------------------------------------------ real files shipped in packages
REAL_OK = [
    # (package, file, shape (Z, Y, X), spacing (Z, Y, X) or None)
    ("pydicom", "CT_small.dcm", (1, 128, 128), (5.0, 0.661468, 0.661468)),
    ("pydicom", "MR_small.dcm", (1, 64, 64), (0.8, 0.3125, 0.3125)),
    ("pydicom", "MR_small_bigendian.dcm", (1, 64, 64), (0.8, 0.3125, 0.3125)),
    ("pydicom", "MR_small_RLE.dcm", (1, 64, 64), (0.8, 0.3125, 0.3125)),
    ("pydicom", "MR_small_jp2klossless.dcm", (1, 64, 64), (0.8, 0.3125, 0.3125)),
    ("pydicom", "MR_small_jpeg_ls_lossless.dcm", (1, 64, 64), (0.8, 0.3125, 0.3125)),
    ("pydicom", "JPGExtended.dcm", (1, 1024, 256), None),
    ("pydicom", "examples_ybr_color.dcm", (30, 240, 320), None),  # RGB ultrasound cine, multi-frame
    ("pydicom", "examples_palette.dcm", (1, 350, 800), None),
    ("pydicom", "SC_rgb_rle_2frame.dcm", (2, 100, 100), None),
    ("pydicom", "rtdose.dcm", (15, 10, 10), (5.0, 10.0, 10.0)),  # multi-frame grid with frame offsets
    ("nibabel", "anatomical.nii", (25, 41, 33), (2.0, 2.0, 2.0)),
    ("nibabel", "example4d.nii.gz", (24, 96, 128), (2.2, 2.0, 2.0)),
    ("nibabel", "example_nifti2.nii.gz", (12, 20, 32), (2.2, 2.0, 2.0)),
    ("nibabel", "standard.nii.gz", (7, 5, 4), (2.0, 3.0, 1.0)),
]
REAL_ERR = [
    ("pydicom", "MR_truncated.dcm", "cut short"),
    ("pydicom", "rtstruct.dcm", "structure set"),
    ("pydicom", "test-SR.dcm", "structured report"),
    ("pydicom", "rtplan.dcm", "no image"),
    ("pydicom", "waveform_ecg.dcm", "no image"),
    ("pydicom", "no_meta.dcm", "DICOM"),
    ("nibabel", "analyze.hdr", "not a recognised"),
]


def _real(pkg, name, pydicom_files, nibabel_files):
    return (pydicom_files if pkg == "pydicom" else nibabel_files) / name


@pytest.mark.parametrize("pkg,name,shape,spacing", REAL_OK)
def test_real_files_load(pkg, name, shape, spacing, pydicom_files, nibabel_files):
    v = load_volume(_real(pkg, name, pydicom_files, nibabel_files))
    assert v.shape == shape
    if spacing:
        assert v.spacing == pytest.approx(spacing, rel=1e-4)
    assert v.orientation == "RAS"
    assert np.isfinite(v.array).all()


def test_real_ct_values_in_hounsfield(pydicom_files):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    v = load_volume(pydicom_files / "CT_small.dcm")
    ds = pydicom.dcmread(pydicom_files / "CT_small.dcm")
    assert v.modality == "CT" and float(ds.RescaleIntercept) != 0
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    # IOP of this file is axial LPS, so canonical RAS reverses rows and columns
    np.testing.assert_array_equal(v.array[0], hu[::-1, ::-1])


@pytest.mark.parametrize("pkg,name,needle", REAL_ERR)
def test_real_files_refused_clearly(pkg, name, needle, pydicom_files, nibabel_files):
    with pytest.raises(InputError) as e:
        load_volume(_real(pkg, name, pydicom_files, nibabel_files))
    assert needle in str(e.value)
    assert_readable(str(e.value))


# ------------------------------------------------------------------ messages
BAD = {
    "empty": (b"", "x.nii.gz"),
    "random": (np.random.default_rng(0).bytes(4096), "x.bin"),
    "text": (b"hello, this is not an image at all\n" * 10, "notes.txt"),
    "bad_zip": (b"PK\x03\x04" + b"\0" * 50, "a.zip"),
    "empty_zip": (zip_bytes({}), "e.zip"),
    "bad_png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "a.png"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_give_readable_input_error(case):
    data, name = BAD[case]
    with pytest.raises(InputError) as e:
        load_volume(data, filename=name)
    assert_readable(str(e.value))


def test_volume_contract():
    v = Volume(np.zeros((4, 5)), (1, 0.5, 0.5), np.eye(4), modality="US")
    assert v.shape == (1, 4, 5) and v.is_2d and v.array.dtype == np.float32
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2)), (1, 1, 1), np.eye(4), modality="XR")
    assert v.voxel_volume_ml == pytest.approx(0.25 / 1000)


def test_gzip_cut_inside_header_says_cut_short():
    good = nifti(anatomy(), np.eye(4))
    with pytest.raises(InputError) as e:
        load_volume(good[:100], filename="cut.nii.gz")
    assert "cut short" in str(e.value)
