"""Tests of the leakage probes and the post-hoc MI estimate on features with planted (in)dependence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mimmx.mi import MINE
from mimmx.probes import _dv_bound, leakage_probes, posthoc_mi

N = 600


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def planted():
    """Causal partition = target + noise, sex partition = sex + noise; target and sex independent."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, N)
    sex = rng.integers(0, 2, N)
    causal = 2.0 * target[:, None] * np.array([1.0, 1.0, 0, 0, 0, 0]) + rng.normal(size=(N, 6))
    sex_part = 2.0 * sex[:, None] * np.array([1.0, 1.0, 0, 0]) + rng.normal(size=(N, 4))
    return rng, target, sex, causal, sex_part


def test_probes_find_planted_information_and_nothing_else(planted):
    _, target, sex, causal, sex_part = planted
    out = leakage_probes({"causal": causal, "sex": sex_part}, {"causal": target, "sex": sex}, folds=5, knn_k=15)
    assert out["folds"] == 5 and out["n"] == N
    for probe in ("logistic", "knn"):
        assert out[probe]["causal"]["causal"] > 0.9
        assert out[probe]["sex"]["sex"] > 0.9
        assert abs(out[probe]["causal"]["sex"] - 0.5) < 0.1
        assert abs(out[probe]["sex"]["causal"] - 0.5) < 0.1


def test_probes_detect_sex_leaking_into_causal_partition(planted):
    _, target, sex, causal, sex_part = planted
    leaky = causal + 2.0 * sex[:, None] * np.array([0, 0, 1.0, 1.0, 0, 0])
    out = leakage_probes({"causal": leaky, "sex": sex_part}, {"causal": target, "sex": sex})
    for probe in ("logistic", "knn"):
        assert out[probe]["causal"]["sex"] > 0.8
        assert out[probe]["causal"]["causal"] > 0.9


def test_probes_detect_nonlinear_leakage_with_knn(planted):
    rng, target, sex, causal, _ = planted
    # Sex sets the radius of a ring around the origin: no linear direction separates it, neighbours do.
    angle = rng.uniform(0, 2 * math.pi, N)
    radius = np.where(sex == 1, 3.0, 1.0) + 0.2 * rng.normal(size=N)
    ring = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    out = leakage_probes({"causal": np.hstack([causal, ring])}, {"sex": sex})
    assert out["knn"]["causal"]["sex"] > 0.9
    assert out["logistic"]["causal"]["sex"] < 0.7


def test_probes_multiclass_and_degenerate_labels(planted):
    rng, _, _, _, _ = planted
    site = rng.integers(0, 3, N)
    feats = {"site": 2.0 * np.eye(3)[site] + rng.normal(size=(N, 3)), "noise": rng.normal(size=(N, 3))}
    rare = np.zeros(N, dtype=int)
    rare[:3] = 1  # three members: folds drop from 5 to 3
    lonely = np.zeros(N, dtype=int)
    lonely[0] = 1  # one member: no stratified split
    labels = {"site": site, "single": np.zeros(N, dtype=int), "lonely": lonely, "rare": rare}
    out = leakage_probes(feats, labels, folds=5)
    assert out["logistic"]["site"]["site"] > 0.9 and out["knn"]["site"]["site"] > 0.9
    assert abs(out["logistic"]["noise"]["site"] - 0.5) < 0.1
    for probe in ("logistic", "knn"):
        for part in feats:
            assert out[probe][part]["single"] is None
            assert out[probe][part]["lonely"] is None
            assert out[probe][part]["rare"] is not None and 0.0 <= out[probe][part]["rare"] <= 1.0
    with pytest.raises(ValueError):
        leakage_probes({"a": np.zeros((5, 2))}, {"y": np.zeros(4, dtype=int)})


@pytest.fixture(scope="module")
def mi_estimates():
    """4-d Gaussians: a, b independent; c = a + small noise; d correlated with b at r = 0.6 per component.

    True MI: I(a; c) = 2 ln(101) = 9.2 nats, I(b; d) = -2 ln(1 - 0.36) = 0.89 nats, every other pair 0.
    """
    rng = np.random.default_rng(0)
    n = 1000
    a, b = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    c = a + 0.1 * rng.normal(size=(n, 4))
    d = 0.6 * b + 0.8 * rng.normal(size=(n, 4))
    parts = {"a": a, "b": b, "c": c, "d": d}
    fit = {k: v[:600] for k, v in parts.items()}
    ev = {k: v[600:] for k, v in parts.items()}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    out = posthoc_mi(fit, ev, steps=80, hidden=32, batch_size=64, lr=3e-3, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # caller's RNG untouched
    return out, fit, ev


def test_posthoc_mi_independent_and_dependent(mi_estimates):
    out, _, _ = mi_estimates
    assert list(out) == ["a|b", "a|c", "a|d", "b|c", "b|d", "c|d"]
    assert all(type(v) is float for v in out.values())
    for pair in ("a|b", "a|d", "b|c", "c|d"):
        assert 0.0 <= out[pair] < 0.05
    assert out["a|c"] > 0.3
    assert 0.6 < out["b|d"] < 1.1


def test_posthoc_mi_is_deterministic_for_a_seed(mi_estimates):
    out, fit, ev = mi_estimates
    pair_fit, pair_ev = {"a": fit["a"], "c": fit["c"]}, {"a": ev["a"], "c": ev["c"]}
    first = posthoc_mi(pair_fit, pair_ev, steps=20, hidden=16, seed=5)
    assert posthoc_mi(pair_fit, pair_ev, steps=20, hidden=16, seed=5) == first
    assert posthoc_mi(pair_fit, pair_ev, steps=20, hidden=16, seed=6) != first
    with pytest.raises(ValueError):
        posthoc_mi({"a": fit["a"]}, {"a": ev["a"]})
    with pytest.raises(KeyError):
        posthoc_mi(fit, {"a": ev["a"]})


def test_dv_bound_in_chunks_matches_full_grid():
    torch.manual_seed(0)
    critic = MINE(3, 2, hidden=8).eval()
    a, b = torch.randn(37, 3), torch.randn(37, 2)
    off = ~torch.eye(37, dtype=torch.bool)
    with torch.no_grad():
        t = critic.scores(a, b).double()
        full = critic(a, b).item()
    expected = t.diagonal().mean() - (torch.logsumexp(t[off], 0) - math.log(37 * 36))
    chunked = _dv_bound(critic, a, b, max_elements=5 * 37 * 8)  # 5 rows per chunk, last chunk partial
    assert chunked == pytest.approx(float(expected), abs=1e-5)
    assert chunked == pytest.approx(full, abs=1e-4)  # MINE's own value in eval mode


def test_probe_folds_keep_a_patients_images_together():
    """Ten images per patient, the label a patient trait: grouped folds never test on a patient they trained on."""
    from mimmx.probes import _folds

    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(30), 10)
    y = np.repeat(rng.integers(0, 2, 30), 10)
    for train, test in _folds(y, 5, 0, patients):
        assert not set(patients[train]) & set(patients[test])
    single = _folds(y, 5, 0, np.arange(300))  # one image per patient: the plain stratified folds
    assert [t.tolist() for _, t in single] == [t.tolist() for _, t in _folds(y, 5, 0, None)]
