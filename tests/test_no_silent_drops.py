"""No silent substitutions or drops: unknown values, implausible ages, empty tables and mistyped folders are named."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from test_cohort import FACTORS, TARGET_CLASSES, _row, write_table

from mimmx.config import as_bool, as_optional, coerce_cli_value
from mimmx.data import prepare_datalist, read_chexpert, read_cohort
from mimmx.data.datalist import write_datalist
from mimmx.errors import ConfigError, DataError
from mimmx.factors import parse_factors


def test_unrecognised_factor_values_above_the_limit_name_the_column_and_values(tmp_path, caplog):
    rows = [_row(f"{i:04d}", str(i % 2), "F" if i % 3 else "M", "70", "site_a", "3T" if i < 14 else "1.5")
            for i in range(100)]  # fmt: skip
    table = write_table(tmp_path / "participants.csv", rows, images=False)
    with pytest.raises(DataError) as info:
        read_cohort(table, "atrophy", parse_factors(FACTORS), classes=TARGET_CLASSES, check_files=False)
    message = str(info.value)
    assert "'field_strength'" in message and "'3T' (14)" in message and "14 of 100 rows" in message
    assert "[[1.5], [3.0]]" in message
    # the limit is a reader option: raised, the rows are dropped, counted in one warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mimmx.data"):
        items, report = read_cohort(
            table, "atrophy", parse_factors(FACTORS), classes=TARGET_CLASSES, check_files=False, max_unrecognised=0.2
        )
    assert len(items) == 86 and report["dropped"]["factor:field"] == 14
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "kept 86 of 100 rows" in warnings[0] and "factor:field 14" in warnings[0]


def test_numbers_between_bins_are_expected_drops_not_unrecognised(tmp_path):
    rows = [_row(f"{i:04d}", str(i % 2), "F" if i % 3 else "M", "55" if i < 30 else "70", "site_a", "1.5")
            for i in range(100)]  # fmt: skip
    table = write_table(tmp_path / "participants.csv", rows, images=False)
    items, report = read_cohort(table, "atrophy", parse_factors(FACTORS), classes=TARGET_CLASSES, check_files=False)
    assert report["dropped"]["factor:age"] == 30 and len(items) == 70


def test_implausible_ages_are_dropped_and_counted(tmp_path, write_cohort, chexpert_header, caplog):
    ages = ["0", "35", "70", "150", "45", "80"]
    rows = [
        {"Path": f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg", "Sex": "Male", "Age": age,
         "Frontal/Lateral": "Frontal", "AP/PA": "AP", "Pleural Effusion": "1.0"}
        for i, age in enumerate(ages, start=1)
    ]  # fmt: skip
    csv_path = write_cohort(tmp_path / "CheXpert-v1.0-small" / "train.csv", rows)
    age = {"name": "age", "column": "Age", "bins": [[None, 50], [60, None]], "valid_range": [1, 120]}
    with caplog.at_level(logging.WARNING, logger="mimmx.data"):
        items, report = read_chexpert(csv_path, factors=parse_factors([age]))
    assert sorted(int(i["patient_id"][-1]) for i in items) == [2, 3, 5, 6]
    assert report["dropped"]["implausible:age"] == 2
    assert any("implausible:age 2" in r.getMessage() for r in caplog.records)


def test_a_header_only_table_is_a_clear_error(tmp_path, write_cohort):
    csv_path = write_cohort(tmp_path / "CheXpert-v1.0-small" / "train.csv", [])
    with pytest.raises(DataError, match="has a header but no data rows"):
        read_chexpert(csv_path, factors=parse_factors([{"name": "sex", "column": "Sex", "classes": ["F", "M"]}]))


def test_reader_booleans_from_the_command_line_are_read_as_meant(tmp_path, write_cohort):
    rows = [{"Path": "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Sex": "Male", "Age": "70",
             "Frontal/Lateral": "Frontal", "AP/PA": "AP", "Pleural Effusion": "1.0"}]  # fmt: skip
    csv_path = write_cohort(tmp_path / "CheXpert-v1.0-small" / "train.csv", rows, images=False)
    with pytest.raises(DataError, match="not found"):
        read_chexpert(csv_path, check_files="true")
    items, _ = read_chexpert(csv_path, check_files="false")  # the string 'false' is false, not truthy
    assert len(items) == 1
    with pytest.raises(ConfigError, match="cohort#check_files: expected true or false, got 'nope'"):
        read_chexpert(csv_path, check_files="nope")


def test_config_value_coercion():
    assert as_bool("False", "x") is False and as_bool("yes", "x") is True and as_bool(0, "x") is False
    assert as_optional("null") is None and as_optional("None") is None and as_optional("a") == "a"
    assert coerce_cli_value("false") is False and coerce_cli_value("null") is None and coerce_cli_value("0") == "0"
    with pytest.raises(ConfigError, match="dfr: expected true or false"):
        as_bool("maybe", "dfr")


COHORT = {"format": "chexpert", "csv": "CheXpert-v1.0-small/train.csv", "image_root": None,
          "synthetic": {"generator": "cxr", "num_patients": 300, "image_size": 16}}  # fmt: skip
TARGET = {"column": "Pleural Effusion"}
SEX = [{"name": "sex", "column": "Sex", "classes": ["Female", "Male"]}]
SPLITS = {"sizes": {"train": 40, "val": 10, "test_id": 10, "test_inverted": 10, "test_balanced": 10}, "rho": 0.7}


def test_a_mistyped_dataset_dir_is_an_error_naming_it_and_nothing_is_generated(tmp_path):
    own, typo = tmp_path / "bundle" / "data", tmp_path / "dat"
    with pytest.raises(DataError) as info:
        prepare_datalist(typo, "datalist.json", COHORT, TARGET, SEX, SPLITS, default_dataset_dir=own)
    assert f"dataset_dir {str(typo)!r} does not exist" in str(info.value)
    assert not typo.exists() and not own.exists()
    typo.mkdir()
    with pytest.raises(DataError, match="exists but has no such table"):
        prepare_datalist(typo, "datalist.json", COHORT, TARGET, SEX, SPLITS, default_dataset_dir=own)
    assert list(typo.iterdir()) == []


def test_synthetic_data_goes_to_the_bundles_own_folder_or_where_asked_by_name(tmp_path):
    own = tmp_path / "bundle" / "data"
    out = prepare_datalist(own, "datalist.json", COHORT, TARGET, SEX, SPLITS, default_dataset_dir=own)
    assert Path(out).is_file()
    elsewhere = tmp_path / "elsewhere"
    asked = {**COHORT, "synthetic": {**COHORT["synthetic"], "into_dataset_dir": "true"}}
    out = prepare_datalist(elsewhere, "datalist.json", asked, TARGET, SEX, SPLITS, default_dataset_dir=own)
    assert Path(out).is_file()
    # --cohort#synthetic null arrives as the string 'null': it means no synthetic data, so a missing table is named
    with pytest.raises(DataError, match="cohort table not found"):
        prepare_datalist(tmp_path / "x", "d.json", {**COHORT, "synthetic": "null"}, TARGET, SEX, SPLITS)


def test_the_data_list_is_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        write_datalist(tmp_path / "datalist.json", {"train": [{"image": "a.png"}]}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "datalist.json").stat().st_mode) == 0o644
