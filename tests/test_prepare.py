"""prepare_datalist end to end: tiny CheXpert-format table + PNGs -> data list MONAI can load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from mimmx.data import SPLIT_NAMES, datalist_base_dir, prepare_datalist, read_datalist, write_datalist
from mimmx.data import prepare as prepare_module
from mimmx.data.prepare import synthetic_generator
from mimmx.data.synthetic_cxr import generate_cxr_cohort
from mimmx.data.synthetic_mri import generate_mri_cohort
from mimmx.errors import ConfigError, DataError, SplitError

COHORT = {"format": "chexpert", "csv": "CheXpert-v1.0-small/train.csv", "image_root": None, "synthetic": None}
TARGET = {"column": "Pleural Effusion", "uncertain": "ignore", "blank": "zeros"}
FACTORS = [
    {"name": "sex", "column": "Sex", "classes": ["Female", "Male"]},
    {"name": "age", "column": "Age", "bins": [[None, 50], [60, None]]},
]
SPLITS = {
    "sizes": {"train": 40, "val": 12, "test_id": 12, "test_inverted": 12, "test_balanced": 16},
    "rho": 0.8,
    "prevalence": 0.5,
}


def cohort_rows(n_patients=400, seed=0):
    """Patients with one or two frontal studies, a lateral view now and then, a few uncertain labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(1, n_patients + 1):
        sex, age = rng.choice(["Female", "Male"]), int(rng.choice([35, 70]))
        for study in range(1, int(rng.integers(1, 3)) + 1):
            base = f"CheXpert-v1.0-small/train/patient{p:05d}/study{study}"
            label = rng.choice(["1.0", "0.0", "", "-1.0"], p=[0.5, 0.3, 0.15, 0.05])
            common = {"Sex": sex, "Age": str(age), "Pleural Effusion": label}
            rows.append({"Path": f"{base}/view1_frontal.png", "Frontal/Lateral": "Frontal", "AP/PA": "AP", **common})
            if rng.random() < 0.1:
                rows.append({"Path": f"{base}/view2_lateral.png", "Frontal/Lateral": "Lateral", **common})
    return rows


@pytest.fixture
def dataset(tmp_path, write_cohort):
    write_cohort(tmp_path / "data" / "CheXpert-v1.0-small" / "train.csv", cohort_rows())
    return tmp_path / "data"


def _prepare(dataset_dir, out="datalist.json", **overrides):
    args = {"cohort": COHORT, "target": TARGET, "factors": FACTORS, "splits": SPLITS, "seed": 0, **overrides}
    return prepare_datalist(dataset_dir, out, **args)


def test_end_to_end_loads_with_monai(dataset):
    path = _prepare(dataset)
    assert path == str(dataset / "datalist.json")
    content = read_datalist(path)
    meta = content["metadata"]
    assert meta["image_root"] == str(dataset.resolve())
    assert [f["key"] for f in meta["factors"]] == ["sex", "age"]
    assert meta["factors"][1]["class_names"] == ["<=50", ">=60"]
    assert meta["reader_report"]["dropped"]["lateral"] > 0
    assert meta["split_report"]["splits"]["train"]["n"] == 40
    base = datalist_base_dir(path)
    assert base == meta["image_root"]
    patients = {}
    for name in SPLIT_NAMES:
        loaded = load_decathlon_datalist(path, is_segmentation=False, data_list_key=name, base_dir=base)
        assert len(loaded) == SPLITS["sizes"][name]
        for item in loaded:
            assert os.path.isabs(item["image"]) and Path(item["image"]).is_file()
            assert item["label"] in (0, 1) and item["sex"] in (0, 1) and item["age"] in (0, 1)
            assert patients.setdefault(item["patient_id"], name) == name
    assert not [p for p in dataset.iterdir() if p.name.endswith(".tmp")]


def test_second_call_reuses_and_changes_rebuild(dataset, caplog):
    path = Path(_prepare(dataset))
    stamp, first = path.stat().st_mtime_ns, path.read_bytes()
    caplog.set_level("INFO", logger="mimmx.data")
    assert _prepare(dataset) == str(path)
    assert path.stat().st_mtime_ns == stamp and path.read_bytes() == first
    assert "reusing" in caplog.text

    heavier = [dict(f, weight=2.0) for f in FACTORS]  # a loss weight does not change the data list
    _prepare(dataset, factors=heavier)
    assert path.stat().st_mtime_ns == stamp

    _prepare(dataset, splits={**SPLITS, "rho": 0.7})
    meta = read_datalist(path)["metadata"]
    assert meta["split_report"]["rho"] == {"sex": 0.7, "age": 0.7}
    fp_07 = meta["fingerprint"]
    assert fp_07 != json.loads(first)["metadata"]["fingerprint"]

    _prepare(dataset, splits={**SPLITS, "rho": 0.7}, overwrite=True)
    assert read_datalist(path)["metadata"]["fingerprint"] == fp_07
    assert read_datalist(path)["metadata"]["created"]


