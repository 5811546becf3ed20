"""Synthetic DICOM inputs for the deployment checks: a radiograph from a PNG, an MR series from a NIfTI volume.

The bundles' sample images are PNG and NIfTI; a DICOM deployment needs DICOM. These writers wrap the same pixels
in the minimal, valid headers the SDK's loader and MONAI's readers expect (patient/study/series/instance
identity, geometry, pixel module), so a comparison between the deployed app and ``monai.bundle run`` on the same
file tests the app and not the conversion.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["write_mr_series", "write_radiograph"]

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage


def _dataset(path: Path, sop_class: str, modality: str, study_uid: str, series_uid: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, "SYNTHETIC-001", "Synthetic^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "SYN1"
    ds.SeriesNumber, ds.SeriesDescription = 1, "synthetic"
    return ds


def _pixels(ds, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array.astype(np.uint16))
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = array.tobytes()


def write_radiograph(png: str | os.PathLike, out_file: str | os.PathLike, modality: str = "DX") -> Path:
    """A single-frame DX (or CR) DICOM file with the PNG's pixels (rows = image height); returns its path."""
    from PIL import Image
    from pydicom.uid import generate_uid

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(Image.open(png).convert("L"))
    ds = _dataset(out, DX_STORAGE, modality, generate_uid(), generate_uid())
    ds.InstanceNumber, ds.ImageType = 1, ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PatientOrientation = ["L", "F"]
    _pixels(ds, array)
    ds.save_as(str(out), enforce_file_format=True)
    return out


def write_mr_series(nifti: str | os.PathLike, out_folder: str | os.PathLike) -> Path:
    """One axial MR file per slice of the NIfTI volume, geometry from its affine (RAS -> DICOM's LPS)."""
    import nibabel as nib
    from pydicom.uid import generate_uid

    image = nib.load(str(nifti))
    volume = np.asarray(image.dataobj, dtype=np.float64)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine  # to LPS
    low, high = float(volume.min()), float(volume.max())
    scaled = np.round((volume - low) / max(high - low, 1e-12) * 4095)
    folder = Path(out_folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]  # i runs along a row (columns)
    for k in range(volume.shape[2]):
        path = folder / f"slice_{k:03d}.dcm"
        ds = _dataset(path, MR_STORAGE, "MR", study_uid, series_uid)
        ds.InstanceNumber, ds.ImageType = k + 1, ["ORIGINAL", "PRIMARY"]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in (affine @ np.array([0, 0, k, 1.0]))[:3]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        _pixels(ds, scaled[:, :, k].T)  # DICOM rows run along j
        ds.save_as(str(path), enforce_file_format=True)
    return folder
