"""The bundle's X-ray preprocessing on PNG, JPEG and DICOM files, and loading errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from mimmx.errors import DataError
from mimmx.transforms import CheckedLoadImaged

TRAIN = Path(__file__).resolve().parents[1] / "bundles" / "mimmx_cxr" / "configs" / "train.yaml"


def _preprocessing(tmp_path: Path):
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser["bundle_root"] = str(tmp_path)
    return parser.get_parsed_content("validate#preprocessing")


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "patient00001"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, size=(80, 96)).astype(np.uint16)
    img[10:30, 20:40] = 250  # a bright block to locate after loading
    return img


@pytest.mark.parametrize("suffix", ["png", "jpg", "dcm"])
def test_xray_preprocessing_reads_png_jpeg_and_dicom(tmp_path, pixels, suffix):
    path = tmp_path / f"image.{suffix}"
    if suffix == "dcm":
        _write_dicom(path, pixels * 16)
    else:
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    out = _preprocessing(tmp_path)({"image": str(path), "label": 1})
    image = out["image"]
    assert isinstance(image, torch.Tensor) and image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) < 0.2 and 0.8 < float(image.max()) <= 1.0  # scaled to [0, 1], then resized
    assert out["label"] == 1


def test_png_and_dicom_load_in_the_same_orientation(tmp_path, pixels):
    _write_dicom(tmp_path / "a.dcm", pixels * 16)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
    pre = _preprocessing(tmp_path)
    a, b = pre({"image": str(tmp_path / "a.dcm")})["image"], pre({"image": str(tmp_path / "a.png")})["image"]
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.95


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        CheckedLoadImaged(keys="image", image_only=True)({"image": str(bad)})


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(DataError, match="absent.png"):
        CheckedLoadImaged(keys="image", image_only=True)({"image": str(tmp_path / "absent.png")})


def test_wrong_dimensionality_names_the_file(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(DataError, match="flat.png: expected a 3D image"):
        CheckedLoadImaged(keys="image", image_only=True, spatial_dims=3)({"image": str(tmp_path / "flat.png")})


def test_nan_image_names_the_file(tmp_path):
    import nibabel as nib

    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(DataError, match="nan.nii.gz: the image contains NaN"):
        CheckedLoadImaged(keys="image", image_only=True)({"image": str(tmp_path / "nan.nii.gz")})
