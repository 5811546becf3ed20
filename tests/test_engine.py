"""MIMMXTrainer: alternating critic/encoder steps, outputs for handlers, ERM switch, NaN guard."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader

from mimmx.engines import MIMMXTrainer
from mimmx.errors import ConfigError, TrainingError
from mimmx.handlers import TrainingHistory
from mimmx.mi import PairwiseMI
from mimmx.networks import MIMMXNet

FACTORS = [{"name": "sex", "classes": [0, 1]}, {"name": "age", "classes": [0, 1]}]


def _data(n: int = 32, nan: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        y = i % 2
        img = torch.rand(1, 16, 16, generator=g) + y
        if nan:
            img[0, 0, 0] = float("nan")
        items.append({"image": img, "label": y, "sex": (i // 2) % 2, "age": (i // 4) % 2})
    return items


def _trainer(mi_lambda: float = 0.5, estimator: str = "mine", nan: bool = False, **kwargs) -> MIMMXTrainer:
    torch.manual_seed(0)
    net = MIMMXNet(2, 1, 2, FACTORS, partition_dim=4, backbone_kwargs={"channels": (4, 8), "strides": (2, 2)})
    mi = PairwiseMI(net.partition_dims, estimator=estimator)
    critic_opt = torch.optim.Adam(mi.parameters(), lr=1e-3) if mi.has_critic else None
    return MIMMXTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=DataLoader(_data(nan=nan), batch_size=8),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        factors=FACTORS,
        mi_estimator=mi,
        critic_optimizer=critic_opt,
        mi_lambda=mi_lambda,
        **kwargs,
    )


def test_iteration_outputs_every_head_pair_and_weight():
    trainer = _trainer()
    history = TrainingHistory()
    history.attach(trainer)
    critic_before = [p.detach().clone() for p in trainer.mi_estimator.parameters()]
    trainer.run()
    out = trainer.state.output[0]  # decollated: per-sample dicts with the iteration's scalars
    for key in ("loss", "ce_causal", "ce_sex", "ce_age", "mi_causal|sex", "mi_causal|age", "mi_sex|age"):
        assert key in out
    assert {"weight_causal|sex", "weight_causal|age", "weight_sex|age", "mi_scale"} <= set(out)
    assert 0 < out["mi_scale"] <= 1
    assert len(history.history) == 2 and history.history[-1]["epoch"] == 2
    assert "train_mi_causal|sex" in trainer.state.metrics
    changed = [not torch.equal(a, b.detach()) for a, b in zip(critic_before, trainer.mi_estimator.parameters())]
    assert any(changed), "critic parameters were not updated"


def test_lambda_zero_is_plain_erm_loss():
    trainer = _trainer(mi_lambda=0.0)
    trainer.run()
    out = trainer.state.output[0]
    weights = trainer.head_weights
    expected = sum(weights[h] * out[f"ce_{h}"] for h in ("causal", "sex", "age"))
    assert out["loss"] == pytest.approx(expected, rel=1e-5)


def test_mi_term_enters_the_loss():
    trainer = _trainer(mi_lambda=1.0, estimator="dcor", adaptive_scale=False, weight_power=0.0)
    trainer.run()
    out = trainer.state.output[0]
    ce = sum(trainer.head_weights[h] * out[f"ce_{h}"] for h in ("causal", "sex", "age"))
    assert out["mi_total"] > 0
    assert out["loss"] == pytest.approx(ce + out["mi_total"], rel=1e-4)


def test_nan_loss_stops_and_names_the_iteration():
    trainer = _trainer(nan=True)
    with pytest.raises(TrainingError, match=r"epoch 1, iteration 1"):
        trainer.run()


def test_config_errors():
    with pytest.raises(ConfigError, match="mi_lambda"):
        _trainer(mi_lambda=-1)
    net = MIMMXNet(2, 1, 2, FACTORS, partition_dim=4)
    with pytest.raises(ConfigError, match="factors the network was built with"):
        MIMMXTrainer("cpu", 1, [], net, torch.optim.Adam(net.parameters()), factors=FACTORS[:1], mi_lambda=0)
    with pytest.raises(ConfigError, match="mi_estimator is required"):
        MIMMXTrainer("cpu", 1, [], net, torch.optim.Adam(net.parameters()), factors=FACTORS, mi_lambda=0.5)
