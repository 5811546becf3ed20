"""The CheXpert reader on a small table in the real format: policies, view filters, factors and errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mimmx.data.chexpert import read_chexpert
from mimmx.errors import ConfigError, DataError
from mimmx.factors import parse_factors

R = "CheXpert-v1.0-small/train"
TARGET = "Pleural Effusion"


def _row(patient, study, view, sex, age, fl, appa, effusion, devices=""):
    name = f"view{view}_{fl.lower()}.jpg"
    return {
        "Path": f"{R}/patient{patient:05d}/study{study}/{name}",
        "Sex": sex,
        "Age": str(age),
        "Frontal/Lateral": fl,
        "AP/PA": appa,
        TARGET: effusion,
        "Support Devices": devices,
        "No Finding": "" if effusion else "1.0",
    }


# line numbers in the file: header = 1, so ROWS[i] is on line i + 2
ROWS = [
    _row(1, 1, 1, "Female", 68, "Frontal", "AP", "1.0", "1.0"),  # 2 kept: label 1, sex 0, age 1
    _row(1, 1, 2, "Female", 68, "Lateral", "", "1.0"),  # 3 lateral (blank AP/PA)
    _row(1, 2, 1, "Female", 69, "Frontal", "AP", "-1.0"),  # 4 uncertain
    _row(2, 1, 1, "Male", 45, "Frontal", "PA", ""),  # 5 blank target
    _row(3, 1, 1, "Unknown", 70, "Frontal", "AP", "0.0"),  # 6 sex unmapped
    _row(4, 1, 1, "Male", 55, "Frontal", "AP", "1.0"),  # 7 age in the gap
    _row(5, 1, 1, "Female", 30, "Frontal", "LL", "0.0"),  # 8 other projection
    _row(5, 2, 1, "Female", 31, "Frontal", "PA", "-1.0"),  # 9 uncertain
    _row(6, 1, 1, "Male", 80, "Frontal", "AP", "1.0", "0.0"),  # 10 kept: label 1, sex 1, age 1
]


@pytest.fixture
def factors():
    return parse_factors(
        [
            {"name": "sex", "column": "Sex", "classes": ["Female", "Male"]},
            {"name": "age", "column": "Age", "bins": [[None, 50], [60, None]]},
        ]
    )


@pytest.fixture
def csv_path(tmp_path, write_cohort):
    return write_cohort(tmp_path / "CheXpert-v1.0-small" / "train.csv", ROWS)


def _by_path(items):
    return {item["image"]: item for item in items}


def test_default_policies_keep_and_drop(csv_path, factors, tmp_path):
    items, report = read_chexpert(csv_path, TARGET, factors)
    assert [i["image"] for i in items] == [ROWS[0]["Path"], ROWS[3]["Path"], ROWS[8]["Path"]]
    assert items[0] == {"image": ROWS[0]["Path"], "label": 1, "patient_id": "patient00001", "sex": 0, "age": 1}
    assert items[1] == {"image": ROWS[3]["Path"], "label": 0, "patient_id": "patient00002", "sex": 1, "age": 0}
    assert items[2]["patient_id"] == "patient00006" and items[2]["sex"] == 1
    assert report["rows_read"] == 9 and report["rows_kept"] == 3
    assert report["dropped"] == {
        "lateral": 1,
        "view": 1,
        "uncertain_target": 2,
        "blank_target": 0,
        "factor:sex": 1,
        "factor:age": 1,
    }
    assert sum(report["dropped"].values()) == report["rows_read"] - report["rows_kept"]
    assert report["unmapped_values"] == {"sex": {"Unknown": 1}, "age": {"55": 1}}
    assert report["label_counts"] == {"0": 1, "1": 2}
    assert report["image_root"] == str(tmp_path.resolve())


@pytest.mark.parametrize("policy, label", [("zeros", 0), ("ones", 1)])
def test_uncertain_policy_maps_minus_one(csv_path, factors, policy, label):
    items, report = read_chexpert(csv_path, TARGET, factors, uncertain=policy)
    by_path = _by_path(items)
    assert by_path[ROWS[2]["Path"]]["label"] == label
    assert by_path[ROWS[7]["Path"]]["label"] == label
    assert report["rows_kept"] == 5 and report["dropped"]["uncertain_target"] == 0


def test_blank_ignore_drops_unmentioned(csv_path, factors):
    items, report = read_chexpert(csv_path, TARGET, factors, blank="ignore")
    assert ROWS[3]["Path"] not in _by_path(items)
    assert report["dropped"]["blank_target"] == 1


def test_view_filters(csv_path, factors):
    items, _ = read_chexpert(csv_path, TARGET, factors, frontal_only=False, views=None)
    paths = _by_path(items)
    assert ROWS[1]["Path"] in paths and ROWS[6]["Path"] in paths  # lateral and "LL" kept
    items, report = read_chexpert(csv_path, TARGET, factors, frontal_only=False, views=("AP", "PA"))
    assert ROWS[1]["Path"] not in _by_path(items)  # lateral has a blank AP/PA
    assert report["dropped"]["view"] == 2 and report["dropped"]["lateral"] == 0
    items, _ = read_chexpert(csv_path, TARGET, factors, views=["PA"])
    assert [i["image"] for i in items] == [ROWS[3]["Path"]]


def test_columns_are_looked_up_by_name(tmp_path, write_cohort, factors, csv_path, chexpert_header):
    header = chexpert_header
    random.Random(1).shuffle(header)
    shuffled = write_cohort(tmp_path / "CheXpert-v1.0-small" / "shuffled.csv", ROWS, header=header, images=False)
    assert read_chexpert(shuffled, TARGET, factors)[0] == read_chexpert(csv_path, TARGET, factors)[0]


def test_image_root_default_and_explicit(tmp_path, write_cohort, factors):
    rows = [dict(r, Path=r["Path"].replace(R, "images")) for r in ROWS]
    csv_path = write_cohort(tmp_path / "cohort" / "table.csv", rows, images=False)
    _, report = read_chexpert(csv_path, TARGET, factors, check_files=False)
    assert report["image_root"] == str((tmp_path / "cohort").resolve())
    _, report = read_chexpert(csv_path, TARGET, factors, check_files=False, image_root=tmp_path)
    assert report["image_root"] == str(tmp_path.resolve())


def test_missing_column_names_file_and_column(tmp_path, write_cohort, factors, chexpert_header):
    header = [c for c in chexpert_header if c != "Sex"]
    bad = write_cohort(tmp_path / "CheXpert-v1.0-small" / "nosex.csv", ROWS, header=header, images=False)
    with pytest.raises(DataError) as e:
        read_chexpert(bad, TARGET, factors)
    assert str(bad) in str(e.value) and "'Sex'" in str(e.value) and "Pleural Effusion" in str(e.value)


def test_missing_images_are_named_with_lines(csv_path, factors, tmp_path):
    (tmp_path / ROWS[3]["Path"]).unlink()
    (tmp_path / ROWS[8]["Path"]).unlink()
    with pytest.raises(DataError) as e:
        read_chexpert(csv_path, TARGET, factors)
    msg = str(e.value)
    assert str(csv_path) in msg and "2 image(s)" in msg
    assert f"line 5: {ROWS[3]['Path']}" in msg and f"line 10: {ROWS[8]['Path']}" in msg
    items, _ = read_chexpert(csv_path, TARGET, factors, check_files=False)
    assert len(items) == 3


def test_bad_policy_names_argument(csv_path, factors):
    with pytest.raises(ConfigError, match=r"uncertain: expected one of \['ignore', 'zeros', 'ones'\]"):
        read_chexpert(csv_path, TARGET, factors, uncertain="drop")
    with pytest.raises(ConfigError, match="blank"):
        read_chexpert(csv_path, TARGET, factors, blank="ones")


def test_path_without_patient_id(tmp_path, write_cohort, factors):
    rows = [ROWS[0], dict(ROWS[8], Path="CheXpert-v1.0-small/train/somebody/study1/view1_frontal.jpg")]
    bad = write_cohort(tmp_path / "CheXpert-v1.0-small" / "train.csv", rows)
    with pytest.raises(DataError, match=r"train\.csv, line 3: no patient id in path"):
        read_chexpert(bad, TARGET, factors)


def test_invalid_target_value_names_line(tmp_path, write_cohort, factors):
    bad = write_cohort(tmp_path / "CheXpert-v1.0-small" / "train.csv", [ROWS[0], dict(ROWS[8], **{TARGET: "yes"})])
    with pytest.raises(DataError, match=r"line 3: target 'Pleural Effusion' is 'yes'"):
        read_chexpert(bad, TARGET, factors)


def test_empty_and_missing_files(tmp_path, factors):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_chexpert(empty, TARGET, factors)
    with pytest.raises(DataError, match="not found"):
        read_chexpert(tmp_path / "absent.csv", TARGET, factors)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match=str(binary.name)):
        read_chexpert(binary, TARGET, factors)


def test_support_devices_with_blank_class(csv_path):
    factors = parse_factors([{"name": "devices", "column": "Support Devices", "classes": [[None, 0, -1], [1]]}])
    items, _ = read_chexpert(csv_path, TARGET, factors)
    assert {i["image"]: i["devices"] for i in items} == {
        ROWS[0]["Path"]: 1,
        ROWS[3]["Path"]: 0,
        ROWS[5]["Path"]: 0,
        ROWS[8]["Path"]: 0,
        ROWS[4]["Path"]: 0,
    }
    assert Path(items[0]["image"]).parts[0] == "CheXpert-v1.0-small"
