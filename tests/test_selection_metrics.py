"""Group-balanced AUROC (model selection), decision leakage, and the selection checkpoints handler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import roc_auc_score

from mimmx.handlers import SelectionCheckpoints
from mimmx.metrics import decision_leakage, group_balanced_auroc


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