def test_changed_table_rebuilds(dataset, write_cohort):
    path = Path(_prepare(dataset))
    fp = read_datalist(path)["metadata"]["fingerprint"]
    write_cohort(dataset / "CheXpert-v1.0-small" / "train.csv", cohort_rows(seed=1))
    _prepare(dataset)
    assert read_datalist(path)["metadata"]["fingerprint"] != fp


def test_missing_csv_without_synthetic(tmp_path):
    with pytest.raises(DataError, match=r"train\.csv: cohort table not found"):
        _prepare(tmp_path / "empty")


def test_synthetic_generator_is_called_when_table_is_missing(tmp_path, write_cohort, monkeypatch):
    calls = []

    def fake_generator(out_dir, seed, num_patients):
        calls.append((out_dir, seed, num_patients))
        return str(write_cohort(Path(out_dir) / "CheXpert-v1.0-small" / "train.csv", cohort_rows(num_patients)))

    monkeypatch.setitem(prepare_module.GENERATORS, "cxr", fake_generator)
    dataset = tmp_path / "synthetic"
    cohort = {**COHORT, "synthetic": {"generator": "cxr", "num_patients": 400}}
    path = _prepare(dataset, cohort=cohort, seed=7)
    assert calls == [(str(dataset), 7, 400)]
    assert read_datalist(path)["metadata"]["split_report"]["seed"] == 7
    _prepare(dataset, cohort=cohort, seed=7)  # table exists now: no second generation
    assert len(calls) == 1
    with pytest.raises(ConfigError, match=r"generator: expected one of \['cxr', 'mri'\]"):
        _prepare(tmp_path / "other", cohort={**COHORT, "synthetic": {"generator": "pet"}})


def test_generators_are_the_functions_themselves():
    """``generator: cxr|mri`` maps straight to the imported functions; any other name fails naming the setting."""
    assert prepare_module.GENERATORS == {"cxr": generate_cxr_cohort, "mri": generate_mri_cohort}
    assert synthetic_generator("mri", "cohort#synthetic#generator") is generate_mri_cohort
    for bad in ("pet", None, ["cxr"]):
        with pytest.raises(ConfigError, match=r"cohort#synthetic#generator: expected one of \['cxr', 'mri'\]"):
            synthetic_generator(bad, "cohort#synthetic#generator")


def test_failed_split_leaves_nothing_behind(dataset):
    impossible = {**SPLITS, "sizes": {**SPLITS["sizes"], "train": 5000}}
    with pytest.raises(SplitError):
        _prepare(dataset, splits=impossible)
    assert not (dataset / "datalist.json").exists()
    assert not [p for p in dataset.iterdir() if p.suffix == ".tmp"]
    # a failed rebuild keeps the previous data list intact
    path = Path(_prepare(dataset))
    before = path.read_bytes()
    with pytest.raises(SplitError):
        _prepare(dataset, splits=impossible)
    assert path.read_bytes() == before


def test_write_datalist_is_atomic(tmp_path):
    path = tmp_path / "lists" / "datalist.json"
    write_datalist(path, {"train": [{"image": "a.png", "label": 1}]}, {"image_root": str(tmp_path)})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_datalist(path, {"train": [{"image": "b.png", "label": object()}]}, {})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["datalist.json"]


def test_read_datalist_errors(tmp_path):
    with pytest.raises(DataError, match="missing.json: data list not found"):
        read_datalist(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a readable JSON data list"):
        read_datalist(bad)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"metadata": {}, "train": [], "val": []}))
    with pytest.raises(DataError, match=r"partial.json: missing split\(s\) \['test_id'"):
        read_datalist(partial)


def test_config_errors(dataset):
    with pytest.raises(ConfigError, match=r"cohort#format: expected one of \['chexpert', 'cohort'\]"):
        _prepare(dataset, cohort={**COHORT, "format": "ukbb"})
    with pytest.raises(ConfigError, match=r"\['view'\] are not understood by the 'chexpert' reader"):
        _prepare(dataset, cohort={**COHORT, "view": "AP"})
    with pytest.raises(ConfigError, match="uncertain"):
        _prepare(dataset, target={**TARGET, "uncertain": "maybe"})


def test_format_options_reach_the_reader(dataset):
    path = _prepare(dataset, cohort={**COHORT, "views": ["AP"], "frontal_only": True})
    assert read_datalist(path)["metadata"]["reader_report"]["dropped"]["lateral"] > 0
