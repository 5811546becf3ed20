"""Tests of the split metrics against hand-computed cases, and of the bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score, roc_curve

from mimmx.metrics import (
    accuracy,
    auprc,
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    classification_metrics,
    ece,
    group_metrics,
    roc_curve_points,
    switched_auroc,
)


def binary(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1.0 - p1, p1], axis=1)


LABELS = np.array([0, 0, 1, 1])
PROBS = binary([0.1, 0.4, 0.35, 0.8])


def plain_types(obj) -> bool:
    """True when the structure holds only dict/list/str/int/float/None (no numpy scalars)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain_types(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(plain_types(v) for v in obj)
    return obj is None or type(obj) in (str, int, float)


def test_auroc_auprc_accuracy_hand_computed():
    # Positive/negative pairs: 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4.
    assert auroc(LABELS, PROBS) == pytest.approx(0.75)
    # Ranked 0.8(+), 0.4(-), 0.35(+), 0.1(-): AP = 0.5 * P(0.8)=1 + 0.5 * P(0.35)=2/3 = 5/6.
    assert auprc(LABELS, PROBS) == pytest.approx(5 / 6)
    # argmax predicts [0, 0, 0, 1]: three of four right.
    assert accuracy(LABELS, PROBS) == pytest.approx(0.75)


def test_balanced_accuracy_imbalanced():
    labels = np.array([0, 0, 0, 0, 1, 1])
    probs = binary([0.2, 0.3, 0.1, 0.7, 0.9, 0.4])  # predicts [0, 0, 0, 1, 1, 0]
    # Recall of class 0 is 3/4, of class 1 is 1/2 -> 0.625, while plain accuracy is 4/6.
    assert balanced_accuracy(labels, probs) == pytest.approx(0.625)
    assert accuracy(labels, probs) == pytest.approx(4 / 6)
    assert balanced_accuracy(labels, probs) == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)))


def test_ece_two_bins_hand_computed():
    labels = np.array([0, 0, 1, 0])
    probs = np.array([[0.62, 0.38], [0.32, 0.68], [0.08, 0.92], [0.98, 0.02]])
    # Top-class confidences 0.62, 0.68 (bin [0.6, 0.7)), 0.92, 0.98 (bin [0.9, 1]); correct: yes, no, yes, yes.
    # Bin 0.6: acc 0.5, conf 0.65 -> 2/4 * 0.15; bin 0.9: acc 1, conf 0.95 -> 2/4 * 0.05. ECE = 0.075 + 0.025 = 0.1.
    assert ece(labels, probs) == pytest.approx(0.1)
    # One bin: |acc 3/4 - mean conf 0.8| = 0.05.
    assert ece(labels, probs, n_bins=1) == pytest.approx(0.05)
    assert ece(np.zeros(0, dtype=int), np.zeros((0, 2))) is None


def test_multiclass_macro_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected_auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    expected_ap = average_precision_score(np.eye(3)[labels], probs, average="macro")
    assert auroc(labels, probs) == pytest.approx(expected_auc)
    assert auprc(labels, probs) == pytest.approx(expected_ap)
    assert 0.7 < auroc(labels, probs) < 1.0


def test_classification_metrics_structure_and_values():
    out = classification_metrics(LABELS, PROBS, n_boot=50, seed=0)
    assert out["n"] == 4
    assert set(out) == {"n", "auroc", "auprc", "accuracy", "balanced_accuracy", "ece"}
    assert out["auroc"]["value"] == pytest.approx(0.75)
    assert out["auprc"]["value"] == pytest.approx(5 / 6)
    assert out["accuracy"]["value"] == pytest.approx(0.75)
    assert out["balanced_accuracy"]["value"] == pytest.approx(0.75)
    # Confidences 0.9, 0.6, 0.65, 0.8; correct yes, yes, no, yes; bins 0.9 / 0.6 (two) / 0.8:
    # (1 * 0.1 + |1 - 1.25| + 1 * 0.2) / 4 = 0.55 / 4.
    assert out["ece"]["value"] == pytest.approx(0.55 / 4)
    assert plain_types(out)
    json.dumps(out)


