"""Group-balanced AUROC (model selection), decision leakage, and the selection checkpoints handler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import roc_auc_score

from mimmx.handlers import SelectionCheckpoints
from mimmx.metrics import bootstrap_ci, decision_leakage, decision_leakage_null, group_balanced_auroc


def test_group_balanced_auroc_hand_computed() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.3, 0.5, 0.9])
    groups = np.array([0, 0, 1, 2, 3])
    # weights 1/2, 1/2, 1, 1, 1. Pairs (pos, neg) with pos > neg: 0.5>0.1 (1 x 1/2), 0.5>0.3 (1 x 1), and 0.9 above
    # all three (1/2 + 1/2 + 1) -> 3.5 of a total weight 2 x 2 = 4
    assert group_balanced_auroc(labels, scores, groups) == pytest.approx(3.5 / 4)
    assert roc_auc_score(labels, scores) == pytest.approx(5 / 6)  # unweighted differs
    assert group_balanced_auroc(np.zeros(3), np.ones(3), np.zeros(3)) is None


def test_decision_leakage_planted_vs_none() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    z = rng.integers(0, 2, n)  # independent of y, as on test_balanced
    clean = y + rng.normal(0, 1, n)
    leaky = y + 0.8 * z + rng.normal(0, 1, n)  # the output moves with the factor inside each class
    inverted = y - 0.8 * z + rng.normal(0, 1, n)  # the other direction counts as well
    assert decision_leakage(y, clean, z) == pytest.approx(0.5, abs=0.03)
    assert decision_leakage(y, leaky, z) > 0.68
    assert decision_leakage(y, inverted, z) > 0.68
    assert decision_leakage(np.zeros(4), np.arange(4.0), np.zeros(4)) is None


def test_decision_leakage_null_is_the_floor_of_a_model_without_the_factor() -> None:
    """The folded AUROC reads above 0.5 on a finite split even with no dependence; the permutation quantile is that
    floor: above it for a planted dependence, rarely below it without one, lower on a larger split."""
    rng = np.random.default_rng(1)

    def split(n: int, planted: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y, z = rng.integers(0, 2, n), rng.integers(0, 2, n)
        return y, y + planted * z + rng.normal(0, 1, n), z

    y, clean, z = split(600, 0.0)
    floor = decision_leakage_null(y, clean, z, n_perm=200, seed=0)
    assert 0.51 < floor < 0.56  # about 0.5 + 1.6 sd of a folded AUROC over 2 classes of 150 vs 150
    assert decision_leakage_null(y, clean, z, n_perm=200, seed=0) == floor  # seeded
    misses = sum(decision_leakage(*split(600, 0.0)) > floor for _ in range(100))
    assert misses <= 12  # about 5 of 100 for a 95% quantile
    y, leaky, z = split(600, 0.5)
    assert decision_leakage(y, leaky, z) > floor + 0.05
    y4, clean4, z4 = split(6000, 0.0)
    assert decision_leakage_null(y4, clean4, z4, n_perm=100, seed=0) < floor - 0.01
    assert decision_leakage_null(y, clean, z, n_perm=0) is None
    assert decision_leakage_null(np.zeros(4), np.arange(4.0), np.zeros(4)) is None

    ci = bootstrap_ci(decision_leakage, (y, leaky, z), n_boot=200, seed=0)
    assert ci[0] < decision_leakage(y, leaky, z) < ci[1] and ci[1] - ci[0] < 0.1


def test_selection_checkpoints_saves_best_balanced_and_last(tmp_path) -> None:
    net = torch.nn.Linear(1, 2)
    factors = [{"name": "sex", "classes": [0, 1]}]
    handler = SelectionCheckpoints(net, str(tmp_path), factors)
    y = [0, 0, 1, 1, 0, 1]
    z = [0, 0, 1, 1, 1, 0]
    runs = iter([[0.1, 0.2, 0.8, 0.9, 0.3, 0.7], [0.9, 0.8, 0.2, 0.1, 0.7, 0.3]])  # good, then inverted

    def step(engine, batch):
        return [{"pred": torch.tensor([1 - s, s])} for s in engine.state.scores]

    evaluator = Engine(step)
    handler.attach(evaluator)
    data = [[{"label": torch.tensor(a), "sex": torch.tensor(b)} for a, b in zip(y, z)]]
    evaluator.state.scores = next(runs)
    evaluator.run(data, max_epochs=1)
    assert evaluator.state.metrics["val_balanced_auc"] == pytest.approx(1.0)
    # inside each class the scores order the factor perfectly (class 0: z=1 highest; class 1: z=0 lowest)
    assert evaluator.state.metrics["val_decision_leakage_sex"] == pytest.approx(1.0)
    assert (tmp_path / "model_balanced_val.pt").is_file() and (tmp_path / "model_last.pt").is_file()
    first = (tmp_path / "model_balanced_val.pt").stat().st_mtime_ns
    with torch.no_grad():
        net.bias.fill_(7.0)
    evaluator.state.scores = next(runs)
    evaluator.run(data, max_epochs=1)
    assert evaluator.state.metrics["val_balanced_auc"] == pytest.approx(0.0)
    assert (tmp_path / "model_balanced_val.pt").stat().st_mtime_ns == first  # not better: kept
    assert torch.load(tmp_path / "model_last.pt", weights_only=True)["bias"].tolist() == [7.0, 7.0]
