"""The MRI bundle's 3D preprocessing on NIfTI, DICOM series and MHA, and bad volumes that fail by name."""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    NormalizeIntensityd,
    Orientationd,
    ResizeWithPadOrCropd,
    Spacingd,
)
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mimmx.data.dicom import check_dicom_series
from mimmx.errors import DataError
from mimmx.transforms import CheckedLoadImaged

PIXDIM = (2.0, 2.0, 2.0)
SIZE = (16, 16, 16)


def _chain(reorient_only: bool = False) -> Compose:
    """The MRI bundle's preprocessing: load (checked), channel first, RAS, resample, normalise, fixed size."""
    head = [
        CheckedLoadImaged(keys="image", image_only=True, spatial_dims=3),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS", labels=None),
    ]
    if reorient_only:
        return Compose(head)
    tail = [
        Spacingd(keys="image", pixdim=PIXDIM, mode="bilinear"),
        NormalizeIntensityd(keys="image", nonzero=True),
        ResizeWithPadOrCropd(keys="image", spatial_size=SIZE),
    ]
    return Compose(head + tail)


@contextmanager
def raises_data_error(match: str):
    """A DataError matching ``match``, raised directly or as the cause of MONAI's "applying transform" wrapper."""
    with pytest.raises(Exception) as info:  # noqa: B017 - the DataError is looked up in the cause chain below
        yield
    error = info.value
    while error is not None and not isinstance(error, DataError):
        error = error.__cause__
    assert error is not None, f"no DataError in the cause chain of {info.value!r}"
    assert re.search(match, str(error)), f"{match!r} not found in {error}"


def _world(affine, index) -> np.ndarray:
    return (np.asarray(affine, dtype=float) @ np.append(np.asarray(index, dtype=float), 1.0))[:3]


def _argmax(image: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(torch.argmax(image[0])), image.shape[1:]))


# ----------------------------------------------------------------------------------------------
# NIfTI in non-RAS storage
# ----------------------------------------------------------------------------------------------

STORAGE = {
    # name: (voxel axis -> world axis, sign), spacing per voxel axis
    "LPS": ([(0, -1), (1, -1), (2, 1)], (2.0, 2.0, 3.0)),
    "LAS": ([(0, -1), (1, 1), (2, 1)], (1.5, 2.0, 2.0)),
    "PSR": ([(1, -1), (2, 1), (0, 1)], (2.0, 3.0, 2.0)),  # axes permuted, as some sagittal acquisitions
}


def _storage_affine(name: str, shape) -> np.ndarray:
    axes, spacing = STORAGE[name]
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for voxel_axis, (world_axis, sign) in enumerate(axes):
        affine[world_axis, voxel_axis] = sign * spacing[voxel_axis]
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)  # origin at the volume centre
    return affine


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_bright_voxel_ends_up_at_its_anatomical_place(tmp_path, storage):
    shape = (10, 12, 8)
    data = np.full(shape, 10.0, np.float32)
    index = (1, 2, 6)
    data[index] = 1000.0
    affine = _storage_affine(storage, shape)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "t1.nii.gz"))
    expected = _world(affine, index)  # the bright voxel's place in the patient (RAS mm)

    oriented = _chain(reorient_only=True)({"image": str(tmp_path / "t1.nii.gz")})["image"]
    codes = nib.aff2axcodes(oriented.affine.numpy())
    assert codes == ("R", "A", "S")
    assert np.allclose(_world(oriented.affine, _argmax(oriented)), expected)
    # increasing index = towards Right, Anterior, Superior
    assert np.all(np.diag(oriented.affine.numpy())[:3] > 0)

    out = _chain()({"image": str(tmp_path / "t1.nii.gz")})["image"]
    assert out.shape == (1, *SIZE)
    assert np.allclose(np.abs(np.diag(out.affine.numpy())[:3]), PIXDIM)
    assert np.linalg.norm(_world(out.affine, _argmax(out)) - expected) <= max(PIXDIM) * 1.01
    assert abs(float(out[0][out[0] != 0].mean())) < 0.5  # normalised over the non-zero voxels


