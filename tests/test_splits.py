"""Bucket subsampling: requested counts, achieved correlations, patient separation, errors."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from mimmx.data.splits import SPLIT_NAMES, bucket_counts, build_splits, format_report
from mimmx.errors import ConfigError, DataError, SplitError

SIZES = {"train": 400, "val": 100, "test_id": 100, "test_inverted": 100, "test_balanced": 120}


def cohort(n_patients=3000, seed=0, site=False):
    """Patients with 1-4 images; sex and age fixed per patient, the label per image, all independent."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(n_patients):
        sex, age = int(rng.integers(2)), int(rng.integers(2))
        for k in range(int(rng.integers(1, 5))):
            item = {
                "image": f"train/patient{p:05d}/study{k}/view1_frontal.jpg",
                "label": int(rng.integers(2)),
                "patient_id": f"patient{p:05d}",
                "sex": sex,
                "age": age,
            }
            if site:
                item["site"] = int(rng.integers(3))
            items.append(item)
    return items


@pytest.fixture(scope="module")
def items():
    return cohort()


@pytest.fixture(scope="module")
def result(items):
    return build_splits(items, ["sex", "age"], SIZES, rho=0.9, seed=3)


def _rho(split, key):
    return np.mean([item[key] == item["label"] for item in split])


def test_bucket_counts_sum_exactly_by_largest_remainder():
    counts = bucket_counts({"a": 0.5, "b": 0.3, "c": 0.2}, 7)  # raw 3.5, 2.1, 1.4
    assert counts == {"a": 4, "b": 2, "c": 1}
    for n in (1, 13, 99, 10400):
        probs = {i: p for i, p in enumerate(np.random.default_rng(n).dirichlet(np.ones(8)))}
        counts = bucket_counts(probs, n)
        assert sum(counts.values()) == n
        assert all(abs(counts[k] - probs[k] * n) < 1 for k in probs)


def test_sizes_and_requested_bucket_counts(result):
    for name in SPLIT_NAMES:
        split = result.splits[name]
        assert len(split) == SIZES[name]
        achieved = Counter((i["label"], i["sex"], i["age"]) for i in split)
        for row in result.report["splits"][name]["buckets"]:
            bucket = tuple(int(v) for v in re.findall(r"=(\d+)", row["bucket"]))
            assert achieved[bucket] == row["requested"] == row["achieved"]
    # train at rho 0.9, prevalence 0.5: label=1, sex=1, age=1 asks 400 * 0.5 * 0.9 * 0.9 = 162
    train = result.report["splits"]["train"]["buckets"]
    assert {r["bucket"]: r["requested"] for r in train}["label=1, sex=1, age=1"] == 162


@pytest.mark.parametrize(
    "name, expected", [("train", 0.9), ("val", 0.9), ("test_id", 0.9), ("test_inverted", 0.1), ("test_balanced", 0.5)]
)
def test_achieved_rho_and_prevalence(result, name, expected):
    split = result.splits[name]
    tolerance = 4 / len(split)  # rounding of 8 buckets
    for key in ("sex", "age"):
        assert abs(_rho(split, key) - expected) <= tolerance
        assert result.report["splits"][name]["factors"][key]["rho"] == pytest.approx(_rho(split, key))
    assert abs(np.mean([i["label"] for i in split]) - 0.5) <= tolerance
    phi = result.report["splits"][name]["factors"]["sex"]["phi"]
    assert phi == pytest.approx(2 * expected - 1, abs=0.05)


def test_no_patient_in_two_splits(result, items):
    owners = {}
    for name, split in result.splits.items():
        for item in split:
            assert owners.setdefault(item["patient_id"], name) == name
    assert sum(len(s) for s in result.splits.values()) == len({i["image"] for s in result.splits.values() for i in s})
    assert result.report["splits"]["train"]["n_patients"] == len({i["patient_id"] for i in result.splits["train"]})
    assert result.report["cohort"]["n"] == len(items)


def test_deterministic_under_seed(items, result):
    again = build_splits(items, ["sex", "age"], SIZES, rho=0.9, seed=3)
    assert again.splits == result.splits and again.report == result.report
    other = build_splits(items, ["sex", "age"], SIZES, rho=0.9, seed=4)
    assert other.splits["train"] != result.splits["train"]


