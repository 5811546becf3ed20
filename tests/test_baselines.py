"""Baselines as loss terms and data options: group ids, balanced sampler, GroupDRO, gradient reversal, balanced MI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from mimmx.baselines import FactorAdversary, GradientReversal, GroupDRO, group_balanced_sampler, group_index
from mimmx.engines import MIMMXTrainer
from mimmx.errors import ConfigError, DataError
from mimmx.factors import parse_factors
from mimmx.losses import FactorAdversaryTerm, GroupDROCrossEntropy, HeadCrossEntropy
from mimmx.methods import METHODS, method_arguments
from mimmx.mi import PairwiseMI
from mimmx.networks import MIMMXNet

FACTORS = [{"name": "sex", "classes": [0, 1]}, {"name": "age", "classes": [0, 1, 2]}]


def test_group_index_is_mixed_radix():
    specs = parse_factors(FACTORS)
    g = group_index(np.array([0, 1, 1]), [np.array([0, 1, 0]), np.array([2, 0, 1])], specs)
    # y * 6 + sex * 3 + age
    assert g.tolist() == [2, 9, 7]


def test_balanced_sampler_draws_groups_equally():
    # 90 items in group (y=0, sex=0, age=0), 10 in (y=1, sex=1, age=2)
    items = [{"label": 0, "sex": 0, "age": 0}] * 90 + [{"label": 1, "sex": 1, "age": 2}] * 10
    sampler = group_balanced_sampler(items, FACTORS, seed=1)
    drawn = np.array(list(iter(sampler)))
    assert len(drawn) == 100
    assert 0.35 < (drawn >= 90).mean() < 0.65  # the minority group gets about half the draws instead of 10%
    with pytest.raises(DataError, match="item 1 has no"):
        group_balanced_sampler([{"label": 0, "sex": 0, "age": 0}, {"label": 0, "sex": 0}], FACTORS)


def test_group_dro_upweights_the_worst_group():
    dro = GroupDRO(4, eta=1.0)
    losses = torch.tensor([0.1, 0.1, 2.0, 2.0])
    groups = torch.tensor([0, 0, 3, 3])
    loss = dro(losses, groups)
    assert dro.q[3] > dro.q[0] and dro.q[3] > dro.q[1]
    # weighted over the present groups only: q0*0.1 + q3*2 over q0 + q3
    expected = (dro.q[0] * 0.1 + dro.q[3] * 2.0) / (dro.q[0] + dro.q[3])
    assert torch.isclose(loss, expected)
    with pytest.raises(ConfigError, match="eta"):
        GroupDRO(4, eta=0.0)
    with pytest.raises(ConfigError, match=r"loss#group_dro#eta must be > 0"):
        GroupDROCrossEntropy(2, FACTORS, eta=0.0)


def test_gradient_reversal_flips_the_gradient():
    x = torch.ones(3, requires_grad=True)
    GradientReversal(2.0)(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))
    adversary = FactorAdversary(4, FACTORS)
    out = adversary(torch.randn(5, 4))
    assert out["sex"].shape == (5, 2) and out["age"].shape == (5, 3)


def _trainer(terms) -> MIMMXTrainer:
    torch.manual_seed(0)
    net = MIMMXNet(2, 1, 2, FACTORS[:1], partition_dim=4, backbone_kwargs={"channels": (4, 8), "strides": (2, 2)})
    items = [{"image": torch.rand(1, 16, 16) + (i % 2), "label": i % 2, "sex": (i // 2) % 2} for i in range(16)]
    return MIMMXTrainer(
        "cpu", 2, DataLoader(items, batch_size=8), net, torch.optim.Adam(net.parameters(), lr=1e-3), FACTORS[:1], terms
    )


def test_trainer_group_dro_and_adversary_terms():
    trainer = _trainer([GroupDROCrossEntropy(2, FACTORS[:1], eta=0.5)])
    trainer.run()
    out = trainer.state.output[0]
    assert "dro_causal" in out and "ce_sex" in out
    q = trainer.objective["group_dro"].dro.q
    assert q.numel() == 4 and torch.isclose(q.sum(), torch.tensor(1.0)) and not torch.allclose(q, q[0])
    assert "group_dro.dro.q" in trainer.objective.state_dict()  # saved in checkpoints

    trainer = _trainer([HeadCrossEntropy(), FactorAdversaryTerm(4, FACTORS[:1])])
    adversary = trainer.objective["adversary"].adversary
    before = [p.detach().clone() for p in adversary.parameters()]
    trainer.run()
    assert "adv_sex" in trainer.state.output[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, adversary.parameters())), "adversary did not train"
    assert any(k.startswith("adversary.adversary.") for k in trainer.objective.state_dict())  # saved in checkpoints
    with pytest.raises(ConfigError, match="must be >= 0"):
        FactorAdversaryTerm(4, FACTORS[:1], weight=-1.0)


def test_balanced_mi_resamples_label_pairs_equally():
    torch.manual_seed(0)
    mi = PairwiseMI({"causal": 2, "sex": 2}, estimator="dcor", balance=True)
    labels = {"causal": torch.tensor([0] * 30 + [1] * 2), "sex": torch.tensor([0] * 30 + [1] * 2)}
    index = mi._balanced_index(labels, "causal", "sex")
    assert 0.3 < (index >= 30).float().mean() < 0.7  # the 2 rare samples make up about half of the resample
    with pytest.raises(ValueError, match="needs labels"):
        mi({"causal": torch.randn(32, 2), "sex": torch.randn(32, 2)})


def test_balanced_mi_removes_the_target_floor():
    """Causal features that encode only y share MI with a factor tied to y, unless the batch is balanced."""
    torch.manual_seed(0)
    n = 400
    y = torch.randint(0, 2, (n,))
    z = torch.where(torch.rand(n) < 0.9, y, 1 - y)  # factor agrees with the target 90% of the time
    parts = {
        "causal": y[:, None].float() + 0.1 * torch.randn(n, 1),
        "sex": z[:, None].float() + 0.1 * torch.randn(n, 1),
    }
    labels = {"causal": y, "sex": z}
    raw = PairwiseMI({"causal": 1, "sex": 1}, estimator="dcor")(parts)["causal|sex"]
    balanced = PairwiseMI({"causal": 1, "sex": 1}, estimator="dcor", balance=True)(parts, labels=labels)["causal|sex"]
    assert raw > 0.6 and balanced < 0.2


def test_every_method_is_a_set_of_overrides():
    shipped = "erm resample groupdro adversarial cond_adversarial dcor mimm_single mimmx oracle".split()
    assert [m for m in METHODS if m in shipped] == shipped
    # every method but MIMM-X's averaged settings pins the plain last-step weights it was measured with
    assert method_arguments("groupdro") == ["--average_epochs", "0", "--loss_terms", "$[@loss#group_dro]"]
    assert method_arguments("mimmx") == []
    assert method_arguments("cond_adversarial") == [
        "--average_epochs",
        "0",
        "--loss_terms",
        "$[@loss#head_ce, @loss#adversary]",
        "--loss#adversary#conditional",
        "True",
        "--loss#adversary#adversary_steps",
        "5",
    ]
    with pytest.raises(KeyError, match="unknown method"):
        method_arguments("magic")