def test_mha_written_by_simpleitk(tmp_path):
    array = np.full((6, 7, 9), 5, np.int16)  # SimpleITK arrays are (z, y, x)
    array[4, 1, 2] = 900
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 2.0, 2.5))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # LPS world, ITK's convention
    image.SetOrigin((10.0, -4.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "t1.mha"))
    lps = np.array(image.TransformIndexToPhysicalPoint((2, 1, 4)))
    expected = lps * np.array([-1, -1, 1])  # the same point in RAS

    oriented = _chain(reorient_only=True)({"image": str(tmp_path / "t1.mha")})["image"]
    assert oriented.shape == (1, 9, 7, 6)
    assert np.allclose(_world(oriented.affine, _argmax(oriented)), expected)
    assert _chain()({"image": str(tmp_path / "t1.mha")})["image"].shape == (1, *SIZE)


# ----------------------------------------------------------------------------------------------
# DICOM series
# ----------------------------------------------------------------------------------------------


def write_series(
    folder: Path,
    n_slices: int = 5,
    rows: int = 6,
    columns: int = 7,
    thickness: float = 2.5,
    series_uid: str | None = None,
    skip: tuple[int, ...] = (),
    first_name: int = 0,
) -> str:
    """An axial MR series, one file per slice, named in reverse slice order; slice k is filled with 10 * (k + 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    for k in range(n_slices):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "MR", "sub-001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, series_uid, 1
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -20.0, 40.0 + thickness * k]
        ds.PixelSpacing = [1.0, 1.5]  # between rows, between columns
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.full((rows, columns), 10 * (k + 1), np.uint16)
        pixels[1, 3] = 1000  # row 1, column 3: towards the patient's right and anterior
        ds.PixelData = pixels.tobytes()
        ds.save_as(str(folder / f"im{first_name + n_slices - k:03d}.dcm"), enforce_file_format=True)
    return str(folder)


def test_dicom_series_loads_in_slice_order(tmp_path):
    folder = write_series(tmp_path / "series")
    files = check_dicom_series(folder)
    assert [f.name for f in files] == [f"im{i:03d}.dcm" for i in range(5, 0, -1)]  # sorted along the normal

    oriented = _chain(reorient_only=True)({"image": folder})["image"]
    assert oriented.shape == (1, 7, 6, 5)  # columns (x), rows (y), slices (z)
    slice_means = oriented[0].float().mean(dim=(0, 1)) - 1000 / 42
    assert torch.all(slice_means[1:] > slice_means[:-1])  # inferior -> superior, as the positions say
    spacing = np.abs(np.diag(oriented.affine.numpy())[:3])
    assert np.allclose(spacing, (1.5, 1.0, 2.5))
    # the marked pixel (row 1, column 3 of slice 0) is at LPS (-10 + 3*1.5, -20 + 1*1, 40) = RAS (5.5, 19, 40)
    assert np.allclose(_world(oriented.affine, _argmax(oriented)), (5.5, 19.0, 40.0))
    assert _chain()({"image": folder})["image"].shape == (1, *SIZE)


def test_dicom_series_with_a_missing_slice_names_the_position(tmp_path):
    folder = write_series(tmp_path / "gap", n_slices=6, skip=(3,))
    with raises_data_error(r"gap: 1 slice\(s\) missing.*47\.5"):
        _chain()({"image": folder})


def test_dicom_instance_number_gap_without_positions(tmp_path):
    folder = Path(write_series(tmp_path / "nopos", n_slices=5, skip=(2,)))
    import pydicom

    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    with pytest.raises(DataError, match=r"nopos: slice\(s\) missing: InstanceNumber\(s\) \[3\]"):
        check_dicom_series(folder)


@pytest.mark.parametrize(
    "z, message",
    [
        (42.5, r"1 position\(s\) repeat \(im00[34]\.dcm and im00[34]\.dcm at 42\.50 mm\)"),
        (46.0, r"expected evenly spaced"),
    ],
    ids=["repeated", "uneven"],
)
def test_dicom_slice_positions_repeated_or_uneven(tmp_path, z, message):
    import pydicom

    folder = Path(write_series(tmp_path / "positions", n_slices=5))
    ds = pydicom.dcmread(folder / "im003.dcm")  # the middle slice, at 45 mm
    ds.ImagePositionPatient = [-10.0, -20.0, z]
    ds.save_as(folder / "im003.dcm")
    with pytest.raises(DataError, match=message):
        check_dicom_series(folder)


def test_dicom_folder_mixing_two_series_names_both(tmp_path):
    write_series(tmp_path / "mixed", series_uid="1.2.3.4", n_slices=3)
    write_series(tmp_path / "mixed", series_uid="1.2.3.5", n_slices=2, first_name=10)
    with raises_data_error(r"mixed: expected one DICOM series.*1\.2\.3\.4: 3 file.*1\.2\.3\.5: 2 file"):
        _chain()({"image": str(tmp_path / "mixed")})


def test_dicom_slices_of_different_sizes(tmp_path):
    write_series(tmp_path / "sizes", n_slices=3, series_uid="1.2.3.4")
    shutil.copy(Path(write_series(tmp_path / "other", n_slices=4, rows=8, series_uid="1.2.3.4")) / "im001.dcm",
                tmp_path / "sizes" / "im099.dcm")  # fmt: skip
    with pytest.raises(DataError, match=r"sizes: expected every slice to have the same Rows x Columns.*8x7: 1"):
        check_dicom_series(tmp_path / "sizes")


def test_empty_folder_and_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    with raises_data_error(r"empty: expected a DICOM series, but found no DICOM image file \(it is empty"):
        _chain()({"image": str(tmp_path / "empty")})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"notes: .*no DICOM image file.*readme.txt"):
        check_dicom_series(tmp_path / "notes")


def test_dicom_files_beside_a_sidecar_are_still_one_series(tmp_path):
    folder = write_series(tmp_path / "withjson", n_slices=3)
    (Path(folder) / "series.json").write_text("{}")
    assert len(check_dicom_series(folder)) == 3


# ----------------------------------------------------------------------------------------------
# Volumes a 3D model cannot use
# ----------------------------------------------------------------------------------------------


def test_2d_image_is_not_a_volume(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(tmp_path / "slice.nii.gz"))
    with raises_data_error(r"slice.nii.gz: expected a 3D image, got an array of shape \(8, 8\)"):
        _chain()({"image": str(tmp_path / "slice.nii.gz")})


def test_single_slice_is_not_a_volume(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((8, 8, 1), np.float32), np.eye(4)), str(tmp_path / "one.nii.gz"))
    with raises_data_error(r"one.nii.gz: expected a 3D image"):
        _chain()({"image": str(tmp_path / "one.nii.gz")})


def test_4d_time_series_is_not_a_volume(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6, 3), np.float32), np.eye(4)), str(tmp_path / "bold.nii.gz"))
    with raises_data_error(r"bold.nii.gz: expected a 3D image, got an array of shape \(6, 6, 6, 3\)"):
        _chain()({"image": str(tmp_path / "bold.nii.gz")})


def test_volume_with_a_trailing_singleton_axis_is_a_volume(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6, 1), np.float32), np.eye(4)), str(tmp_path / "t1.nii.gz"))
    assert _chain()({"image": str(tmp_path / "t1.nii.gz")})["image"].shape == (1, *SIZE)


@pytest.mark.parametrize("affine", [np.zeros((4, 4)), np.diag([2.0, 2.0, 0.0, 1.0])], ids=["zero", "flat"])
def test_singular_affine_names_the_file(tmp_path, affine):
    image = nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4))
    image.set_qform(None, code=0)
    image.set_sform(affine, code=1)
    nib.save(image, str(tmp_path / "bad_affine.nii.gz"))
    with raises_data_error(r"bad_affine.nii.gz: the image's affine .* is not invertible"):
        _chain()({"image": str(tmp_path / "bad_affine.nii.gz")})


def test_the_2d_behaviour_is_unchanged_for_a_volume_without_spatial_dims(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6, 3), np.float32), np.eye(4)), str(tmp_path / "bold.nii.gz"))
    out = CheckedLoadImaged(keys="image", image_only=True)({"image": str(tmp_path / "bold.nii.gz")})
    assert out["image"].shape == (6, 6, 6, 3)
