"""Reviewing predictions made elsewhere (nnU-Net, TotalSegmentator, MONAI Label, a colleague): label maps,
DICOM SEG and RT Structure Sets become per-label masks on the image's grid, and the app reviews them
as a model's output (TP / FP / FN colouring, metrics)."""

from __future__ import annotations

import base64
import dataclasses
import io
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from browser import ARTIFACTS, app_server, browser, settled
from conftest import assert_readable
from dicom_factory import axial_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medseg_core.export import dicom_seg_bytes
from medseg_core.inference import prediction_from_masks
from medseg_core.io import InputError, list_series, load_label_masks, load_volume, mask_nifti_bytes
from medseg_core.io.segmentation import file_stem, union_mask, unique_name

ROOT = Path(__file__).resolve().parents[1]
SEG_SENTENCE = (
    "This file is a DICOM Segmentation ({}); upload it as a mask (reference or prediction) for the image it belongs to."
)


# ---------------------------------------------------------------------------- fixtures and builders
@pytest.fixture(scope="module")
def series():
    """A 7-slice axial CT series (rows 24, columns 20; 0.8 x 0.7 mm pixels, 2.5 mm slices) as DICOM bytes."""
    rng = np.random.default_rng(11)
    kji = rng.integers(0, 1500, (7, 24, 20)).astype(np.uint16)
    return axial_series(kji, spacing=(0.8, 0.7), dz=2.5)


@pytest.fixture(scope="module")
def dvol(series):
    return load_volume(series)


def _two_labels(shape):
    a = np.zeros(shape, np.uint8)
    a[2:5, 6:14, 4:11] = 1
    b = np.zeros(shape, np.uint8)
    b[1:3, 0:5, 0:3] = 1
    b[5, 20:24, 15:20] = 1
    return a, b


def _nii(labels: np.ndarray, affine) -> bytes:
    return nib.Nifti1Image(labels, affine).to_bytes()