def test_classification_metrics_without_bootstrap_and_degenerate_splits():
    out = classification_metrics(LABELS, PROBS, n_boot=0)
    assert all(out[m]["ci"] is None for m in ("auroc", "auprc", "accuracy", "balanced_accuracy", "ece"))

    one_class = classification_metrics(np.ones(3, dtype=int), binary([0.7, 0.2, 0.9]), n_boot=20)
    assert one_class["auroc"] == {"value": None, "ci": None}
    assert one_class["auprc"] == {"value": None, "ci": None}
    assert one_class["balanced_accuracy"] == {"value": None, "ci": None}
    assert one_class["accuracy"]["value"] == pytest.approx(2 / 3)

    empty = classification_metrics(np.zeros(0, dtype=int), np.zeros((0, 2)), n_boot=20)
    assert empty["n"] == 0
    assert all(empty[m] == {"value": None, "ci": None} for m in ("auroc", "accuracy", "ece"))


def test_classification_metrics_rejects_bad_inputs():
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 2]), binary([0.1, 0.9]))
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1, 1]), binary([0.1, 0.9]))


def test_bootstrap_ci_contains_estimate_deterministic_and_sized():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    correct = rng.random(400) < 0.75
    probs = binary(np.where(correct, labels, 1 - labels) * 0.6 + 0.2)
    value = accuracy(labels, probs)
    ci = bootstrap_ci(accuracy, (labels, probs), n_boot=1000, seed=3)
    assert ci[0] <= value <= ci[1]
    # Binomial standard error sqrt(0.75 * 0.25 / 400) = 0.0217: a 95% interval is about 0.085 wide.
    assert 0.065 < ci[1] - ci[0] < 0.105
    assert bootstrap_ci(accuracy, (labels, probs), n_boot=1000, seed=3) == ci
    assert bootstrap_ci(accuracy, (labels, probs), n_boot=1000, seed=4) != ci
    assert all(type(x) is float for x in ci)
    assert bootstrap_ci(accuracy, (labels, probs), n_boot=0) is None


def test_bootstrap_ci_skips_undefined_resamples():
    x = np.arange(10.0)
    assert bootstrap_ci(lambda a: None, (x,), n_boot=20) is None
    # Defined only when the resample includes row 0 (probability 1 - 0.9^10 = 0.65): still more than half.
    ci = bootstrap_ci(lambda a: 1.0 if (a == 0).any() else None, (x,), n_boot=200)
    assert ci == [1.0, 1.0]
    # Defined only when row 0 is missing (probability 0.35): fewer than half -> None.
    assert bootstrap_ci(lambda a: 1.0 if not (a == 0).any() else None, (x,), n_boot=200) is None
    with pytest.raises(ValueError):
        bootstrap_ci(lambda a, b: 0.0, (x, x[:5]))


def group_table():
    # factor A: y 0 0 1 1 with p1 .2 .6 .7 .4 -> AUROC 3/4 (0.4 < 0.6), predictions 0 1 1 0 -> accuracy 1/2.
    # factor B: y 0 1 1 with p1 .1 .9 .8 -> AUROC 1, accuracy 1.  Factor C: no rows.
    labels = np.array([0, 0, 1, 1, 0, 1, 1])
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    probs = binary([0.2, 0.6, 0.7, 0.4, 0.1, 0.9, 0.8])
    return labels, probs, groups


def test_group_metrics_hand_computed():
    labels, probs, groups = group_table()
    out = group_metrics(labels, probs, groups, ["A", "B", "C"], ["neg", "pos"], n_boot=30)
    sub = {s["value"]: s for s in out["subgroups"]}
    assert [s["value"] for s in out["subgroups"]] == ["A", "B", "C"]
    assert (sub["A"]["n"], sub["B"]["n"], sub["C"]["n"]) == (4, 3, 0)
    assert sub["A"]["auroc"]["value"] == pytest.approx(0.75)
    assert sub["B"]["auroc"]["value"] == pytest.approx(1.0)
    assert sub["A"]["accuracy"]["value"] == pytest.approx(0.5)
    assert sub["B"]["accuracy"]["value"] == pytest.approx(1.0)
    assert sub["C"]["auroc"] == {"value": None, "ci": None}
    assert sub["C"]["accuracy"] == {"value": None, "ci": None}

    cells = {(c["target"], c["value"]): (c["n"], c["accuracy"]["value"]) for c in out["cells"]}
    assert len(out["cells"]) == 6
    assert cells[("neg", "A")] == (2, pytest.approx(0.5))  # .2 right, .6 wrong
    assert cells[("neg", "B")] == (1, pytest.approx(1.0))
    assert cells[("pos", "A")] == (2, pytest.approx(0.5))  # .7 right, .4 wrong
    assert cells[("pos", "B")] == (2, pytest.approx(1.0))
    assert cells[("neg", "C")] == (0, None) and cells[("pos", "C")] == (0, None)

    assert out["worst_group_auroc"] == pytest.approx(0.75)
    assert out["auroc_gap"] == pytest.approx(0.25)
    assert out["worst_group_accuracy"] == pytest.approx(0.5)
    assert out["accuracy_gap"] == pytest.approx(0.5)
    assert plain_types(out)


