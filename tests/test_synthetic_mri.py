"""The synthetic MRI cohort: files, affines, label correlations, image cues, determinism, and its data list."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mimmx.data import prepare_datalist, read_cohort, read_datalist
from mimmx.data.synthetic_mri import (
    COLUMNS,
    SITE_FIDUCIALS,
    draw_subjects,
    generate_mri_cohort,
)
from mimmx.factors import parse_factors

SHAPE, SPACING = (16, 16, 16), (8.0, 8.0, 8.0)
FACTORS = [
    {"name": "field", "column": "field_strength", "classes": [1.5, 3.0]},
    {"name": "site", "classes": ["site_a", "site_b"]},
    {"name": "sex", "classes": ["F", "M"]},
    {"name": "age", "bins": [[None, 50], [60, None]]},
]


def _rows(csv_path: str | Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """300 subjects at 16^3 (8 mm voxels), factors independent of the target (rho = 0.5)."""
    out = tmp_path_factory.mktemp("mri")
    csv_path = generate_mri_cohort(out, num_subjects=300, shape=SHAPE, spacing=SPACING, progress=False, seed=0)
    rows = _rows(csv_path)
    root = Path(csv_path).parent
    volumes = np.stack(
        [nib.as_closest_canonical(nib.load(root / r["image"])).get_fdata(dtype=np.float32) for r in rows]
    )
    return Path(csv_path), rows, volumes


def _flag(rows, column, value) -> np.ndarray:
    return np.array([r[column] == value for r in rows])


def _effect(values: np.ndarray, group: np.ndarray) -> float:
    """Standardised mean difference (Cohen's d) of the group against the rest."""
    a, b = values[group], values[~group]
    return float((a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2))


def _coords() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel centres in RAS, in units of the half field of view."""
    c = (np.arange(SHAPE[0]) - (SHAPE[0] - 1) / 2) / (SHAPE[0] / 2)
    return np.meshgrid(c, c, c, indexing="ij")


def test_layout_csv_and_files(cohort):
    csv_path, rows, _ = cohort
    assert csv_path.name == "participants.csv" and csv_path.parent.name == "mri_cohort"
    assert tuple(rows[0]) == COLUMNS
    assert rows[0]["image"] == "sub-00001/anat/sub-00001_T1w.nii.gz"
    assert len({r["subject_id"] for r in rows}) == 300
    assert {r["sex"] for r in rows} == {"F", "M"} and {r["site"] for r in rows} == {"site_a", "site_b"}
    assert {r["field_strength"] for r in rows} == {"1.5", "3.0"} and {r["atrophy"] for r in rows} == {"0", "1"}
    assert all(r["age"].isdigit() for r in rows)
    assert all((csv_path.parent / r["image"]).is_file() for r in rows)
    settings = json.loads((csv_path.parent / "synthetic_cohort.json").read_text())
    assert settings["num_subjects"] == 300 and settings["cues"]["sex_size_ratio"] > 1
    leftovers = [p for p in csv_path.parent.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers


def test_affines_and_storage_orientation(tmp_path):
    shape, spacing = (12, 14, 10), (3.0, 2.5, 4.0)
    csv_path = generate_mri_cohort(tmp_path, num_subjects=12, shape=shape, spacing=spacing, progress=False, seed=1)
    for row in _rows(csv_path):
        image = nib.load(Path(csv_path).parent / row["image"])
        assert image.shape == shape and image.get_data_dtype() == np.int16
        assert np.allclose(image.header.get_zooms(), spacing)
        assert np.allclose(np.abs(np.diag(image.affine)[:3]), spacing)
        assert abs(np.linalg.det(image.affine[:3, :3])) == pytest.approx(np.prod(spacing))
        centre = image.affine @ np.append((np.array(shape) - 1) / 2, 1)
        assert np.allclose(centre[:3], 0)  # origin at the volume centre
        assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
        expected = ("R", "A", "S") if row["site"] == "site_a" else ("L", "P", "S")
        assert nib.aff2axcodes(image.affine) == expected


@pytest.mark.parametrize("rho, prevalence", [(0.8, 0.5), (0.3, 0.3)])
def test_factors_agree_with_the_target_with_probability_rho(rho, prevalence):
    s = draw_subjects(np.random.default_rng(0), 20000, rho, prevalence, age_gap_fraction=0.05)
    assert s["y"].mean() == pytest.approx(prevalence, abs=0.015)
    for key in ("male", "site_b", "field_3t"):
        assert (s[key] == s["y"]).mean() == pytest.approx(rho, abs=0.015)
    old, young, gap = s["age"] >= 60, s["age"] <= 50, (s["age"] > 50) & (s["age"] < 60)
    assert gap.mean() == pytest.approx(0.05, abs=0.01) and old.mean() == pytest.approx(young.mean(), abs=0.03)
    assert old[s["y"]].mean() == pytest.approx(old[~s["y"]].mean(), abs=0.03)  # age independent of the target


def test_written_table_follows_rho(tmp_path):
    csv_path = generate_mri_cohort(tmp_path, 400, shape=(8, 8, 8), spacing=(16.0,) * 3, rho=0.8, progress=False)
    rows = _rows(csv_path)
    y = _flag(rows, "atrophy", "1")
    for column, value in (("sex", "M"), ("site", "site_b"), ("field_strength", "3.0")):
        assert (_flag(rows, column, value) == y).mean() == pytest.approx(0.8, abs=0.06)
    items, report = read_cohort(csv_path, "atrophy", parse_factors(FACTORS))
    assert report["dropped"]["factor:age"] > 0 and len(items) == report["rows_kept"] > 350


def test_noise_is_higher_at_1_5_tesla(cohort):
    _, rows, volumes = cohort
    x, y, z = _coords()
    air = (np.abs(x) > 0.75) & (np.abs(y) > 0.75) & (z < -0.6)  # inferior corners of the field of view
    noise = volumes[:, air].std(axis=1)
    assert _effect(noise, _flag(rows, "field_strength", "1.5")) > 3


def test_male_heads_are_larger(cohort):
    _, rows, volumes = cohort
    head_voxels = (volumes > 250).sum(axis=(1, 2, 3)).astype(float)
    assert _effect(head_voxels, _flag(rows, "sex", "M")) > 1


@pytest.mark.parametrize("site", sorted(SITE_FIDUCIALS))
def test_fiducial_is_bright_where_the_site_puts_it(cohort, site):
    _, rows, volumes = cohort
    x, y, z = _coords()
    direction = np.array(SITE_FIDUCIALS[site]) / np.linalg.norm(SITE_FIDUCIALS[site])
    along = x * direction[0] + y * direction[1] + z * direction[2]
    off_axis = np.sqrt(
        (x - along * direction[0]) ** 2 + (y - along * direction[1]) ** 2 + (z - along * direction[2]) ** 2
    )
    region = (along > 0.75) & (off_axis < 0.2)  # just outside the scalp in that direction
    brightest = volumes[:, region].max(axis=1)
    assert _effect(brightest, _flag(rows, "site", site)) > 2


def test_atrophy_darkens_the_centre_of_the_brain(cohort):
    """Larger ventricles (and wider sulci) put more CSF in the central region, relative to white matter."""
    _, rows, volumes = cohort
    x, y, z = _coords()
    central = (np.abs(x) < 0.3) & (np.abs(y) < 0.5) & (z > -0.2) & (z < 0.4)
    white = np.percentile(volumes.reshape(len(rows), -1), 97, axis=1)
    central_level = volumes[:, central].mean(axis=1) / white
    assert _effect(central_level, _flag(rows, "atrophy", "1")) < -0.5
    stronger = _effect(central_level, _flag(rows, "field_strength", "1.5"))
    assert abs(stronger) < 2.5  # the causal cue is subtler than the spurious ones


def test_same_seed_same_cohort_other_seed_other_cohort(tmp_path):
    def generate(name, seed):
        return Path(generate_mri_cohort(tmp_path / name, 6, shape=(8, 8, 8), progress=False, seed=seed))

    a, b, c = generate("a", 3), generate("b", 3), generate("c", 4)
    assert a.read_bytes() == b.read_bytes()
    for row in _rows(a):
        va, vb = (np.asarray(nib.load(p.parent / row["image"]).dataobj) for p in (a, b))
        assert np.array_equal(va, vb)
        assert (a.parent / row["image"]).read_bytes() == (b.parent / row["image"]).read_bytes()
    first = _rows(a)[0]["image"]
    assert not np.array_equal(nib.load(a.parent / first).dataobj, nib.load(c.parent / first).dataobj)


def test_rewrite_in_place_and_bad_arguments(tmp_path):
    csv_path = Path(generate_mri_cohort(tmp_path, 4, shape=(8, 8, 8), progress=False))
    assert Path(generate_mri_cohort(tmp_path, 5, shape=(8, 8, 8), progress=False)) == csv_path
    assert len(_rows(csv_path)) == 5
    with pytest.raises(TypeError, match="unknown cue argument"):
        generate_mri_cohort(tmp_path, 4, shape=(8, 8, 8), progress=False, ventricle_scal=2.0)
    for kwargs in ({"num_subjects": 0}, {"shape": (8, 8)}, {"spacing": (1, 0, 1)}, {"rho": 1.5}):
        with pytest.raises(ValueError):
            generate_mri_cohort(tmp_path / "bad", **{"num_subjects": 2, "shape": (8, 8, 8), **kwargs})


def test_prepare_datalist_generates_the_cohort_when_missing(tmp_path):
    cohort = {
        "format": "cohort",
        "csv": "mri_cohort/participants.csv",
        "synthetic": {"generator": "mri", "num_subjects": 240, "rho": 0.7, "shape": [8, 8, 8], "spacing": [16, 16, 16]},
    }
    target = {"column": "atrophy", "classes": [0, 1], "class_names": ["healthy", "atrophy"]}
    splits = {"sizes": {"train": 40, "val": 8, "test_id": 8, "test_inverted": 8, "test_balanced": 16}, "rho": 0.8}
    path = prepare_datalist(tmp_path / "data", "datalist.json", cohort, target, FACTORS[:2], splits, seed=0)
    content = read_datalist(path)
    assert len(content["train"]) == 40
    assert content["metadata"]["image_root"] == str((tmp_path / "data" / "mri_cohort").resolve())
    assert content["train"][0]["image"].startswith("sub-")