def _rtstruct(contours: list[list[tuple[float, float, float]]], frame_uid="1.2.3.4.9", name="GTV") -> bytes:
    """An RT Structure Set (written with pydicom) holding one ROI with the given closed planar contours (LPS mm)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", generate_uid()
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, name, frame_uid
    ds.StructureSetROISequence = Sequence([roi])
    rc = Dataset()
    rc.ReferencedROINumber = 1
    items = []
    for pts in contours:
        c = Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(pts)
        c.ContourData = [float(v) for p in pts for v in p]
        items.append(c)
    rc.ContourSequence = Sequence(items)
    ds.ROIContourSequence = Sequence([rc])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _square(k: int, rows=(6, 12), cols=(4, 10)):
    """A square contour through the centres of source pixels rows[0]..rows[1], cols[0]..cols[1] of slice k of
    :func:`series` (origin (-100, -120, 30) mm LPS, columns 0.7 mm along +x, rows 0.8 mm along +y, 2.5 mm slices)."""
    z = 30.0 + 2.5 * k
    x0, x1 = (-100.0 + 0.7 * c for c in cols)
    y0, y1 = (-120.0 + 0.8 * r for r in rows)
    return [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]


def _seg_in_source_layout(series, mask_kji: np.ndarray, labels=("liver",), kind="BINARY") -> bytes:
    """A DICOM SEG written the way other tools write them: highdicom from the real source images, frames in
    the source images' own pixel layout (rows towards posterior, columns towards the patient's left), empty
    frames omitted. ``mask_kji``: (slice, row, column) for one segment, with a trailing segment axis for
    several (BINARY, FRACTIONAL), or the segment numbers (LABELMAP)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(io.BytesIO(b)) for b in series]
    for s in sources:  # the factory omits a few type-2 attributes highdicom copies
        for k in ("PatientSex", "StudyDate", "StudyTime", "StudyID"):
            setattr(s, k, "")
    algo = hd.AlgorithmIdentificationSequence(name="nnU-Net", version="2", family=codes.cid7162.ArtificialIntelligence)
    descs = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=label,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for i, label in enumerate(labels, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.ascontiguousarray(mask_kji),
        segmentation_type=getattr(hd.seg.SegmentationTypeValues, kind),
        segment_descriptions=descs,
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="elsewhere",
        manufacturer_model_name="nnU-Net",
        software_versions="2",
        device_serial_number="1",
        **({"max_fractional_value": 255} if kind == "FRACTIONAL" else {}),
    )
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------- label maps
def test_nifti_multilabel_map_becomes_one_mask_per_label(nibabel_files):
    """A label map on nibabel's real anatomical.nii grid, stored in the file's own (LAS) orientation."""
    img = nib.load(nibabel_files / "anatomical.nii")
    image = load_volume(nibabel_files / "anatomical.nii")
    xyz = np.zeros(img.shape, np.uint8)  # the file's (x, y, z) voxel order, x towards the patient's left
    xyz[2:6, 10:20, 3:9] = 1  # 4 * 10 * 6 = 240 voxels
    xyz[20:30, 5:8, 10:12] = 2  # 10 * 3 * 2 = 60
    xyz[0, 0, 0] = 5  # 1
    masks = load_label_masks(_nii(xyz, img.affine), like=image, filename="totalseg.nii.gz", names={2: "liver"})
    assert list(masks) == ["label_1", "liver", "label_5"]
    assert {k: int(m.sum()) for k, m in masks.items()} == {"label_1": 240, "liver": 60, "label_5": 1}
    for m in masks.values():
        assert m.shape == image.shape == (25, 41, 33) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    # canonical RAS+ (Z, Y, X): file x (towards the left) is reversed; voxel (0, 0, 0) lands at x = 32
    assert masks["label_5"][0, 0, 32] == 1
    z, y, x = np.nonzero(masks["label_1"])
    assert (z.min(), z.max(), y.min(), y.max(), x.min(), x.max()) == (3, 8, 10, 19, 32 - 5, 32 - 2)
    assert np.array_equal(union_mask(masks) > 0, np.transpose(xyz, (2, 1, 0))[:, :, ::-1] > 0)


def test_binary_and_empty_maps():
    from medseg_core.io import Volume

    vol = Volume(np.zeros((4, 8, 6), np.float32), (2.0, 1.0, 1.0), np.diag([1.0, 1.0, 2.0, 1.0]), modality="MR")
    binary = np.zeros(vol.shape, np.uint8)
    binary[1:3, 2:5, 1:4] = 1
    got = load_label_masks(mask_nifti_bytes(binary, vol), like=vol, filename="p.nii.gz")
    assert list(got) == ["label_1"] and np.array_equal(got["label_1"], binary)
    empty = load_label_masks(mask_nifti_bytes(np.zeros(vol.shape, np.uint8), vol), like=vol, filename="e.nii.gz")
    assert list(empty) == ["label_1"] and int(empty["label_1"].sum()) == 0  # found nothing: still a result


def test_mask_on_another_grid_is_refused(nibabel_files):
    img = nib.load(nibabel_files / "anatomical.nii")
    image = load_volume(nibabel_files / "anatomical.nii")
    # another size: nibabel's resampled copy of the same anatomy (4 x 4 x 8 mm)
    other = nib.load(nibabel_files / "resampled_anat_moved.nii")
    with pytest.raises(InputError) as e:
        load_label_masks(_nii(np.ones(other.shape, np.uint8), other.affine), like=image, filename="other.nii.gz")
    assert str(e.value) == (
        "The mask is 3 x 21 x 17 voxels but the image is 25 x 41 x 33; upload the mask that belongs to this image."
    )
    assert_readable(str(e.value))
    # the same size, moved by 6 mm
    moved = img.affine.copy()
    moved[:3, 3] += [6.0, 0.0, 0.0]
    with pytest.raises(InputError) as e:
        load_label_masks(_nii(np.ones(img.shape, np.uint8), moved), like=image, filename="moved.nii.gz")
    assert "different position, orientation or voxel size" in str(e.value)
    assert_readable(str(e.value))


