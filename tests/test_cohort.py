"""The cohort-table reader (UK Biobank/NAKO style) on a small table, and prepare_datalist(format "cohort")."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from mimmx.data import SPLIT_NAMES, datalist_base_dir, prepare_datalist, read_cohort, read_datalist
from mimmx.errors import ConfigError, DataError
from mimmx.factors import parse_factors
from mimmx.transforms import CheckedLoadImaged

HEADER = ["subject_id", "image", "atrophy", "sex", "age", "site", "field_strength", "scanner_note"]
FACTORS = [
    {"name": "sex", "classes": ["F", "M"]},
    {"name": "age", "bins": [[None, 50], [60, None]]},
    {"name": "site", "classes": ["site_a", "site_b"]},
    {"name": "field", "column": "field_strength", "classes": [1.5, 3.0]},
]
TARGET_CLASSES = [[0, "no"], [1, "yes"]]


def _nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.diag([4.0, 4.0, 4.0, 1.0])), str(path))


def write_table(csv_path: Path, rows: list[dict], header=HEADER, images: bool = True) -> Path:
    """A cohort CSV; each row's image is a tiny NIfTI (or, for a path ending in '/', a folder) beside it."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in header} for row in rows)
    if images:
        for row in rows:
            target = csv_path.parent / row["image"]
            target.mkdir(parents=True, exist_ok=True) if row["image"].endswith("/") else _nifti(target)
    return csv_path


def _row(subject, atrophy, sex, age, site, field, image=None):
    image = image or f"raw/sub-{subject}/anat/sub-{subject}_T1w.nii.gz"
    return {"subject_id": subject, "image": image, "atrophy": atrophy, "sex": sex, "age": age, "site": site,
            "field_strength": field}  # fmt: skip


# line numbers in the file: header = 1, so ROWS[i] is on line i + 2
ROWS = [
    _row("1001", "1", "F", "67", "site_a", "3.0"),  # 2 kept: label 1, sex 0, age 1, site 0, field 1
    _row("1002", "no", "M", "44", "site_b", "1.5"),  # 3 kept: label 0 from "no"
    _row("1003", "0", "M", "55", "site_a", "1.5"),  # 4 age in the gap
    _row("1004", "1", "", "70", "site_b", "3.0"),  # 5 blank sex
    _row("1005", "maybe", "F", "30", "site_a", "3.0"),  # 6 target unmapped
    _row("1006", "yes", "M", "61", "site_b", "3", image="dicom/sub-1006/t1_series/"),  # 7 kept, DICOM folder
    _row("1001", "1", "F", "68", "site_a", "3.0", image="raw/sub-1001/anat/sub-1001_ses-2_T1w.nii.gz"),  # 8 repeat
    _row("1007", "0", "F", "45", "site_c", "1.5"),  # 9 unknown site
]


@pytest.fixture
def factors():
    return parse_factors(FACTORS)


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "cohort" / "participants.csv", ROWS)


def test_items_labels_factors_and_report(table, factors):
    items, report = read_cohort(table, target="atrophy", factors=factors, classes=TARGET_CLASSES)
    assert [(i["patient_id"], i["label"]) for i in items] == [("1001", 1), ("1002", 0), ("1006", 1), ("1001", 1)]
    assert items[0] == {
        "image": "raw/sub-1001/anat/sub-1001_T1w.nii.gz",
        "label": 1,
        "patient_id": "1001",
        "sex": 0,
        "age": 1,
        "site": 0,
        "field": 1,
    }
    assert items[2]["field"] == 1 and items[2]["image"] == "dicom/sub-1006/t1_series/"  # "3" is 3.0
    assert report["rows_read"] == 8 and report["rows_kept"] == 4
    assert report["dropped"] == {"target": 1, "factor:sex": 1, "factor:age": 1, "factor:site": 1, "factor:field": 0}
    assert sum(report["dropped"].values()) == report["rows_read"] - report["rows_kept"]
    assert report["unmapped_values"]["target"] == {"maybe": 1}
    assert report["unmapped_values"]["sex"] == {"<blank>": 1}
    assert report["unmapped_values"]["age"] == {"55": 1}
    assert report["unmapped_values"]["site"] == {"site_c": 1}
    assert report["label_counts"] == {"0": 1, "1": 3}
    assert report["n_patients"] == 3 and report["n_dicom_folders"] == 1
    assert report["image_root"] == str(table.parent.resolve())