def test_items_are_copied_not_mutated(items, result):
    result.splits["train"][0]["label"] = 99
    assert all(i["label"] in (0, 1) for i in items)


def test_rho_per_factor_and_prevalence(items):
    res = build_splits(items, ["sex", "age"], SIZES, rho={"sex": 0.8, "age": 0.5}, prevalence=0.3, seed=0)
    train = res.splits["train"]
    assert abs(_rho(train, "sex") - 0.8) < 0.01 and abs(_rho(train, "age") - 0.5) < 0.01
    assert abs(np.mean([i["label"] for i in train]) - 0.3) < 0.01
    assert abs(np.mean([i["label"] for i in res.splits["test_balanced"]]) - 0.5) < 0.01
    assert abs(_rho(res.splits["test_inverted"], "sex") - 0.2) < 0.02


def test_train_rho_changes_train_and_val_only(items):
    res = build_splits(items, ["sex", "age"], SIZES, rho=0.8, train_rho=0.5, seed=0)
    for split in ("train", "val"):
        assert abs(_rho(res.splits[split], "sex") - 0.5) < 0.02
    assert abs(_rho(res.splits["test_id"], "sex") - 0.8) < 0.02
    assert abs(_rho(res.splits["test_inverted"], "sex") - 0.2) < 0.02
    assert res.report["train_rho"] == {"sex": 0.5, "age": 0.5}
    assert res.report["splits"]["train"]["factors"]["sex"]["requested_rho"] == 0.5


def test_bucket_too_small_names_split_bucket_and_remedy():
    items = cohort(400, seed=1)
    with pytest.raises(SplitError) as e:
        build_splits(items, ["sex", "age"], {**SIZES, "train": 2000}, rho=0.95, seed=0)
    msg = str(e.value)
    assert re.search(
        r"split '(train|val|test_id|test_inverted|test_balanced)': bucket \(label=\d, sex=\d, age=\d\)", msg
    )
    assert "needs" in msg and "the cohort has" in msg and "held by patients of other splits" in msg
    assert "rho sex=0.95, age=0.95" in msg and "Lower rho or the split sizes, or add data" in msg


def test_bucket_shortage_counts_are_exact():
    # bucket label=1, sex=0 holds 10 images; test_balanced (filled first) asks 100 * 0.5 * 0.5 = 25 of it
    items = [
        {"image": f"i{n}", "label": y, "sex": z, "patient_id": f"p{n}"}
        for n, (y, z) in enumerate([(1, 0)] * 10 + [(1, 1)] * 500 + [(0, 0)] * 500 + [(0, 1)] * 500)
    ]
    sizes = dict.fromkeys(SPLIT_NAMES, 100)
    with pytest.raises(SplitError) as e:
        build_splits(items, ["sex"], sizes, rho=0.9)
    msg = str(e.value)
    assert "split 'test_balanced': bucket (label=1, sex=0) needs 25 images" in msg
    assert "only 10 are available: the cohort has 10 images in this bucket" in msg
    assert "(this split is balanced: 0.5)" in msg


def test_patients_held_by_other_splits_are_reported():
    # every patient has one image in each of the four buckets, so a split at rho 0.9 holds about twice the images
    # it uses: 80 images cannot give 5 x 10 although the supply of each bucket (20) would suffice
    items = [
        {"image": f"p{p}_{y}{z}", "label": y, "sex": z, "patient_id": f"p{p}"}
        for p in range(20)
        for y in (0, 1)
        for z in (0, 1)
    ]
    with pytest.raises(SplitError, match=r"held by patients of other splits") as e:
        build_splits(items, ["sex"], dict.fromkeys(SPLIT_NAMES, 10), rho=0.9)
    held = int(re.search(r"(\d+) held by patients of other splits", str(e.value)).group(1))
    assert held > 0


def test_single_valued_factor_in_cohort(items):
    flat = [dict(i, sex=0) for i in items]
    with pytest.raises(SplitError, match=r"factor 'sex' has a single value \[0\] in the whole cohort"):
        build_splits(flat, ["sex", "age"], SIZES, rho=0.9)


def test_single_valued_factor_in_a_split(items):
    with pytest.raises(SplitError, match=r"factor 'sex' has a single value \[\d\] in split 'val'"):
        build_splits(items, ["sex", "age"], {**SIZES, "val": 1}, rho=0.9)