# ---------------------------------------------------------------------------- DICOM SEG
@pytest.mark.parametrize("how", ["in order", "shuffled", "no UIDs (positions)"])
def test_dicom_seg_written_by_medseg_reads_back_identical(series, dvol, how):
    a, b = _two_labels(dvol.shape)
    blob = dicom_seg_bytes({"ovary": a, "lesion": b}, dvol, "ovary_unet")
    if how == "shuffled":
        files = list(series)
        random.Random(3).shuffle(files)
        like = load_volume(files)
        assert like.dicom_ref["instance_uids"] == dvol.dicom_ref["instance_uids"]
    elif how == "no UIDs (positions)":
        like = dataclasses.replace(dvol, dicom_ref=None)  # as if the image came as NIfTI
    else:
        like = dvol
    got = load_label_masks(blob, like=like, filename="seg.dcm")
    assert list(got) == ["ovary", "lesion"]
    assert np.array_equal(got["ovary"], a) and np.array_equal(got["lesion"], b)
    assert got["ovary"].dtype == np.uint8 and int(got["ovary"].sum()) == 3 * 8 * 7


@pytest.mark.parametrize("by_uid", [True, False])
def test_dicom_seg_in_the_source_layout_lands_on_the_canonical_grid(series, dvol, by_uid):
    """Other tools write frames in the source images' layout (LPS: columns towards the left, rows towards
    posterior); medseg's array is RAS+, so both in-plane axes are reversed."""
    a, _ = _two_labels(dvol.shape)
    src = a[:, ::-1, ::-1]  # canonical (z, y, x) -> source (slice, row, column)
    blob = _seg_in_source_layout(series, src)
    like = dvol if by_uid else dataclasses.replace(dvol, dicom_ref=None)
    got = load_label_masks(blob, like=like, filename="nnunet_seg.dcm")
    assert list(got) == ["liver"] and np.array_equal(got["liver"], a)


@pytest.mark.parametrize("kind", ["frames with gaps", "FRACTIONAL", "LABELMAP"])
def test_dicom_seg_variants(series, dvol, kind):
    a, b = _two_labels(dvol.shape)
    flip = (slice(None), slice(None, None, -1), slice(None, None, -1))  # canonical (z, y, x) -> source layout
    if kind == "frames with gaps":  # b alone: frames on slices 1, 2 and 5 only
        blob, expected = _seg_in_source_layout(series, b[flip], ("b",)), {"b": b}
    elif kind == "FRACTIONAL":  # probabilities: 0.3 around a 0.8 core; the mask is p >= 0.5
        p = np.zeros(dvol.shape, np.float32)
        p[2, 5:11, 5:11] = 0.3
        p[2, 6:9, 6:10] = 0.8
        blob, expected = (
            _seg_in_source_layout(series, p[flip], ("p",), "FRACTIONAL"),
            {"p": (p >= 0.5).astype(np.uint8)},
        )
        assert int(expected["p"].sum()) == 12
    else:  # one label map, segment numbers as values (Label Map Segmentation Storage)
        lm = a + 2 * b * (1 - a)
        blob, expected = _seg_in_source_layout(series, lm[flip], ("a", "b"), "LABELMAP"), {"a": a, "b": b}
    for like in (dvol, dataclasses.replace(dvol, dicom_ref=None)):  # by UIDs, by positions
        got = load_label_masks(blob, like=like, filename="seg.dcm")
        assert list(got) == list(expected)
        for k in expected:
            assert np.array_equal(got[k], expected[k]), (kind, k)


