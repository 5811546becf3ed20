"""What the bundles accept: a folder as a hospital sends it is scored where it can be and refused by name elsewhere."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from dicom_files import rotation_affine, write_nifti, write_radiograph_dicom
from monai.bundle import ConfigParser
from PIL import Image
from pydicom.data import get_testdata_file

from mimmx.errors import DataError, InputRejected
from mimmx.inference import ScreenedDataset, error_reason, image_items

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
PYDICOM_REFUSED = {
    "CT_small.dcm": "Modality CT",
    "MR_small.dcm": "Modality MR",
    "MR_truncated.dcm": "Modality MR",
    "liver_1frame.dcm": "Modality SEG",
}


def bundle_preprocessing(name: str, **overrides):
    """The inference preprocessing exactly as the bundle's inference.yaml builds it."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / f"mimmx_{name}" / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(BUNDLES / f"mimmx_{name}"), **overrides})
    return parser.get_parsed_content("preprocessing")


def mixed_xray_folder(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Good radiographs in five encodings, and pydicom's CT, MR, SEG and truncated files; (good, refused: reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gray = (rng.random((48, 40)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(gray).convert("RGB").save(folder / "rgb.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    Image.fromarray(gray).save(folder / "film.jpg")
    write_radiograph_dicom(folder / "mono1.dcm", gray.astype(np.uint16) * 16, photometric="MONOCHROME1")
    refused = {}
    for name, reason in PYDICOM_REFUSED.items():
        (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
        refused[name] = reason
    (folder / "truncated.dcm").write_bytes((folder / "mono1.dcm").read_bytes()[:700])
    refused["truncated.dcm"] = "cannot read image"
    good = ["film.jpg", "gray.png", "gray16.png", "mono1.dcm", "rgb.png"]
    return good, refused


def test_mixed_xray_folder_keeps_the_radiographs_and_names_every_other_file(tmp_path):
    good, refused = mixed_xray_folder(tmp_path / "in")
    errors = tmp_path / "out" / "errors.csv"
    data = ScreenedDataset(image_items(str(tmp_path / "in" / "*")), bundle_preprocessing("cxr"), errors)
    kept = sorted(Path(item["image"].meta["filename_or_obj"]).name for item in data)
    assert kept == good
    assert all(tuple(item["image"].shape) == (1, 64, 64) for item in data), "one channel, RGB included"
    with open(errors) as f:
        rows = {Path(r["image"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(rows) == set(refused)
    for name, reason in refused.items():
        assert reason in rows[name], (name, rows[name])


def test_monochrome1_is_shown_bright_where_the_stored_value_is_low(tmp_path):
    pixels = np.zeros((32, 32), dtype=np.uint16)
    pixels[:, :16] = 100  # MONOCHROME1: low value = white
    pixels[:, 16:] = 4000
    path = write_radiograph_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1")
    image = bundle_preprocessing("cxr", image_size=[32, 32])({"image": str(path)})["image"][0]
    # the loader gives (x, y): the stored columns 0-15 are the first rows here
    assert float(image[:16].mean()) > float(image[16:].mean())


def test_a_secondary_capture_of_another_modality_is_refused(tmp_path):
    with pytest.raises(Exception) as info:
        bundle_preprocessing("cxr")({"image": get_testdata_file("SC_rgb_small_odd.dcm")})
    assert "Modality OT (Secondary Capture Image Storage)" in error_reason(info.value)


def test_nothing_scorable_is_an_error_and_the_errors_are_listed(tmp_path):
    for name in PYDICOM_REFUSED:
        (tmp_path / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    errors = tmp_path / "errors.csv"
    with pytest.raises(DataError, match=r"none of the 4 input\(s\) could be scored"):
        ScreenedDataset(image_items(str(tmp_path / "*.dcm")), bundle_preprocessing("cxr"), errors)
    assert len(errors.read_text().strip().splitlines()) == 1 + 4


def mixed_mri_folder(folder: Path, good_volumes: list[Path]) -> dict[str, str]:
    """nibabel's 4D and 2D files, an oblique and a NaN volume beside good ones; returns refused name -> reason."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    data = Path(nib.__file__).parent / "tests" / "data"
    refused = {
        "example4d.nii.gz": "expected a 3D image",
        "standard.nii.gz": "field of view",
        "resampled_anat_moved.nii": "NaN",
        "functional.nii": "expected a 3D image",
    }
    for name in refused:
        (folder / name).write_bytes((data / name).read_bytes())
    volume = np.random.default_rng(0).random((32, 32, 32))
    write_nifti(folder / "oblique.nii.gz", volume, rotation_affine(45.0))
    refused["oblique.nii.gz"] = "degrees off"
    nan = volume.copy()
    nan[3, 4, 5] = np.nan
    write_nifti(folder / "nan.nii.gz", nan)
    refused["nan.nii.gz"] = "NaN"
    write_nifti(folder / "slice.nii.gz", volume[:, :, :1])
    refused["slice.nii.gz"] = "expected a 3D image"
    for path in good_volumes:
        (folder / path.name).write_bytes(path.read_bytes())
    return refused


def test_mixed_mri_folder_keeps_brain_volumes_and_names_every_other_file(tmp_path):
    good = [
        write_nifti(tmp_path / "src" / f"sub{i}_T1w.nii.gz", np.random.default_rng(i).random((32, 32, 32)))
        for i in range(2)
    ]
    refused = mixed_mri_folder(tmp_path / "in", good)
    errors = tmp_path / "errors.csv"
    data = ScreenedDataset(image_items(str(tmp_path / "in" / "*")), bundle_preprocessing("mri"), errors)
    assert sorted(Path(item["image"].meta["filename_or_obj"]).name for item in data) == [p.name for p in good]
    with open(errors) as f:
        rows = {Path(r["image"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(rows) == set(refused)
    for name, reason in refused.items():
        assert reason in rows[name], (name, rows[name])


def test_mr_dicom_passes_the_modality_check_of_the_mri_bundle():
    from mimmx.data.input_checks import check_dicom_header

    assert check_dicom_header(get_testdata_file("MR_small.dcm"), ["MR"]) == "MONOCHROME2"
    with pytest.raises(InputRejected, match="Modality CT"):
        check_dicom_header(get_testdata_file("CT_small.dcm"), ["MR"])


def test_a_4d_volume_in_a_training_cohort_is_named_and_the_process_exits_cleanly(tmp_path):
    """MONAI's thread-pooled cache filling used to abort the process (status 134) after such an error."""
    import subprocess
    import sys

    paths = []
    for i, shape in enumerate([(16, 16, 16), (16, 16, 16, 2), (16, 16, 16)]):
        volume = np.random.default_rng(i).random(shape)
        paths.append(str(write_nifti(tmp_path / f"v{i}.nii.gz", volume, np.diag([8.0, 8.0, 8.0, 1.0]))))
    code = f"""
from monai.bundle import ConfigParser
p = ConfigParser()
p.read_config({str(BUNDLES / "mimmx_mri" / "configs" / "train.yaml")!r})
p.update({{"pixdim": [8.0, 8.0, 8.0], "spatial_size": [16, 16, 16]}})
p["validate#dataset#data"] = {[{"image": x} for x in paths]!r}
p.get_parsed_content("validate#dataset")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"{paths[1]}: expected a 3D image" in proc.stderr and "DataError" in proc.stderr