def test_target_by_bins_and_default_coding(tmp_path, factors):
    rows = [_row(str(i), score, "F", "40", "site_a", "3.0") for i, score in enumerate(["0.2", "0.9", "0.5", ""])]
    csv_path = write_table(tmp_path / "c.csv", rows)
    items, report = read_cohort(csv_path, "atrophy", factors, bins=[[None, 0.3], [0.7, None]])
    assert [i["label"] for i in items] == [0, 1]
    assert report["unmapped_values"]["target"] == {"0.5": 1, "<blank>": 1}
    rows = [_row(str(i), value, "F", "40", "site_a", "3.0") for i, value in enumerate(["0", "1", "1.0", "2"])]
    items, report = read_cohort(write_table(tmp_path / "d.csv", rows), "atrophy", factors)  # 0/1 coding
    assert [i["label"] for i in items] == [0, 1, 1] and report["dropped"]["target"] == 1


def test_target_must_have_two_classes(table, factors):
    with pytest.raises(ConfigError, match="target: expected two classes"):
        read_cohort(table, "atrophy", factors, classes=[0, 1, 2])
    with pytest.raises(ConfigError, match="target: give exactly one of 'classes' or 'bins'"):
        read_cohort(table, "atrophy", factors, classes=[0, 1], bins=[[None, 0], [1, None]])


def test_missing_column_names_file_missing_and_present(tmp_path, factors):
    header = [c for c in HEADER if c != "field_strength"]
    csv_path = write_table(tmp_path / "t.csv", ROWS[:2], header=header)
    with pytest.raises(DataError, match=r"t\.csv: missing column\(s\) \['field_strength'\]; the file has columns"):
        read_cohort(csv_path, "atrophy", factors)
    with pytest.raises(DataError, match=r"missing column\(s\) \['eid'\]"):
        read_cohort(csv_path, "atrophy", [], subject_column="eid")


def test_missing_images_are_named_with_their_lines(table, factors):
    (table.parent / ROWS[1]["image"]).unlink()
    (table.parent / ROWS[5]["image"]).rmdir()
    with pytest.raises(DataError) as info:
        read_cohort(table, "atrophy", factors, classes=TARGET_CLASSES)
    message = str(info.value)
    assert str(table) in message and "2 image(s) not found" in message
    assert "line 3: raw/sub-1002" in message and "line 7: dicom/sub-1006/t1_series/" in message
    items, _ = read_cohort(table, "atrophy", factors, classes=TARGET_CLASSES, check_files=False)
    assert len(items) == 4


def test_image_root_and_custom_columns(tmp_path, factors):
    rows = [{**r, "eid": r["subject_id"], "t1": r["image"]} for r in ROWS[:2]]
    header = ["eid", "t1", "atrophy", "sex", "age", "site", "field_strength"]
    csv_path = write_table(tmp_path / "tables" / "ukb.csv", rows, header=header, images=False)
    for r in rows:
        _nifti(tmp_path / "bulk" / r["t1"])
    kwargs = {"subject_column": "eid", "image_column": "t1", "classes": TARGET_CLASSES}
    with pytest.raises(DataError, match="not found under image root"):
        read_cohort(csv_path, "atrophy", factors, **kwargs)
    items, report = read_cohort(csv_path, "atrophy", factors, image_root=tmp_path / "bulk", **kwargs)
    assert len(items) == 2 and report["image_root"] == str((tmp_path / "bulk").resolve())


def test_empty_file_blank_cells_and_short_rows(tmp_path, factors):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the cohort table is empty"):
        read_cohort(tmp_path / "empty.csv", "atrophy", factors)
    with pytest.raises(DataError, match=r"absent\.csv: cohort table not found"):
        read_cohort(tmp_path / "absent.csv", "atrophy", factors)
    csv_path = write_table(tmp_path / "blank.csv", [ROWS[0], {**ROWS[1], "subject_id": " "}])
    with pytest.raises(DataError, match=r"blank\.csv, line 3: the 'subject_id' cell is blank"):
        read_cohort(csv_path, "atrophy", factors, classes=TARGET_CLASSES)
    csv_path = write_table(tmp_path / "short.csv", [ROWS[0]])
    with open(csv_path, "a") as f:
        f.write("1009,raw/sub-1001/anat/sub-1001_T1w.nii.gz,1\n")
    with pytest.raises(DataError, match=r"short\.csv, line 3: the row has 3 cells"):
        read_cohort(csv_path, "atrophy", factors)