def test_dicom_seg_of_another_image_is_refused(dvol):
    a, _ = _two_labels(dvol.shape)
    blob = dicom_seg_bytes({"ovary": a}, dvol, "ovary_unet")
    rng = np.random.default_rng(2)
    taller = load_volume(axial_series(rng.integers(0, 99, (7, 30, 20)).astype(np.uint16), series_uid="1.2.3.4.77"))
    with pytest.raises(InputError) as e:
        load_label_masks(blob, like=taller, filename="seg.dcm")
    assert "lies on another grid" in str(e.value)
    assert_readable(str(e.value))
    other_frame = load_volume(axial_series(rng.integers(0, 99, (7, 24, 20)).astype(np.uint16), series_uid="1.2.3.4.78"))
    other_frame.dicom_ref = dict(other_frame.dicom_ref, frame_of_reference_uid="9.8.7")
    with pytest.raises(InputError) as e:
        load_label_masks(blob, like=other_frame, filename="seg.dcm")
    assert "belongs to another image" in str(e.value)
    assert_readable(str(e.value))
    shifted = load_volume(
        axial_series(
            rng.integers(0, 99, (7, 24, 20)).astype(np.uint16), series_uid="1.2.3.4.79", origin=(-100.0, -120.0, 31.2)
        )
    )  # half a slice higher
    with pytest.raises(InputError) as e:
        load_label_masks(blob, like=shifted, filename="seg.dcm")
    assert "lies on another grid" in str(e.value)


def test_seg_uploaded_as_the_image_is_recognised(pydicom_files, dvol):
    with pytest.raises(InputError) as e:
        load_volume(pydicom_files / "liver_1frame.dcm")  # a real SEG (3D Slicer), one segment
    assert str(e.value) == SEG_SENTENCE.format("1 segment")
    assert_readable(str(e.value))
    a, b = _two_labels(dvol.shape)
    blob = dicom_seg_bytes({"ovary": a, "lesion": b}, dvol, "ovary_unet")
    with pytest.raises(InputError) as e:
        load_volume(blob, filename="seg.dcm")
    assert str(e.value) == SEG_SENTENCE.format("2 segments")
    infos = list_series(blob, filename="seg.dcm")
    assert len(infos) == 1 and not infos[0].has_pixels and "DICOM Segmentation (2 segments)" in infos[0].label()


# ---------------------------------------------------------------------------- RT Structure Set
def test_rtstruct_square_contours_rasterise_to_the_expected_voxels(dvol):
    blob = _rtstruct([_square(2), _square(3)])
    got = load_label_masks(blob, like=dvol, filename="rtstruct.dcm")
    assert list(got) == ["GTV"]
    m = got["GTV"]
    # rows 6..12 and columns 4..10 inclusive (7 x 7 pixel centres on the contour or inside) on 2 slices
    assert int(m.sum()) == 2 * 7 * 7 == 98
    z, y, x = np.nonzero(m)
    assert sorted(set(z)) == [2, 3]
    # source row r -> canonical y = 23 - r (rows run posterior), column c -> x = 19 - c (columns run left)
    assert (y.min(), y.max(), x.min(), x.max()) == (23 - 12, 23 - 6, 19 - 10, 19 - 4)
    # each voxel centre lies inside the square in patient coordinates
    lps = np.array([dvol.index_to_world(*v) * [-1, -1, 1] for v in zip(z, y, x, strict=True)])
    assert lps[:, 0].min() == pytest.approx(-100 + 0.7 * 4) and lps[:, 1].max() == pytest.approx(-120 + 0.8 * 12)
    # a contour inside another on the same slice is a hole: 49 - 9 = 40 voxels
    holed = load_label_masks(_rtstruct([_square(4), _square(4, rows=(8, 10), cols=(6, 8))]), like=dvol)["GTV"]
    assert int(holed.sum()) == 49 - 9 and int(holed[4].sum()) == 40


