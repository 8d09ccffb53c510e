"""Exports (NIfTI, PNG, CSV, DICOM SEG): correct geometry and no patient data, from a DICOM source
that carries a patient name, ID, birth date, institution and accession number."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import PATIENT_ID, PATIENT_NAME, axial_series, zip_bytes

from medseg_core.export import dicom_seg_available, dicom_seg_bytes
from medseg_core.io import load_volume, mask_nifti_bytes
from medseg_core.io.dicom import LPS_TO_RAS
from medseg_core.render import apply_window, auto_window, frame_png, overlay
from medseg_core.review import metrics_csv

ROOT = Path(__file__).resolve().parents[1]
PHI = [PATIENT_NAME, PATIENT_ID, "DOE", "JANE", "MRN-0042", "19700101", "St Example Hospital", "ACC998877", "WHO^DR"]


def _no_phi(blob: bytes, what: str):
    for s in PHI:
        assert s.encode() not in blob, f"{s!r} found in the {what} export"
        assert s.encode("utf-16-le") not in blob, f"{s!r} (UTF-16) found in the {what} export"


@pytest.fixture(scope="module")
def dicom_case():
    rng = np.random.default_rng(5)
    kji = rng.integers(0, 1500, (7, 24, 20)).astype(np.uint16)
    files = axial_series(kji, spacing=(0.8, 0.7), dz=2.5)
    vol = load_volume(files)
    mask = np.zeros(vol.shape, np.uint8)
    mask[2:5, 6:14, 4:11] = 1
    return files, vol, mask


def test_volume_holds_uids_only_for_the_seg_reference(dicom_case):
    files, vol, _ = dicom_case
    ref = vol.dicom_ref
    assert set(ref) == {"study_uid", "series_uid", "frame_of_reference_uid", "sop_class_uid", "instance_uids"}
    _no_phi(repr(vol.meta).encode(), "Volume.meta")
    assert "1.2.3.4" not in repr(vol.meta) and "1.2.3.4" not in repr(vol)  # UIDs only in dicom_ref
    # each canonical slice references the source image at the same patient position
    src = {pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID: pydicom.dcmread(io.BytesIO(b)) for b in files}
    for z, uid in enumerate(ref["instance_uids"]):
        ipp = np.array([float(v) for v in src[uid].ImagePositionPatient])
        assert vol.index_to_world(z, 0, 0)[2] == pytest.approx(ipp[2])


def test_dicom_seg_geometry_references_and_no_phi(dicom_case):
    files, vol, mask = dicom_case
    blob = dicom_seg_bytes({"ovary": mask}, vol, "ovary_unet")
    _no_phi(blob, "DICOM SEG")
    seg = pydicom.dcmread(io.BytesIO(blob))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY" and int(seg.NumberOfFrames) == vol.shape[0]
    assert str(seg.PatientName) == "" and seg.PatientID == ""
    assert seg.StudyInstanceUID == vol.dicom_ref["study_uid"]
    assert seg.SegmentSequence[0].SegmentLabel == "ovary"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Ovary"
    frames = seg.pixel_array.astype(bool)  # (frames, rows, cols)
    iop = np.array(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
    sy, sx = (float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    refs = vol.dicom_ref["instance_uids"]
    for f, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
        src_uid = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = refs.index(src_uid)
        np.testing.assert_array_equal(frames[f], mask[z] > 0)
        # every voxel of the frame lands where the volume says it is (LPS -> RAS)
        for r, c in [(0, 0), (6, 4), (13, 10)]:
            lps = ipp + c * sx * iop[:3] + r * sy * iop[3:]
            ras = (LPS_TO_RAS @ np.append(lps, 1.0))[:3]
            np.testing.assert_allclose(ras, vol.index_to_world(z, r, c), atol=1e-4)


def test_seg_is_refused_for_non_dicom_inputs(dicom_case):
    import nibabel as nib

    _, vol, mask = dicom_case
    nii = load_volume(mask_nifti_bytes(mask, vol), filename="m.nii.gz")
    assert "DICOM input" in dicom_seg_available(nii)
    with pytest.raises(ValueError):
        dicom_seg_bytes({"ovary": mask}, nii, "ovary_unet")
    assert nib  # imported for the NIfTI round trip above


def test_nifti_png_csv_exports_carry_no_phi(dicom_case):
    _, vol, mask = dicom_case
    nii = mask_nifti_bytes(mask, vol, compress=False)
    _no_phi(nii, "NIfTI")
    png = frame_png(overlay(apply_window(vol.array[3], *auto_window(vol.array)), [(mask[3], (255, 0, 0))]))
    _no_phi(png, "PNG")
    csv = metrics_csv([{"label": "ovary", "dice": 0.5}], {"model": "ovary_unet", "case": vol.name})
    _no_phi(csv, "CSV")
    assert PATIENT_NAME not in vol.name and "JANE" not in vol.describe().__repr__()


def test_app_shows_no_phi_and_offers_dicom_seg(dicom_case):
    """Upload the DICOM series as a zip through the app, run a model, and scan every element on
    every page for the patient's identifiers."""
    from dicom_factory import dicom_slice
    from streamlit.testing.v1 import AppTest

    from medseg_core.data.synthetic import abdominal_ct

    c = abdominal_ct(3)
    arr = c.volume.array  # (Z, Y, X) HU, canonical RAS
    members = {}
    for k in range(arr.shape[0]):
        # LPS rows/cols: flip both in-plane axes of the RAS array
        px = np.clip(arr[k, ::-1, ::-1] + 1024, 0, 4000).astype(np.uint16)
        members[f"IM{k:04d}.dcm"] = dicom_slice(
            px, (0.0, 0.0, 3.0 * k), spacing=c.volume.spacing[1:], intercept=-1024, instance=k + 1, thickness=3.0
        )
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/load_case.py").run()
    at.file_uploader(key="upload").set_value(("study.zip", zip_bytes(members), "application/zip")).run()
    assert not at.exception
    assert at.session_state["volume"].meta["format"] == "DICOM"
    texts = []

    def collect():
        for kind in (
            "markdown",
            "caption",
            "text",
            "warning",
            "error",
            "info",
            "title",
            "subheader",
            "metric",
            "selectbox",
            "table",
            "dataframe",
        ):
            for el in getattr(at, kind, []):
                texts.append(str(getattr(el, "value", "")) + str(getattr(el, "label", "")))
        for el in at.sidebar:
            texts.append(str(getattr(el, "value", "")))

    collect()
    at.switch_page("app.py").run()  # the framed app: sidebar with the case name and the model choice
    assert "Case:" in " ".join(m.value for m in at.sidebar.markdown)
    collect()
    at.session_state["model_name"] = "unet3d"  # AppTest's switch_page runs the page without app.py's sidebar
    at.switch_page("pages/segment.py").run()
    at.button[0].click().run()  # Run model
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert "Export DICOM SEG" in labels and "Export mask (NIfTI, source affine)" in labels
    collect()
    at.switch_page("pages/models.py").run()
    collect()
    blob = " ".join(texts)
    assert "unet3d" in blob  # the collection works
    for s in PHI:
        assert s not in blob, s