# ----------------------------------------------------------------------------------------------
# prepare_datalist end to end
# ----------------------------------------------------------------------------------------------

COHORT = {"format": "cohort", "csv": "ukb/participants.csv"}
TARGET = {"column": "atrophy", "classes": TARGET_CLASSES, "class_names": ["healthy", "atrophy"]}
SPLITS = {
    "sizes": {"train": 32, "val": 8, "test_id": 8, "test_inverted": 8, "test_balanced": 8},
    "rho": 0.8,
    "prevalence": 0.5,
}


@pytest.fixture
def dataset(tmp_path):
    """240 subjects, some with a repeat scan, every bucket of (atrophy, sex, age) populated; a few ages in the gap."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(240):
        subject = f"{5000 + s}"
        common = {
            "atrophy": rng.choice(["yes", "no"]),
            "sex": rng.choice(["F", "M"]),
            "age": str(rng.choice([rng.integers(40, 51), rng.integers(60, 80), 55], p=[0.45, 0.45, 0.1])),
            "site": rng.choice(["site_a", "site_b"]),
            "field_strength": "3.0",
        }
        for session in range(1, 3 if s % 10 == 0 else 2):
            image = f"sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1w.nii.gz"
            rows.append({"subject_id": subject, "image": image, **common})
    write_table(tmp_path / "data" / "ukb" / "participants.csv", rows)
    return tmp_path / "data"


def test_prepare_datalist_with_the_cohort_format(dataset, caplog):
    factors = FACTORS[:2]
    with caplog.at_level(logging.WARNING, logger="mimmx.data"):
        path = prepare_datalist(dataset, "datalist.json", COHORT, TARGET, factors, SPLITS, seed=0)
    assert not [r for r in caplog.records if "also names a path" in r.getMessage()]
    meta = read_datalist(path)["metadata"]
    assert meta["cohort"]["format"] == "cohort"
    assert meta["reader_report"]["dropped"]["factor:age"] > 0  # age 55 is in the gap
    assert [f["class_names"] for f in meta["factors"]] == [["F", "M"], ["<=50", ">=60"]]
    base = datalist_base_dir(path)
    assert base == str((dataset / "ukb").resolve())
    subjects = {}
    for name in SPLIT_NAMES:
        items = load_decathlon_datalist(path, is_segmentation=False, data_list_key=name, base_dir=base)
        assert len(items) == SPLITS["sizes"][name]
        for item in items:
            assert os.path.isabs(item["image"]) and Path(item["image"]).is_file()
            assert item["label"] in (0, 1) and {item["sex"], item["age"]} <= {0, 1}
            assert subjects.setdefault(item["patient_id"], name) == name  # a subject stays in one split
    loaded = CheckedLoadImaged(keys="image", image_only=True, spatial_dims=3)(items[0])
    assert tuple(loaded["image"].shape) == (4, 4, 4)
    # the same inputs reuse the file; a changed target coding rebuilds it
    mtime = os.stat(path).st_mtime_ns
    assert prepare_datalist(dataset, "datalist.json", COHORT, TARGET, factors, SPLITS, seed=0) == path
    assert os.stat(path).st_mtime_ns == mtime


def test_prepare_datalist_rejects_options_the_reader_does_not_take(dataset):
    with pytest.raises(ConfigError, match=r"option\(s\) \['uncertain'\] are not understood by the 'cohort' reader"):
        prepare_datalist(dataset, "d.json", COHORT, {**TARGET, "uncertain": "ignore"}, FACTORS[:1], SPLITS)
    cohort = {**COHORT, "subject_column": "eid"}
    with pytest.raises(DataError, match=r"missing column\(s\) \['eid'\]"):
        prepare_datalist(dataset, "d.json", cohort, TARGET, FACTORS[:1], SPLITS)