def test_group_metrics_single_class_subgroup_is_left_out_of_worst_group():
    labels = np.array([0, 1, 0, 1, 1, 1])
    groups = np.array([0, 0, 0, 0, 1, 1])
    probs = binary([0.3, 0.8, 0.6, 0.4, 0.9, 0.2])
    out = group_metrics(labels, probs, groups, ["A", "B"], ["neg", "pos"], n_boot=0)
    # A: pos {.8, .4} vs neg {.3, .6} -> 3/4. B holds positives only: no AUROC, so no gap either.
    assert out["subgroups"][1]["auroc"]["value"] is None
    assert out["subgroups"][1]["accuracy"]["value"] == pytest.approx(0.5)
    assert out["worst_group_auroc"] == pytest.approx(0.75)
    assert out["auroc_gap"] is None
    with pytest.raises(ValueError):
        group_metrics(labels, probs, np.array([0, 0, 0, 0, 2, 2]), ["A", "B"], ["neg", "pos"])


def test_switched_auroc():
    out = switched_auroc(np.array([0, 0, 1, 1]), PROBS, n_boot=40)
    assert out["value"] == pytest.approx(0.75)
    assert out["ci"] is not None and out["ci"][0] <= 0.75 <= out["ci"][1]
    assert switched_auroc(np.array([0, 1, 2, 1]), PROBS)["value"] is None
    three = np.full((4, 3), 1 / 3)
    assert switched_auroc(np.array([0, 0, 1, 1]), three) == {"value": None, "ci": None}
    assert switched_auroc(np.ones(4, dtype=int), PROBS)["value"] is None


def test_roc_curve_points_thinned_with_endpoints():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    probs = binary(np.clip(0.3 * labels + 0.7 * rng.random(1000), 0, 1))
    fpr, tpr, _ = roc_curve(labels, probs[:, 1])
    assert fpr.size > 50
    pts = roc_curve_points(labels, probs, max_points=50)
    assert 2 <= len(pts["fpr"]) <= 50 and len(pts["fpr"]) == len(pts["tpr"])
    assert (pts["fpr"][0], pts["tpr"][0]) == (0.0, 0.0)
    assert (pts["fpr"][-1], pts["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(pts["fpr"]) >= 0) and np.all(np.diff(pts["tpr"]) >= 0)
    assert plain_types(pts)
    full = roc_curve_points(labels, probs, max_points=10_000)
    np.testing.assert_allclose(full["fpr"], fpr)
    np.testing.assert_allclose(full["tpr"], tpr)
    assert roc_curve_points(np.ones(4, dtype=int), PROBS) is None
    assert roc_curve_points(np.array([0, 1, 2]), np.full((3, 3), 1 / 3)) is None


def test_bootstrap_resamples_patients_when_they_have_several_images():
    """Ten copies of each patient's image are one patient's evidence, not ten: the patient-level interval is wider,
    and with one image per patient both bootstraps are the same."""
    from mimmx.metrics import bootstrap_ci

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = np.clip(labels * 0.3 + rng.random(40) * 0.7, 0, 1)
    probs = np.stack([1 - scores, scores], axis=1)
    repeated = (np.repeat(labels, 10), np.repeat(probs, 10, axis=0))
    patients = np.repeat(np.arange(40), 10)
    rows = bootstrap_ci(auroc, repeated, n_boot=300, seed=0)
    by_patient = bootstrap_ci(auroc, repeated, n_boot=300, seed=0, clusters=patients)
    assert by_patient[1] - by_patient[0] > 2 * (rows[1] - rows[0])
    single = bootstrap_ci(auroc, (labels, probs), n_boot=100, seed=0)
    assert bootstrap_ci(auroc, (labels, probs), n_boot=100, seed=0, clusters=np.arange(40)) == single
