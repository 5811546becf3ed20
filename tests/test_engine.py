"""MIMMXTrainer: a sum of loss terms; critic steps, outputs for handlers, ERM switch, NaN guard, config errors."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader

from mimmx.engines import MIMMXTrainer
from mimmx.errors import ConfigError, TrainingError
from mimmx.handlers import TrainingHistory
from mimmx.losses import FactorAdversaryTerm, HeadCrossEntropy, PairwiseMITerm
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


def _net() -> MIMMXNet:
    return MIMMXNet(2, 1, 2, FACTORS, partition_dim=4, backbone_kwargs={"channels": (4, 8), "strides": (2, 2)})


def _trainer(
    mi_lambda: float = 0.5, estimator: str = "mine", nan: bool = False, adversary: float = 0.0, **mi_kwargs
) -> MIMMXTrainer:
    torch.manual_seed(0)
    net = _net()
    terms = [HeadCrossEntropy(FACTORS)]
    if adversary:
        terms.append(FactorAdversaryTerm(4, FACTORS, weight=adversary))
    mi = PairwiseMI(net.partition_dims, estimator=estimator)
    terms.append(PairwiseMITerm(mi, mi_lambda=mi_lambda, factors=FACTORS, **mi_kwargs))
    return MIMMXTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=DataLoader(_data(nan=nan), batch_size=8),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        factors=FACTORS,
        loss_terms=terms,
    )


def _head_ce(out: dict) -> float:
    return sum(out[f"ce_{h}"] for h in ("causal", "sex", "age"))  # every head weight is 1


def test_iteration_outputs_every_head_pair_and_weight():
    trainer = _trainer()
    history = TrainingHistory()
    history.attach(trainer)
    critic = trainer.objective["mi"].estimator
    critic_before = [p.detach().clone() for p in critic.parameters()]
    trainer.run()
    out = trainer.state.output[0]  # decollated: per-sample dicts with the iteration's scalars
    for key in ("loss", "ce_causal", "ce_sex", "ce_age", "mi_causal|sex", "mi_causal|age", "mi_sex|age"):
        assert key in out
    assert {"weight_causal|sex", "weight_causal|age", "weight_sex|age", "mi_scale"} <= set(out)
    assert 0 < out["mi_scale"] <= 1
    assert len(history.history) == 2 and history.history[-1]["epoch"] == 2
    assert "train_mi_causal/sex" in trainer.state.metrics
    changed = [not torch.equal(a, b.detach()) for a, b in zip(critic_before, critic.parameters())]
    assert any(changed), "critic parameters were not updated"


def test_lambda_zero_is_plain_erm_loss():
    trainer = _trainer(mi_lambda=0.0)
    critic_before = [p.detach().clone() for p in trainer.objective["mi"].estimator.parameters()]
    trainer.run()
    out = trainer.state.output[0]
    assert out["loss"] == pytest.approx(_head_ce(out), rel=1e-5)
    assert not any(k.startswith(("mi_", "critic_loss")) for k in out)
    after = trainer.objective["mi"].estimator.parameters()
    assert all(torch.equal(a, b) for a, b in zip(critic_before, after)), "lambda 0 must not train the critics"


def test_mi_term_enters_the_loss():
    trainer = _trainer(mi_lambda=1.0, estimator="dcor", adaptive_scale=False, weight_power=0.0)
    trainer.run()
    out = trainer.state.output[0]
    assert out["mi_total"] > 0
    assert out["loss"] == pytest.approx(_head_ce(out) + out["mi_total"], rel=1e-4)


def test_adversary_and_mi_both_enter_the_loss():
    """The old trainer dropped the adversary term whenever the MI term was on."""
    trainer = _trainer(mi_lambda=1.0, estimator="dcor", adaptive_scale=False, weight_power=0.0, adversary=0.5)
    trainer.run()
    out = trainer.state.output[0]
    adversary = 0.5 * (out["adv_sex"] + out["adv_age"])
    assert out["mi_total"] > 0 and adversary > 0
    assert out["loss"] == pytest.approx(_head_ce(out) + adversary + out["mi_total"], rel=1e-4)


def test_nan_loss_stops_and_names_the_iteration():
    trainer = _trainer(nan=True)
    with pytest.raises(TrainingError, match=r"epoch 1, iteration 1"):
        trainer.run()


def test_config_errors():
    with pytest.raises(ConfigError, match="mi_lambda"):
        _trainer(mi_lambda=-1)
    net = _net()

    def build(terms, factors=FACTORS):
        return MIMMXTrainer("cpu", 1, [], net, torch.optim.Adam(net.parameters()), factors=factors, loss_terms=terms)

    with pytest.raises(ConfigError, match="factors the network was built with"):
        build([HeadCrossEntropy()], factors=FACTORS[:1])
    with pytest.raises(ConfigError, match=r"loss_terms\[1\]: expected a mimmx.losses.LossTerm, got str"):
        build([HeadCrossEntropy(), "@loss#mi"])
    with pytest.raises(ConfigError, match=r"loss_terms\[1\]: partition_dim 8 but the network's is 4"):
        build([HeadCrossEntropy(), FactorAdversaryTerm(8, FACTORS)])
    with pytest.raises(ConfigError, match=r"loss_terms\[1\]: a second term named 'head_ce'"):
        build([HeadCrossEntropy(), HeadCrossEntropy()])
    with pytest.raises(ConfigError, match="no task term"):
        build([FactorAdversaryTerm(4, FACTORS)])
    with pytest.raises(ConfigError, match="non-empty list"):
        build([])
