"""The vectorised bootstrap gives the intervals of the per-resample reference (scikit-learn once per resample)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mimmx import metrics
from mimmx.evaluation import score_split
from mimmx.factors import parse_factors
from mimmx.resampling import Resamples

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reference_bootstrap", ROOT / "scripts" / "reference_bootstrap.py")
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)

NAMES = ("auroc", "auprc", "accuracy", "balanced_accuracy", "ece")


def tied_data(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax-like scores rounded to 0.05, so many scores tie (as a small model's outputs do)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.2 * np.eye(n_classes)[labels]
    probs = np.round(20 * np.exp(logits) / np.exp(logits).sum(1, keepdims=True)) / 20
    probs[:, -1] = 1.0 - probs[:, :-1].sum(1)
    return labels, probs


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("clustered", [False, True])
def test_intervals_equal_the_per_resample_reference(n_classes, clustered):
    labels, probs = tied_data(150, n_classes, seed=n_classes)
    assert np.unique(probs[:, 1]).size <= 21  # plenty of ties
    clusters = np.random.default_rng(7).integers(0, 60, 150) if clustered else None
    for name in NAMES:
        new = metrics.bootstrap_ci(getattr(metrics, name), (labels, probs), n_boot=300, seed=5, clusters=clusters)
        old = reference.bootstrap_ci(getattr(reference, name), (labels, probs), n_boot=300, seed=5, clusters=clusters)
        assert new is not None and old is not None, name
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-12, err_msg=name)
        value = getattr(metrics, name)(labels, probs)
        assert value == pytest.approx(getattr(reference, name)(labels, probs), abs=1e-12), name


def test_every_resample_equals_scikit_learn_including_undefined_ones():
    """Small resamples often hold one class only: those must be undefined (NaN) exactly where the reference is None."""
    _, probs = tied_data(12, 3, seed=1)
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2])  # classes 1 and 2 missing from many resamples
    rs = Resamples.draw(12, 200, seed=0)
    for name in NAMES:
        got = metrics._VECTORISED[getattr(metrics, name)](labels, probs, rs)
        want = [getattr(reference, name)(labels[i], probs[i]) for i in rs.indices()]
        want = np.array([np.nan if w is None else w for w in want])
        assert np.isnan(want).any() or name in ("accuracy", "ece")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-12, err_msg=name)


def test_cluster_resamples_are_the_reference_draws():
    clusters = np.array([3, 1, 3, 2, 1, 1, 9])
    rs = Resamples.draw(7, 50, seed=11, clusters=clusters)
    old = reference._resamples(np.random.default_rng(11), 7, 50, clusters)
    assert len(rs.indices()) == 50
    for got, want in zip(rs.indices(), old):
        np.testing.assert_array_equal(got, want)


def test_a_whole_split_scores_as_with_the_reference():
    """score_split (the evaluation's bootstrap of every metric, group, cell and switched test) with either
    implementation: the same JSON up to float rounding."""
    labels, probs = tied_data(240, 2, seed=3)
    rng = np.random.default_rng(4)
    factors = parse_factors([{"name": "sex", "classes": ["F", "M"]}, {"name": "age", "classes": ["young", "old"]}])
    label_map = {"causal": labels, "sex": rng.integers(0, 2, 240), "age": rng.integers(0, 2, 240)}
    probs_map = {"causal": probs, "sex": tied_data(240, 2, seed=5)[1], "age": tied_data(240, 2, seed=6)[1]}
    patients = [f"p{i}" for i in rng.integers(0, 150, 240)]
    new = score_split(probs_map, label_map, factors, ["neg", "pos"], n_boot=200, seed=2, patients=patients)
    with reference.reference_metrics():
        old = score_split(probs_map, label_map, factors, ["neg", "pos"], n_boot=200, seed=2, patients=patients)
    assert metrics.bootstrap_ci is not reference.bootstrap_ci  # restored

    def close(a, b, path="split"):
        if isinstance(a, dict):
            assert a.keys() == b.keys(), path
            for k in a:
                close(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), path
            for i, (x, y) in enumerate(zip(a, b)):
                close(x, y, f"{path}[{i}]")
        elif isinstance(a, float):
            assert b == pytest.approx(a, abs=1e-12), path
        else:
            assert a == b, path

    close(new, old)
    assert new["causal"]["auroc"]["ci"] is not None
