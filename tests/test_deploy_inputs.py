"""The deployed app's input check: bad DICOM input is refused by name before anything runs or is written."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from mimmx.deploy.dicom_inputs import check_dicom_folder, modalities_for
from mimmx.deploy.dicom_samples import write_radiograph
from mimmx.errors import DataError

XRAY = modalities_for("xray")


@pytest.fixture
def radiograph(tmp_path):
    png = tmp_path / "image.png"
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)).save(png)
    return write_radiograph(png, tmp_path / "study" / "image.dcm")


def test_synthetic_radiograph_is_a_valid_dx_image(radiograph):
    (instance,) = check_dicom_folder(radiograph.parent, XRAY)
    ds = dcmread(radiograph)
    assert instance.modality == ds.Modality == "DX" and ds.pixel_array.shape == (32, 32)
    assert instance.sop_instance_uid == ds.SOPInstanceUID and instance.series_uid == ds.SeriesInstanceUID


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such folder"),
        ("empty", "holds no file"),
        ("not_dicom", "not a readable DICOM file"),
        ("truncated", "pixel data cannot be decoded"),
        ("sr_only", r"no CR/DX image series; the folder holds 1 x SR .*no pixel data"),
        ("ct_only", r"no CR/DX image series; the folder holds 1 x CT image"),
    ],
)
def test_bad_input_is_named(tmp_path, radiograph, case, message):
    folder = tmp_path / case
    if case != "missing":
        folder.mkdir()
    if case == "not_dicom":
        (folder / "notes.dcm").write_text("not DICOM")
    elif case == "truncated":
        data = radiograph.read_bytes()
        (folder / "cut.dcm").write_bytes(data[: len(data) - 500])
    elif case == "sr_only":
        shutil.copy(get_testdata_file("test-SR.dcm"), folder)
    elif case == "ct_only":
        shutil.copy(get_testdata_file("CT_small.dcm"), folder)
    with pytest.raises(DataError, match=message) as info:
        check_dicom_folder(folder, XRAY)
    assert str(folder) in str(info.value)


def test_a_truncated_file_beside_good_ones_still_fails(tmp_path, radiograph):
    data = radiograph.read_bytes()
    (radiograph.parent / "cut.dcm").write_bytes(data[: len(data) - 500])
    with pytest.raises(DataError, match="cut.dcm"):
        check_dicom_folder(radiograph.parent, XRAY)


def test_unknown_metadata_modality_is_named():
    with pytest.raises(DataError, match="'ultrasound'"):
        modalities_for("ultrasound")