def test_categorical_factor_is_spread_evenly():
    items = cohort(3000, seed=2, site=True)
    res = build_splits(items, ["sex", "site"], SIZES, rho={"sex": 0.9}, seed=0)
    assert res.report["factors"]["site"] == {"kind": "categorical", "values": [0, 1, 2]}
    for name in SPLIT_NAMES:
        split = res.splits[name]
        counts = Counter((i["label"], i["site"]) for i in split)
        n_label = Counter(i["label"] for i in split)
        for (y, _), c in counts.items():
            assert abs(c - n_label[y] / 3) <= 2  # same site mix in both classes
        rep = res.report["splits"][name]["factors"]["site"]
        assert rep["rho"] is None and rep["cramers_v"] < 0.1
    assert abs(_rho(res.splits["train"], "sex") - 0.9) < 0.01


def test_config_errors(items):
    with pytest.raises(ConfigError, match=r"missing \['test_balanced'\]"):
        build_splits(items, ["sex"], {k: v for k, v in SIZES.items() if k != "test_balanced"}, rho=0.9)
    with pytest.raises(ConfigError, match=r"splits#sizes#val: expected a positive integer"):
        build_splits(items, ["sex"], {**SIZES, "val": 0}, rho=0.9)
    with pytest.raises(ConfigError, match=r"missing \['age'\]"):
        build_splits(items, ["sex", "age"], SIZES, rho={"sex": 0.9})
    with pytest.raises(ConfigError, match=r"splits#rho: expected a number in \[0, 1\]"):
        build_splits(items, ["sex"], SIZES, rho=1.5)
    with pytest.raises(ConfigError, match="prevalence"):
        build_splits(items, ["sex"], SIZES, rho=0.9, prevalence=1.0)


def test_item_errors_name_the_item(items):
    broken = list(items[:50]) + [{"image": "x/patient99999/a.jpg", "label": 1, "patient_id": "patient99999"}]
    with pytest.raises(DataError, match=r"item 50 \(image 'x/patient99999/a.jpg'\) has no 'sex'"):
        build_splits(broken, ["sex"], SIZES, rho=0.9)
    with pytest.raises(DataError, match=r"item 0 .*'label' is 2; expected 0 or 1"):
        build_splits([dict(items[0], label=2)], ["sex"], SIZES, rho=0.9)


def test_format_report(result):
    text = format_report(result.report)
    for name in SPLIT_NAMES:
        assert name in text
    assert "sex rho/phi" in text and "label=1, sex=1, age=1" in text and "0.90/+0.80" in text


@pytest.mark.parametrize(
    "n_patients, rho",
    [
        (5000, {"sex": 0.9, "age": 0.5, "devices": 0.5}),  # the `single` protocol
        # the default declaration (`all`): every factor at rho 0.9 needs more patients, since its scarce buckets
        # hold 0.1^3 of the cohort whatever the order of drawing
        (10000, {"sex": 0.9, "age": 0.9, "devices": 0.9}),
    ],
)
def test_test_splits_draw_new_patients_first_on_a_cohort_with_many_images_per_patient(n_patients, rho):
    """Patients with geometrically distributed image counts (mean 3, as CheXpert): each test split's 400 images
    come from at least 380 patients, and the report counts patients per split."""
    rng = np.random.default_rng(0)
    items = []
    for p in range(n_patients):
        sex, age = int(rng.integers(2)), int(rng.integers(2))
        for _ in range(int(rng.geometric(1 / 3.0))):
            label = int(rng.random() < 0.5)
            items.append({"image": f"p{p}/{len(items)}.png", "label": label, "patient_id": f"p{p}", "sex": sex,
                          "age": age, "devices": int(rng.random() < 0.5)})  # fmt: skip
    # the chest X-ray bundle's factors and default split sizes
    sizes = {"train": 1600, "val": 300, "test_id": 400, "test_inverted": 400, "test_balanced": 400}
    result = build_splits(items, ["sex", "age", "devices"], sizes, rho=rho, seed=0)
    report = result.report["splits"]
    assert len(result.splits["test_balanced"]) == 400
    assert len({i["patient_id"] for i in result.splits["test_balanced"]}) == report["test_balanced"]["n_patients"]
    assert report["test_balanced"]["n_patients"] >= 380
    assert report["test_inverted"]["n_patients"] >= 380 and report["test_id"]["n_patients"] >= 380
    assert len(result.splits["train"]) == 1600