def test_rtstruct_of_another_image_is_refused(dvol):
    with pytest.raises(InputError) as e:
        load_label_masks(_rtstruct([_square(2)], frame_uid="9.9.9"), like=dvol)
    assert "another frame of reference" in str(e.value)
    assert_readable(str(e.value))
    between = [(x, y, z + 1.25) for x, y, z in _square(2)]  # half-way between two slices
    with pytest.raises(InputError) as e:
        load_label_masks(_rtstruct([between]), like=dvol)
    assert "do not lie on this image's slices" in str(e.value)
    outside = [(x, y, z + 100.0) for x, y, z in _square(2)]
    with pytest.raises(InputError) as e:
        load_label_masks(_rtstruct([outside]), like=dvol)
    assert "outside this image" in str(e.value)
    assert_readable(str(e.value))


# ---------------------------------------------------------------------------- Prediction
def test_prediction_from_masks(dvol):
    a, b = _two_labels(dvol.shape)
    p = prediction_from_masks("nnU-Net fold 0", {"ovary": a * 3, "lesion": b}, dvol)
    assert p.model == "nnU-Net fold 0" and p.labels == ["ovary", "lesion"] and np.array_equal(p.mask, a)
    assert p.shape == dvol.shape and p.spacing == dvol.spacing and np.array_equal(p.affine, dvol.affine)
    assert p.masks_before_postprocessing.keys() == p.masks.keys()
    assert all(not r.any() for r in p.removed.values()) and all(not r.any() for r in p.added.values())
    assert p.probabilities == {} and p.warnings == [] and p.uncertainty is None
    with pytest.raises(InputError):
        prediction_from_masks("x", {"ovary": a[:3]}, dvol)
    assert file_stem("case_01.nii.gz") == "case_01" and file_stem("seg.DCM") == "seg"
    assert unique_name("case_01", {"case_01", "case_01 (2)"}) == "case_01 (3)"


# ---------------------------------------------------------------------------- the app (AppTest)
def _shifted(gt: np.ndarray, dx: int = 3) -> np.ndarray:
    p = np.zeros_like(gt)
    p[:, :, dx:] = gt[:, :, :-dx]
    return p


def _dice(a, b) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _column(table, *words):
    """The metrics table's column whose name holds all ``words`` (keys or display names: "dice" / "Dice")."""
    for c in table.columns:
        if all(w in str(c).lower().replace("_", " ") for w in words):
            return table[c]
    raise KeyError(f"no column with {words} in {list(table.columns)}")


