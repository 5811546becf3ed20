"""Group-balanced subsampling and deep feature reweighting (mimmx.baselines)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from mimmx.baselines import group_balanced_subsample, item_groups, refit_causal_head
from mimmx.methods import METHODS

FACTORS = [{"name": "sex", "classes": [0, 1]}, {"name": "age", "classes": [0, 1]}]


def _items(n: int = 1000, rho: float = 0.9, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sex = np.where(rng.random(n) < rho, y, 1 - y)
    age = np.where(rng.random(n) < 0.7, y, 1 - y)
    return [{"image": f"img{i}.png", "label": int(y[i]), "sex": int(sex[i]), "age": int(age[i])} for i in range(n)]


def test_group_balanced_subsample_equal_groups_no_duplicates_deterministic() -> None:
    items = _items()
    counts = Counter(item_groups(items, FACTORS).tolist())
    smallest = min(counts.values())
    sub = group_balanced_subsample(items, FACTORS, seed=3)
    sub_counts = Counter(item_groups(sub, FACTORS).tolist())
    assert set(sub_counts) == set(counts) and set(sub_counts.values()) == {smallest}
    assert len(sub) == smallest * len(counts)
    names = [s["image"] for s in sub]
    assert len(set(names)) == len(names)
    assert group_balanced_subsample(items, FACTORS, seed=3) == sub
    assert [s["image"] for s in group_balanced_subsample(items, FACTORS, seed=4)] != names
    # the subsample has the factors independent of the target: rho(sex) == 0.5 exactly
    assert np.mean([s["sex"] == s["label"] for s in sub]) == 0.5


def test_subsample_and_dfr_methods_are_config_switches() -> None:
    assert "group_balanced_subsample(" in METHODS["subsample"]["train#dataset#data"]
    assert METHODS["dfr"]["dfr"] is True


class _FeatureNet(nn.Module):
    """The image *is* the causal partition: a stand-in encoder, so the test isolates the head refit."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"causal": nn.Linear(2, 2)})

    def partitions(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"causal": x.float()}


def _feature_items(n: int, rho: float, seed: int) -> list[dict]:
    """Feature 0: the core signal (noisy); feature 1: the spurious factor (clean), equal to y with prob rho."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = np.where(rng.random(n) < rho, y, 1 - y)
    x = np.stack([y + rng.normal(0, 0.6, n), z + rng.normal(0, 0.1, n)], axis=1).astype(np.float32)
    return [{"image": x[i], "label": int(y[i]), "sex": int(z[i])} for i in range(n)]


def test_refit_causal_head_uses_the_core_feature(tmp_path) -> None:
    train = _feature_items(3000, rho=0.95, seed=0)
    test = _feature_items(2000, rho=0.5, seed=1)  # balanced: the shortcut is worthless here
    x_train = np.stack([t["image"] for t in train])
    y_train = np.array([t["label"] for t in train])
    x_test = np.stack([t["image"] for t in test])
    y_test = np.array([t["label"] for t in test])
    erm = LogisticRegression(max_iter=2000).fit(x_train, y_train)  # what ERM's head does on these features
    assert abs(erm.coef_[0, 1]) > abs(erm.coef_[0, 0])  # the spurious feature dominates

    net = _FeatureNet()
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    files = [str(path), str(tmp_path / "no.pt")]
    done = refit_causal_head(net, train, None, [{"name": "sex", "classes": [0, 1]}], files)
    assert list(done) == [str(path)]  # a missing file is skipped
    state = torch.load(path, weights_only=True)
    w = (state["heads.causal.weight"][1] - state["heads.causal.weight"][0]).numpy()
    assert abs(w[0]) > 2 * abs(w[1])  # the refit head leans on the core feature
    with torch.no_grad():
        net.load_state_dict(state)
        pred = net.heads["causal"](torch.as_tensor(x_test)).argmax(1).numpy()
    dfr_acc, erm_acc = (pred == y_test).mean(), erm.score(x_test, y_test)
    assert dfr_acc > erm_acc + 0.05, (dfr_acc, erm_acc)
