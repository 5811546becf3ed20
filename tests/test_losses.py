"""Loss terms: the trainer's loss is the sum of its terms, conditional adversary, inner adversary steps, feature
queue, checkpointable term state, and config errors that name the term."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.utils import CommonKeys as Keys
from torch.nn import functional as F

from mimmx.engines import MIMMXTrainer
from mimmx.errors import ConfigError
from mimmx.factors import parse_factors
from mimmx.losses import (
    ConditionalDecisionGap,
    FactorAdversaryTerm,
    FeatureQueue,
    GroupDROCrossEntropy,
    HeadCrossEntropy,
    LossTerm,
    PairwiseMITerm,
    StepContext,
)
from mimmx.mi import PairwiseMI
from mimmx.networks import MIMMXNet

FACTORS = [{"name": "sex", "classes": [0, 1], "weight": 2.0}, {"name": "age", "classes": [0, 1]}]


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def _items(n: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(1, 16, 16, generator=g) + i % 2, "label": i % 2, "sex": (i // 2) % 2, "age": (i // 4) % 2}
        for i in range(n)
    ]


def _net() -> MIMMXNet:
    torch.manual_seed(0)
    return MIMMXNet(2, 1, 2, FACTORS, partition_dim=4, backbone_kwargs={"channels": (4, 8), "strides": (2, 2)})


def _terms(kinds: tuple[str, ...], net: MIMMXNet) -> list[LossTerm]:
    torch.manual_seed(1)
    terms: list[LossTerm] = [HeadCrossEntropy(FACTORS)]
    if "adversary" in kinds:
        terms.append(FactorAdversaryTerm(4, FACTORS, weight=0.7, conditional=True, adversary_steps=2))
    if "mi" in kinds:
        terms.append(PairwiseMITerm(PairwiseMI(net.partition_dims, estimator="mine", hidden=8), mi_lambda=3.0))
    if "queue" in kinds:
        mi = PairwiseMI(net.partition_dims, estimator="mine", hidden=8)
        terms.append(PairwiseMITerm(mi, mi_lambda=0.3, queue=FeatureQueue(20, net.partition_dims)))
    if "gap" in kinds:
        terms.append(ConditionalDecisionGap(FACTORS, weight=5.0))
    if "dro" in kinds:
        terms[0] = GroupDROCrossEntropy(2, FACTORS, eta=0.5)
    return terms


def _trainer(net: MIMMXNet, terms: list[LossTerm], epochs: int = 1, batch_size: int = 16) -> MIMMXTrainer:
    return MIMMXTrainer(
        "cpu",
        epochs,
        DataLoader(_items(), batch_size=batch_size),
        net,
        torch.optim.Adam(net.parameters(), lr=1e-3),
        FACTORS,
        terms,
    )


def _context(net: MIMMXNet, batch: dict) -> StepContext:
    features = net.features(batch["image"])
    parts = net.split(features)
    labels = {"causal": batch["label"].long(), "sex": batch["sex"].long(), "age": batch["age"].long()}
    return StepContext(net, features, parts, net.head_logits(parts), labels, parse_factors(FACTORS))


@pytest.mark.parametrize("kinds", [("adversary",), ("mi",), ("adversary", "mi"), ("mi", "gap")])
def test_trainer_loss_is_the_sum_of_the_terms(kinds):
    net = _net()
    terms = _terms(kinds, net)
    # the same terms, evaluated by hand on the same batch before the trainer's step
    ref_net, ref_terms = copy.deepcopy(net), copy.deepcopy(terms)
    batch = next(iter(DataLoader(_items(), batch_size=16)))
    trainer = _trainer(net, terms)
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: torch.manual_seed(7))  # MINE's shuffles
    trainer.run()
    out = trainer.state.output[0]

    torch.manual_seed(7)
    ref_net.train()
    ctx = _context(ref_net, batch)
    for term in ref_terms:
        term.check(ref_net, parse_factors(FACTORS), "term")  # as the trainer does (MI pair weights from the factors)
        term.critic_update(ctx)
    contributions = []
    for term in ref_terms:
        value, _ = term(ctx)
        contributions.append(float(value.detach()))
        if term.is_task_loss:
            ctx.task_loss = value
    assert len(contributions) == 1 + len(kinds) and all(abs(c) > 1e-3 for c in contributions)
    assert out[Keys.LOSS] == pytest.approx(sum(contributions), rel=1e-5)
    assert contributions[0] == pytest.approx(2.0 * out["ce_sex"] + out["ce_age"] + out["ce_causal"], rel=1e-5)
    if "adversary" in kinds:
        assert contributions[1] == pytest.approx(0.7 * (out["adv_sex"] + out["adv_age"]), rel=1e-5)


def test_conditional_adversary_reads_the_target():
    term = FactorAdversaryTerm(4, FACTORS, num_classes=3, conditional=True)
    first = term.adversary.heads["sex"][0]
    assert first.in_features == 4 + 3
    assert FactorAdversaryTerm(4, FACTORS, num_classes=3).adversary.heads["sex"][0].in_features == 4
    causal = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a = term.adversary(term.adversary_input(causal, y))["sex"]
    b = term.adversary(term.adversary_input(causal, (y + 1) % 3))["sex"]
    assert not torch.allclose(a, b), "changing only the target must change the adversary's output"


def test_conditional_adversary_reverses_only_the_causal_gradient():
    term = FactorAdversaryTerm(4, FACTORS, conditional=True)
    ctx = _context(_net(), next(iter(DataLoader(_items(), batch_size=16))))
    causal = ctx.parts["causal"].detach().requires_grad_(True)
    ctx.parts = {**ctx.parts, "causal": causal}
    value, _ = term(ctx)
    (through_term,) = torch.autograd.grad(value, causal)
    x = term.adversary_input(causal, ctx.labels["causal"])
    direct = sum(F.cross_entropy(head(x), ctx.labels[k]) for k, head in term.adversary.heads.items())
    (plain,) = torch.autograd.grad(direct, causal)
    assert plain.abs().sum() > 0 and torch.allclose(through_term, -plain, atol=1e-6)


def test_adversary_steps_train_the_adversary_and_leave_the_encoder():
    net = _net()
    term = FactorAdversaryTerm(4, FACTORS, conditional=True, adversary_steps=3)
    ctx = _context(net, next(iter(DataLoader(_items(), batch_size=16))))
    encoder = [p.detach().clone() for p in net.parameters()]
    adversary = [p.detach().clone() for p in term.adversary.parameters()]
    term.critic_update(ctx)
    assert all(torch.equal(a, b) for a, b in zip(encoder, net.parameters()))
    assert all(p.grad is None for p in net.parameters()), "inner steps must leave no gradient on the encoder"
    assert all(p.grad is None for p in term.adversary.parameters()), "nor on the adversary (the main step adds one)"
    assert any(not torch.equal(a, b) for a, b in zip(adversary, term.adversary.parameters()))
    assert term.optimizer.state_dict()["state"], "the adversary's Adam stepped"
    no_steps = FactorAdversaryTerm(4, FACTORS)
    assert no_steps.critic_update(ctx) == {} and no_steps.optimizer is None


def test_feature_queue_is_a_ring_buffer():
    queue = FeatureQueue(5, {"causal": 2, "sex": 1})
    assert len(queue) == 0 and queue.get()[0]["causal"].shape == (0, 2)

    def batch(start: int, n: int, grad: bool = False):
        rows = torch.arange(start, start + n, dtype=torch.float32)
        parts = {"causal": rows[:, None].repeat(1, 2).requires_grad_(grad), "sex": -rows[:, None]}
        return parts, {"causal": torch.arange(start, start + n) % 2, "sex": torch.arange(start, start + n)}

    queue.push(*batch(0, 3, grad=True))
    assert len(queue) == 3
    parts, labels = queue.get()
    assert parts["causal"][:, 0].tolist() == [0, 1, 2] and not parts["causal"].requires_grad
    queue.push(*batch(3, 4))  # wraps: rows 0 and 1 are overwritten
    parts, labels = queue.get()
    assert len(queue) == 5
    assert parts["causal"][:, 0].tolist() == [2, 3, 4, 5, 6] and parts["sex"][:, 0].tolist() == [-2, -3, -4, -5, -6]
    assert labels["sex"].tolist() == [2, 3, 4, 5, 6] and labels["causal"].tolist() == [0, 1, 0, 1, 0]

    restored = FeatureQueue(5, {"causal": 2, "sex": 1})
    restored.load_state_dict(copy.deepcopy(queue.state_dict()))
    queue.push(*batch(7, 1))
    restored.push(*batch(7, 1))
    assert torch.equal(restored.get()[0]["causal"], queue.get()[0]["causal"])
    assert restored.get()[1]["sex"].tolist() == [3, 4, 5, 6, 7]

    queue.push(*batch(100, 8))  # more than fits: the batch's last five rows
    assert queue.get()[1]["sex"].tolist() == [103, 104, 105, 106, 107]

    current, current_labels = batch(50, 2, grad=True)
    parts, labels = queue.concat(current, current_labels)
    assert parts["causal"].shape == (7, 2) and labels["sex"].tolist() == [50, 51, 103, 104, 105, 106, 107]
    parts["causal"].sum().backward()
    assert torch.equal(current["causal"].grad, torch.ones(2, 2)), "gradient flows to the current batch"
    assert not queue.feature_causal.requires_grad and queue.feature_causal.grad is None


def test_mi_term_trains_critics_on_the_queue():
    net = _net()
    terms = _terms(("queue",), net)
    trainer = _trainer(net, terms, epochs=2, batch_size=8)
    trainer.run()
    queue = trainer.objective["mi"].queue
    assert len(queue) == 20 and "mi.queue.feature_causal" in trainer.objective.state_dict()
    assert "mi_causal|sex" in trainer.state.output[0]


def _assert_same(a, b, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_objective_state_dict_round_trip():
    net = _net()
    trainer = _trainer(net, _terms(("dro", "adversary", "mi"), net), batch_size=8)
    trainer.run()
    saved = trainer.objective.state_dict()
    mi_state = saved["mi._extra_state"]
    assert mi_state["critic_optimizer"]["state"] and mi_state["pair_weights"]["ema"] is not None
    assert saved["adversary._extra_state"]["optimizer"]["state"]
    assert not torch.allclose(saved["group_dro.dro.q"], saved["group_dro.dro.q"][0])

    buffer = io.BytesIO()
    torch.save(saved, buffer)  # what CheckpointLoader reads back: weights_only=True
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh_net = _net()
    fresh = _trainer(fresh_net, _terms(("dro", "adversary", "mi"), fresh_net), batch_size=8)
    fresh.objective.load_state_dict(loaded)
    _assert_same(saved, fresh.objective.state_dict())
    assert fresh.objective["mi"].pair_weights.ema is not None


def test_bad_terms_are_config_errors_naming_the_term():
    net = _net()
    other = PairwiseMI({"causal": 4, "site": 4}, estimator="dcor")
    with pytest.raises(ConfigError, match=r"loss_terms\[1\].*not all partitions of the network"):
        _trainer(net, [HeadCrossEntropy(), PairwiseMITerm(other)])
    with pytest.raises(ConfigError, match=r"loss_terms\[0\]: weights for unknown heads \['site'\]"):
        _trainer(net, [HeadCrossEntropy(weights={"site": 1.0})])
    with pytest.raises(ConfigError, match=r"loss_terms\[1\]: factors \['site'\]"):
        _trainer(net, [HeadCrossEntropy(), FactorAdversaryTerm(4, [{"name": "site", "classes": [0, 1]}])])
    with pytest.raises(ConfigError, match="loss#mi#estimator must be a mimmx.mi.PairwiseMI"):
        PairwiseMITerm(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="FeatureQueue size"):
        FeatureQueue(0, {"causal": 2})
