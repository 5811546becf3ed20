"""The synthetic CXR cohort: CheXpert's exact format, rho-controlled factors, visible cues, determinism."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimmx.data.synthetic_cxr import CHEXPERT_COLUMNS, generate_cxr_cohort

HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)
OBSERVATION_VALUES = {"", "1.0", "0.0", "-1.0"}
PATH_RE = re.compile(r"CheXpert-v1\.0-small/train/patient\d{5}/study1/view(1_frontal|2_lateral)\.png")


def read_rows(csv_path: str) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def load(out_dir: Path, row: dict[str, str]) -> np.ndarray:
    return np.asarray(Image.open(out_dir / row["Path"]), dtype=np.float32)


def frontal(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["Frontal/Lateral"] == "Frontal"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    csv_path = generate_cxr_cohort(out, num_patients=60, image_size=64, lateral_fraction=0.2, progress=False)
    return out, csv_path, read_rows(csv_path)


@pytest.fixture(scope="module")
def cues(tmp_path_factory):
    """A balanced cohort large enough for group statistics of the cues."""
    out = tmp_path_factory.mktemp("cues")
    csv_path = generate_cxr_cohort(
        out, num_patients=240, image_size=64, lateral_fraction=0, uncertain_fraction=0, progress=False, seed=3
    )
    rows = frontal(read_rows(csv_path))
    images = np.stack([load(out, r) for r in rows])
    return images, rows


def test_csv_is_chexperts_format(small):
    out, csv_path, rows = small
    assert Path(csv_path) == out / "CheXpert-v1.0-small" / "train.csv"
    with open(csv_path, newline="") as f:
        assert f.readline().rstrip("\n") == HEADER
    assert ",".join(CHEXPERT_COLUMNS) == HEADER
    for r in rows:
        assert PATH_RE.fullmatch(r["Path"]), r["Path"]
        assert r["Sex"] in ("Female", "Male")
        assert re.fullmatch(r"\d+", r["Age"])
        assert all(r[c] in OBSERVATION_VALUES for c in CHEXPERT_COLUMNS[5:])
    assert {r["Frontal/Lateral"] for r in rows} == {"Frontal", "Lateral"}
    assert len(frontal(rows)) == 60


def test_every_row_has_a_grayscale_png_of_the_requested_size(small):
    out, _, rows = small
    for r in rows:
        with Image.open(out / r["Path"]) as img:
            assert img.format == "PNG" and img.mode == "L"
            arr = np.asarray(img)
        assert arr.dtype == np.uint8 and arr.shape == (64, 64)
        assert arr.std() > 10  # a picture, not a blank


def test_lateral_rows_have_blank_projection_and_frontal_rows_ap_or_pa(small):
    _, _, rows = small
    for r in rows:
        if r["Frontal/Lateral"] == "Lateral":
            assert r["AP/PA"] == "" and r["Path"].endswith("view2_lateral.png")
        else:
            assert r["AP/PA"] in ("AP", "PA") and r["Path"].endswith("view1_frontal.png")


def test_no_temporary_file_left(small):
    out, _, _ = small
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []


def test_same_seed_same_bytes_other_seed_other_cohort(tmp_path):
    a = generate_cxr_cohort(tmp_path / "a", num_patients=20, image_size=32, seed=7, progress=False)
    b = generate_cxr_cohort(tmp_path / "b", num_patients=20, image_size=32, seed=7, progress=False)
    c = generate_cxr_cohort(tmp_path / "c", num_patients=20, image_size=32, seed=8, progress=False)
    assert Path(a).read_bytes() == Path(b).read_bytes() != Path(c).read_bytes()
    for r in read_rows(a):
        assert (tmp_path / "a" / r["Path"]).read_bytes() == (tmp_path / "b" / r["Path"]).read_bytes()


def factor_agreement(rows: list[dict[str, str]]) -> dict[str, float]:
    """P(z == y) per factor, over rows with a definite target and an age outside the 51-59 gap."""
    keep = [r for r in frontal(rows) if r["Pleural Effusion"] != "-1.0" and not 50 < int(r["Age"]) < 60]
    y = np.array([r["Pleural Effusion"] == "1.0" for r in keep])
    z = {
        "sex": np.array([r["Sex"] == "Male" for r in keep]),
        "age": np.array([int(r["Age"]) >= 60 for r in keep]),
        "devices": np.array([r["Support Devices"] == "1.0" for r in keep]),
    }
    return {k: float(np.mean(v == y)) for k, v in z.items()}


@pytest.mark.parametrize("rho", [0.9, 0.5])
def test_factors_agree_with_the_target_with_probability_rho(tmp_path, rho):
    csv_path = generate_cxr_cohort(tmp_path, num_patients=400, image_size=32, rho=rho, progress=False, seed=1)
    for name, p in factor_agreement(read_rows(csv_path)).items():
        assert abs(p - rho) < 0.07, (name, p)


def test_labels_cells_and_ages(tmp_path):
    csv_path = generate_cxr_cohort(
        tmp_path, num_patients=300, image_size=32, uncertain_fraction=0.1, age_gap_fraction=0.1, progress=False
    )
    rows = frontal(read_rows(csv_path))
    target = [r["Pleural Effusion"] for r in rows]
    assert {"1.0", "-1.0"} <= set(target) and ({"0.0", ""} & set(target))
    ages = np.array([int(r["Age"]) for r in rows])
    assert ((ages > 50) & (ages < 60)).any() and (ages <= 50).any() and (ages >= 60).any()
    for r in rows:
        if r["No Finding"] == "1.0":
            assert r["Pleural Effusion"] not in ("1.0", "-1.0")


def test_cue_arguments_are_checked_and_change_the_picture(tmp_path):
    with pytest.raises(TypeError, match="effusion_contrst"):
        generate_cxr_cohort(tmp_path / "x", num_patients=2, progress=False, effusion_contrst=0.1)
    with pytest.raises(ValueError, match="rho"):
        generate_cxr_cohort(tmp_path / "x", num_patients=2, rho=1.5, progress=False)
    a = generate_cxr_cohort(tmp_path / "a", num_patients=4, image_size=32, progress=False)
    generate_cxr_cohort(tmp_path / "b", num_patients=4, image_size=32, progress=False, noise_std=0.0)
    row = read_rows(a)[0]
    assert load(tmp_path / "a", row).std() != load(tmp_path / "b", row).std()


def test_regenerating_in_place_replaces_the_cohort(tmp_path):
    generate_cxr_cohort(tmp_path, num_patients=10, image_size=32, progress=False, seed=0)
    csv_path = generate_cxr_cohort(tmp_path, num_patients=5, image_size=32, progress=False, seed=1)
    assert len(frontal(read_rows(csv_path))) == 5


def effect_size(values: np.ndarray, positive: np.ndarray) -> float:
    """Difference of group means in pooled standard deviations (positive: the cue is where expected)."""
    a, b = values[positive], values[~positive]
    return float((a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2))


def test_effusion_brightens_the_lung_bases(cues):
    images, rows = cues
    y = np.array([r["Pleural Effusion"] == "1.0" for r in rows])
    bases = np.concatenate([images[:, 36:44, 14:26], images[:, 36:44, 42:52]], axis=2).mean(axis=(1, 2))
    assert effect_size(bases, y) > 0.6


def test_devices_add_a_bright_line(cues):
    images, rows = cues
    device = np.array([r["Support Devices"] == "1.0" for r in rows])
    peak = images[:, 10:, :].max(axis=(1, 2))  # below the corner where the AP marker sits
    assert effect_size(peak, device) > 2.0


def test_old_patients_have_dimmer_bones(cues):
    images, rows = cues
    old = np.array([int(r["Age"]) >= 60 for r in rows])
    lungs = np.concatenate([images[:, 14:36, 8:22], images[:, 14:36, 42:56]], axis=2)
    ribs = np.abs(np.diff(lungs, axis=1)).mean(axis=(1, 2))  # rib edges: vertical intensity changes
    assert effect_size(ribs, ~old) > 2.0


def test_males_have_a_broader_thorax(cues):
    images, rows = cues
    male = np.array([r["Sex"] == "Male" for r in rows])
    bright = images[:, 28:40, :].mean(axis=1) > 60  # soft tissue vs air, one profile per image
    width = (63 - bright[:, ::-1].argmax(axis=1) - bright.argmax(axis=1)).astype(float)
    assert effect_size(width, male) > 2.0


def test_the_cohort_reads_through_the_chexpert_reader(small):
    chexpert = pytest.importorskip("mimmx.data.chexpert")
    _, csv_path, rows = small
    factors = [
        {"name": "sex", "column": "Sex", "classes": ["Female", "Male"]},
        {"name": "age", "column": "Age", "bins": [[None, 50], [60, None]]},
        {"name": "devices", "column": "Support Devices", "classes": [[None, 0, -1], [1]]},
    ]
    items, report = chexpert.read_chexpert(csv_path, factors=factors)
    assert report["dropped"]["lateral"] == len(rows) - len(frontal(rows))
    assert items and all(Path(report["image_root"], it["image"]).is_file() for it in items)


def test_several_studies_per_patient_share_the_patients_sex_and_age(tmp_path):
    from collections import defaultdict

    from mimmx.data.synthetic_cxr import generate_cxr_cohort

    path = generate_cxr_cohort(tmp_path, num_patients=200, image_size=16, studies_per_patient=2.5, progress=False)
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["Frontal/Lateral"] == "Frontal"]
    by_patient = defaultdict(list)
    for r in rows:
        by_patient[r["Path"].split("/")[2]].append(r)
    assert len(rows) == 200 and 50 < len(by_patient) < 120
    assert max(len(v) for v in by_patient.values()) >= 4
    for studies in by_patient.values():
        assert len({(r["Sex"], r["Age"]) for r in studies}) == 1
        assert [r["Path"].split("/")[3] for r in studies] == [f"study{i + 1}" for i in range(len(studies))]
    assert all((tmp_path / r["Path"]).is_file() for r in rows)
