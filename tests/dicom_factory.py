"""Write real DICOM files (via pydicom) with controlled geometry, for tests."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "MRN-0042-XYZ"


def dicom_slice(
    pixels: np.ndarray,
    ipp,
    iop=(1, 0, 0, 0, 1, 0),
    spacing=(0.8, 0.7),
    modality="CT",
    series_uid=None,
    instance=1,
    slope=1.0,
    intercept=0.0,
    thickness=2.5,
) -> bytes:
    """One 2D slice as DICOM bytes. ``pixels`` (rows, cols) are *stored* values (uint16/int16)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "St Example Hospital"
    ds.AccessionNumber = "ACC998877"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.FrameOfReferenceUID = "1.2.3.4.9"
    ds.SeriesInstanceUID = series_uid or "1.2.3.4.5"
    ds.SeriesDescription = "JANE DOE pelvis"
    ds.Modality = modality
    ds.Manufacturer = "TestVendor"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    signed = pixels.dtype.kind == "i"
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def axial_series(vol_kji: np.ndarray, spacing=(0.8, 0.7), dz=2.5, origin=(-100.0, -120.0, 30.0), **kw) -> list[bytes]:
    """A standard axial (LPS, IOP 1,0,0,0,1,0) series from stored values indexed [slice, row, col].

    Slice k lies at z = origin_z + k * dz (towards the head)."""
    out = []
    for k in range(vol_kji.shape[0]):
        ipp = (origin[0], origin[1], origin[2] + k * dz)
        out.append(dicom_slice(vol_kji[k], ipp, spacing=spacing, instance=k + 1, **kw))
    return out


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