def test_apptest_upload_prediction_then_review_it_with_metrics():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    vol, gt = at.session_state["volume"], at.session_state["gt_mask"]
    pred = _shifted(gt)
    at.switch_page("pages/load_case.py").run()
    at.file_uploader(key="pred_upload").set_value(
        ("colleague.nii.gz", mask_nifti_bytes(pred, vol), "application/gzip")
    ).run()
    assert not at.exception and not at.error
    name = at.text_input(key=[t.key for t in at.text_input if t.key.startswith("pred_name_")][0])
    assert name.value == "colleague"  # the file stem
    name.set_value("nnU-Net fold 0").run()
    at.button(key="add_predictions").click().run()
    assert not at.exception and not at.error
    ext = at.session_state["external_predictions"]
    assert list(ext) == ["nnU-Net fold 0"] and np.array_equal(ext["nnU-Net fold 0"].mask, pred)
    assert any("nnU\\-Net fold 0" in m.value and "1 label" in m.value for m in at.markdown)
    assert not [t for t in at.text_input if t.key.startswith("pred_name_")]  # added: no longer pending

    at.switch_page("pages/segment.py").run()
    radio = at.radio(key="result_source")
    assert "Uploaded prediction: nnU-Net fold 0" in radio.options  # as the user reads it
    radio.set_value("uploaded:nnU-Net fold 0").run()
    assert not at.exception
    assert any("TP green · FP red · FN blue" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert _column(table, "dice").iloc[0] == pytest.approx(_dice(pred, gt), abs=1e-9)
    assert 0.5 < _dice(pred, gt) < 0.99  # TP, FP and FN all present
    assert _column(table, "pred", "volume").iloc[0] == pytest.approx(pred.sum() * vol.voxel_volume_ml)

    # removing it on the Load case page takes it out of the review
    at.switch_page("pages/load_case.py").run()
    at.button(key="remove_prediction_nnU-Net fold 0").click().run()
    assert not at.exception and at.session_state["external_predictions"] == {}
    # a new case starts without uploaded predictions
    ext = at.session_state["external_predictions"]
    ext["stale"] = prediction_from_masks("stale", {"x": pred}, vol)
    [b for b in at.button if b.label == "Open sample"][0].click().run()
    assert at.session_state["external_predictions"] == {}


def test_apptest_seg_and_rtstruct_uploads_in_memory(series, watched_disk):
    """A DICOM series as the image, a two-segment DICOM SEG as the reference (one segment picked), an RT
    Structure Set as a prediction: all read in memory (nothing written to the temporary folder or the working
    directory). (AppTest draws the sidebar on the first run only, so the sidebar's agreement is checked in
    Chromium.)"""
    from streamlit.testing.v1 import AppTest

    tmp, work = watched_disk
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/load_case.py").run()
    at.file_uploader(key="upload").set_value(
        [(f"IM{i}.dcm", b, "application/dicom") for i, b in enumerate(series)]
    ).run()
    vol = at.session_state["volume"]
    assert vol.meta["format"] == "DICOM" and at.session_state["gt_mask"] is None
    a, b = _two_labels(vol.shape)
    seg = dicom_seg_bytes({"ovary": a, "lesion": b}, vol, "ovary_unet")
    at.file_uploader(key="gt_upload").set_value(("reference_seg.dcm", seg, "application/dicom")).run()
    assert not at.exception and not at.error
    assert np.array_equal(at.session_state["gt_mask"], union_mask({"a": a, "b": b}))  # all labels by default
    pick = [s for s in at.selectbox if s.key.startswith("gt_label_")][0]
    assert pick.options == ["All labels (union)", "ovary", "lesion"]
    pick.set_value("ovary").run()
    assert np.array_equal(at.session_state["gt_mask"], a)

    at.file_uploader(key="pred_upload").set_value(
        [
            ("plan_rtstruct.dcm", _rtstruct([_square(2), _square(3)]), "application/dicom"),
            ("wrong.dcm", _rtstruct([_square(2)], frame_uid="9.9.9"), "application/dicom"),
        ]
    ).run()
    assert any("wrong.dcm: The RT Structure Set was drawn on another image" in e.value for e in at.error)
    at.button(key="add_predictions").click().run()
    ext = at.session_state["external_predictions"]
    assert list(ext) == ["plan_rtstruct"] and int(ext["plan_rtstruct"].masks["GTV"].sum()) == 98
    # a SEG given as the image is recognised
    at.file_uploader(key="upload").set_value(("seg.dcm", seg, "application/dicom")).run()
    assert any(SEG_SENTENCE.format("2 segments") in e.value for e in at.error)
    assert not at.exception
    assert list(tmp.rglob("*")) == [] and list(work.rglob("*")) == []


# ---------------------------------------------------------------------------- the app in Chromium
def _colour_counts(href: str) -> dict:
    """Pixels of the viewer image (a PNG data URI) that are clearly green, red or blue."""
    from PIL import Image

    png = base64.b64decode(href.split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return {
        "green": int(((g > r + 40) & (g > b + 40)).sum()),
        "red": int(((r > g + 40) & (r > b + 40)).sum()),
        "blue": int(((b > r + 40) & (b > g + 40)).sum()),
    }


def _open_load_case(page, url):
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("Research use only").wait_for(timeout=90_000)
    page.locator("[data-testid=stSidebar]").get_by_role("link", name="Load case").click()
    page.get_by_text("Masks for this case").wait_for(timeout=90_000)


@pytest.mark.browser
def test_browser_upload_prediction_and_review_it(tmp_path):
    from medseg_core.samples import get_sample

    ARTIFACTS.mkdir(exist_ok=True)
    vol, gt, _ = get_sample("pelvic").load()
    pred = _shifted(gt)
    path = tmp_path / "colleague_ovary.nii.gz"
    path.write_bytes(mask_nifti_bytes(pred, vol))
    dice = _dice(pred, gt)
    with app_server() as url, browser() as b:
        for width, height in ((1280, 720), (1600, 1000)):
            page = b.new_page(viewport={"width": width, "height": height})
            _open_load_case(page, url)
            uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Prediction masks to review")
            uploader.locator("input[type=file]").set_input_files(str(path))
            field = page.get_by_label("Name for colleague_ovary.nii.gz")
            field.wait_for(timeout=60_000)
            assert field.input_value() == "colleague_ovary"
            field.fill("colleague")
            field.press("Enter")
            settled(page)
            page.screenshot(path=str(ARTIFACTS / f"external_pending_{width}x{height}.png"))
            page.get_by_role("button", name="Add 1 prediction for review").click()
            page.get_by_text("Predictions to review").wait_for(timeout=60_000)
            settled(page)
            assert page.locator("[data-testid=stException]").count() == 0
            page.screenshot(path=str(ARTIFACTS / f"external_load_{width}x{height}.png"))
            page.locator("[data-testid=stSidebar]").get_by_role("link", name="Segment & review").click()
            page.get_by_text("Result to review").wait_for(timeout=90_000)
            page.get_by_text("Uploaded prediction: colleague").click()
            page.get_by_text("made outside medseg").wait_for(timeout=60_000)
            page.get_by_text("TP green · FP red · FN blue").wait_for(timeout=60_000)
            page.locator(".js-plotly-plot image").first.wait_for(timeout=60_000)
            counts = _colour_counts(page.locator(".js-plotly-plot image").first.get_attribute("href") or "")
            assert counts["green"] > 50 and counts["red"] > 5 and counts["blue"] > 5, counts
            settled(page)
            page.get_by_text("Result to review").scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / f"external_review_top_{width}x{height}.png"))
            page.get_by_text("TP green · FP red · FN blue").scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / f"external_review_viewer_{width}x{height}.png"))
            grid = page.locator("[data-testid=stDataFrame]").first
            grid.wait_for(timeout=60_000)
            grid.scroll_into_view_if_needed()
            page.wait_for_timeout(1500)
            cells = page.locator("[data-testid=stDataFrame] [role=gridcell]").all_inner_texts()
            assert any(c.strip() == f"{dice:.4f}" or c.strip().startswith(f"{dice:.4f}") for c in cells), (dice, cells)
            assert page.locator("[data-testid=stException]").count() == 0
            page.screenshot(path=str(ARTIFACTS / f"external_review_metrics_{width}x{height}.png"))
            page.close()
        # the sidebar agrees as soon as a reference is uploaded (no extra rerun needed): an image without one first
        page = b.new_page(viewport={"width": 1280, "height": 720})
        _open_load_case(page, url)
        page.get_by_role("tab", name="Upload").click()
        sample_dir = ROOT / "medseg_core" / "sample_data"
        page.locator("[data-testid=stFileUploader]").filter(has_text="Image file(s)").locator(
            "input[type=file]"
        ).set_input_files(str(sample_dir / "abdomen_ct.nii.gz"))
        sidebar = page.locator("[data-testid=stSidebar]")
        sidebar.get_by_text("abdomen_ct.nii.gz").wait_for(timeout=90_000)
        sidebar.get_by_text("No reference mask").wait_for(timeout=30_000)
        page.locator("[data-testid=stFileUploader]").filter(has_text="Reference mask").locator(
            "input[type=file]"
        ).set_input_files(str(sample_dir / "abdomen_ct_spleen.nii.gz"))
        sidebar.get_by_text("Reference mask loaded").wait_for(timeout=60_000)
        settled(page)
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "external_reference_sidebar.png"))
