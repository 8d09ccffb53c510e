"""Exports that leave the app: DICOM SEG (highdicom) for DICOM inputs.

The NIfTI, PNG and CSV exports live next to their data (:func:`medseg_core.io.mask_nifti_bytes`,
:func:`medseg_core.render.frame_png`, :func:`medseg_core.review.metrics_csv`); none of them can
carry patient data because :class:`~medseg_core.io.Volume` never holds any.

DICOM SEG
---------
A binary Segmentation (one segment per label) whose frames are the canonical axial slices. It
references the source images by their Study / Series / SOP Instance UIDs (kept in memory by the
DICOM loader for this purpose, see ``Volume.dicom_ref``) so that a PACS or viewer lays it
over the right series, and it carries the geometry (Image Position / Orientation (Patient), Pixel
Spacing) of the canonical grid in LPS, so it is correct in patient coordinates whatever the source
orientation. Patient Name, Patient ID, birth date, sex, accession number, referring physician and
study date/time are left **empty**: the file holds no identifying data, and the receiving system
links it to the patient through the Study Instance UID.
"""

from __future__ import annotations

import io

import numpy as np

from .io import Volume
from .io.dicom import LPS_TO_RAS

#: SNOMED CT codes for the registry's labels (segmented property type; category in brackets).
_PROPERTY = {
    "ovary": ("Ovary", "Organ"),
    "spleen": ("Spleen", "Organ"),
    "prostate": ("Prostate", "Organ"),
    "large_bowel": ("LargeIntestine", "Organ"),
    "small_bowel": ("SmallIntestine", "Organ"),
    "stomach": ("Stomach", "Organ"),
    "lesion": ("Lesion", "MorphologicallyAbnormalStructure"),
}


def dicom_seg_available(volume: Volume) -> str | None:
    """None when a DICOM SEG can be written for ``volume``, else the reason (a sentence)."""
    if volume.meta.get("format") != "DICOM":
        return "DICOM SEG export needs a DICOM input; this case came from another format (export NIfTI instead)."
    if not volume.dicom_ref:
        return (
            "DICOM SEG export needs single-frame source images whose slices are the axial slices shown here; "
            "export NIfTI instead."
        )
    return None


def _pseudo_sources(volume: Volume) -> list:
    """Minimal datasets standing in for the source images: UIDs and geometry only, no patient data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ref = volume.dicom_ref
    if ref is None:
        raise ValueError("the volume was not read from DICOM: no source UIDs to reference")
    aff = LPS_TO_RAS @ np.asarray(volume.affine, float)  # voxel (x, y, z) -> LPS mm
    sz, sy, sx = volume.spacing
    row_dir = aff[:3, 0] / np.linalg.norm(aff[:3, 0])  # along a row: increasing column (array x)
    col_dir = aff[:3, 1] / np.linalg.norm(aff[:3, 1])  # down a column: increasing row (array y)
    out = []
    for z, uid in enumerate(ref["instance_uids"]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ref["sop_class_uid"]
        ds.SOPInstanceUID = uid
        ds.StudyInstanceUID = ref["study_uid"]
        ds.SeriesInstanceUID = ref["series_uid"]
        ds.FrameOfReferenceUID = ref["frame_of_reference_uid"]
        ds.Modality = volume.modality if volume.modality in ("CT", "MR", "US") else "OT"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.PixelSpacing = [float(sy), float(sx)]
        ds.SliceThickness = float(sz)
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row_dir, col_dir])]
        ds.ImagePositionPatient = [float(v) for v in (aff @ np.array([0.0, 0.0, z, 1.0]))[:3]]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        for k in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ReferringPhysicianName",
        ):
            setattr(ds, k, "")
        out.append(ds)
    return out


def dicom_seg_bytes(masks: dict[str, np.ndarray], volume: Volume, model: str, version: str = "1") -> bytes:
    """A binary DICOM Segmentation of ``masks`` (label -> (Z, Y, X) mask on ``volume``'s grid)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    reason = dicom_seg_available(volume)
    if reason:
        raise ValueError(reason)
    labels = [k for k, m in masks.items() if m is not None]
    if not labels:
        raise ValueError("there is no mask to export")
    sources = _pseudo_sources(volume)
    stack = np.stack([np.asarray(masks[k], bool) for k in labels], axis=-1)  # (frames, rows, cols, segments)
    algo = hd.AlgorithmIdentificationSequence(
        name=f"medseg {model}", version=str(version), family=codes.cid7162.ArtificialIntelligence
    )
    descs = []
    for i, lab in enumerate(labels, start=1):
        prop, cat = _PROPERTY.get(lab, ("Tissue", "Tissue"))
        descs.append(
            hd.seg.SegmentDescription(
                segment_number=i,
                segment_label=lab[:64],
                segmented_property_category=getattr(codes.SCT, cat),
                segmented_property_type=getattr(codes.SCT, prop),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=model[:64],
        software_versions=str(version),
        device_serial_number="research-use-only",
        series_description="medseg research segmentation (not for diagnosis)",
        omit_empty_frames=False,
    )
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue()
