"""The class-conditional factor MI term and group-balanced loss weights: estimates with and without planted
within-class dependence, the queue, the balanced view, and the weights' group totals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mimmx.baselines import group_index
from mimmx.errors import ConfigError
from mimmx.factors import parse_factors
from mimmx.losses import StepContext
from mimmx.losses.conditional_mi import ConditionalDecisionMI, ConditionalFactorMI, balanced_weights
from mimmx.losses.group_weights import group_loss_weights
from mimmx.networks import CAUSAL

FACTORS = [{"name": "sex", "column": "Sex", "classes": ["F", "M"]}]


def _cohort(n: int, rho: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 2, (n,), generator=generator)
    agree = torch.rand(n, generator=generator) < rho
    z = torch.where(agree, y, 1 - y)
    return y, z


def _context(
    causal: torch.Tensor, y: torch.Tensor, z: torch.Tensor, epoch: int = 1, logits: torch.Tensor | None = None
) -> StepContext:
    return StepContext(
        network=torch.nn.Identity(),
        features=causal,
        parts={CAUSAL: causal},
        logits={} if logits is None else {CAUSAL: logits},
        labels={CAUSAL: y, "sex": z},
        factors=parse_factors(FACTORS),
        epoch=epoch,
    )


def _fit_and_estimate(leak: float, seed: int = 0) -> float:
    """Train the critic on batches whose causal features carry ``leak`` x the factor beyond the target."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    term = ConditionalFactorMI(4, FACTORS, weight=1.0, queue_size=2048, hidden=32, lr=3e-3)
    for _ in range(150):
        y, z = _cohort(64, 0.9, g)
        causal = torch.cat([y[:, None].float() * 2.0, leak * z[:, None].float(), torch.randn(64, 2, generator=g)], 1)
        causal = causal + 0.3 * torch.randn(64, 4, generator=g)
        term.critic_update(_context(causal, y, z))
    y, z = _cohort(2048, 0.5, g)
    causal = torch.cat([y[:, None].float() * 2.0, leak * z[:, None].float(), torch.randn(2048, 2, generator=g)], 1)
    causal = causal + 0.3 * torch.randn(2048, 4, generator=g)
    return float(term.estimate(causal, {CAUSAL: y, "sex": z})["sex"].detach())


def test_estimate_sees_planted_within_class_dependence():
    independent = _fit_and_estimate(leak=0.0)
    planted = _fit_and_estimate(leak=2.0)
    assert independent < 0.05  # the target alone carries no within-class information about the factor
    assert planted > 0.3  # ln 2 = 0.69 nats is the most a binary factor can carry
    assert planted > 10 * max(independent, 1e-3)


def test_gradient_reaches_the_causal_features_and_warmup_holds_it_back():
    g = torch.Generator().manual_seed(1)
    term = ConditionalFactorMI(4, FACTORS, queue_size=256, warmup_epochs=1)
    y, z = _cohort(64, 0.9, g)
    causal = torch.randn(64, 4, generator=g, requires_grad=True)
    term.critic_update(_context(causal, y, z))
    loss, stats = term(_context(causal, y, z, epoch=1))
    assert float(loss) == 0.0 and "mi_causal|sex|target" in stats
    loss, _ = term(_context(causal, y, z, epoch=2))
    loss.backward()
    assert causal.grad is not None and causal.grad.abs().sum() > 0


def test_ramp_scales_the_penalty_linearly_after_the_warmup():
    g = torch.Generator().manual_seed(1)
    term = ConditionalFactorMI(4, FACTORS, queue_size=256, weight=2.0, warmup_epochs=1, ramp_epochs=4)
    assert [term.weight_at(e) for e in range(1, 8)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    y, z = _cohort(64, 0.9, g)
    causal = torch.randn(64, 4, generator=g)
    term.critic_update(_context(causal, y, z))
    estimate = sum(term.estimate(causal, {CAUSAL: y, "sex": z}).values())
    loss, _ = term(_context(causal, y, z, epoch=3))
    assert float(loss) == pytest.approx(float(estimate), rel=1e-5)
    with pytest.raises(ConfigError, match="ramp_epochs"):
        ConditionalFactorMI(4, FACTORS, ramp_epochs=-1)


def test_the_penalty_waits_for_an_epoch_in_which_the_causal_head_learnt_something():
    g = torch.Generator().manual_seed(3)
    term = ConditionalFactorMI(4, FACTORS, queue_size=256, weight=2.0, warmup_epochs=1, ramp_epochs=4,
                               start_below_chance=0.9)  # fmt: skip
    y, z = _cohort(64, 0.9, g)
    causal = torch.randn(64, 4, generator=g, requires_grad=True)
    chance = torch.zeros(64, 2)  # CE ln 2
    learnt = torch.nn.functional.one_hot(y, 2).float() * 4.0  # CE about 0.02
    for epoch, logits in ((1, chance), (2, chance), (3, learnt)):
        for _ in range(2):
            loss, _ = term(_context(causal, y, z, epoch=epoch, logits=logits))
            assert float(loss) == 0.0 and term.weight_at(epoch) == 0.0  # epochs 1-3: nothing learnt before
    restored = ConditionalFactorMI(4, FACTORS, queue_size=256, weight=2.0, warmup_epochs=1, ramp_epochs=4,
                                   start_below_chance=0.9)  # fmt: skip
    restored.load_state_dict(term.state_dict())  # a resume keeps the epoch in progress
    for t in (term, restored):
        loss, _ = t(_context(causal, y, z, epoch=4, logits=chance))
        assert t.learnt_by_epoch == 3  # epoch 3's mean CE was below 0.9 ln 2
        assert [t.weight_at(e) for e in (3, 4, 5, 8)] == [0.0, 0.5, 1.0, 2.0]
        assert float(loss) > 0.0
    with pytest.raises(ConfigError, match="start_below_chance"):
        ConditionalFactorMI(4, FACTORS, start_below_chance=1.0)
    assert ConditionalFactorMI(4, FACTORS, warmup_epochs=1).weight_at(2) == 1.0  # off by default: fixed schedule


def test_the_group_balanced_start_is_not_fooled_by_a_shortcut_head():
    g = torch.Generator().manual_seed(4)
    y, z = _cohort(64, 0.9, g)
    causal = torch.randn(64, 4, generator=g)
    shortcut = torch.nn.functional.one_hot(z, 2).float() * 4.0  # right where the factor agrees with the target
    terms = {ce: ConditionalFactorMI(4, FACTORS, queue_size=0, warmup_epochs=1, start_below_chance=0.9, start_ce=ce)
             for ce in ("plain", "group_balanced")}  # fmt: skip
    for epoch in (1, 2, 3):
        for term in terms.values():
            _, stats = term(_context(causal, y, z, epoch=epoch, logits=shortcut))
            assert stats["weight_factor_mi"] == term.weight_at(epoch)
    assert terms["plain"].learnt_by_epoch == 1  # the plain CE fell below 0.9 ln 2 through the factor
    assert terms["group_balanced"].learnt_by_epoch is None  # the disagreeing groups are still wrong
    assert terms["group_balanced"].epoch_causal_ce() > math.log(2)
    restored = ConditionalFactorMI(4, FACTORS, queue_size=0, start_below_chance=0.9, start_ce="group_balanced")
    restored.load_state_dict(terms["group_balanced"].state_dict())  # a resume keeps the per-group sums
    assert restored.epoch_causal_ce() == pytest.approx(terms["group_balanced"].epoch_causal_ce())
    with pytest.raises(ConfigError, match="start_ce"):
        ConditionalFactorMI(4, FACTORS, start_ce="balanced")


def test_critic_update_fills_the_queue_and_trains_only_the_critics():
    g = torch.Generator().manual_seed(2)
    term = ConditionalFactorMI(4, FACTORS, queue_size=100)
    before = [p.detach().clone() for p in term.critics.parameters()]
    causal = torch.randn(64, 4, generator=g, requires_grad=True)
    for _ in range(2):
        y, z = _cohort(64, 0.9, g)
        term.critic_update(_context(causal, y, z))
    assert len(term.queue) == 100
    assert causal.grad is None
    assert any(not torch.equal(a, b) for a, b in zip(before, term.critics.parameters()))
    state = term.state_dict()
    clone = ConditionalFactorMI(4, FACTORS, queue_size=100)
    clone.load_state_dict(state)
    assert torch.equal(clone.queue.get()[0][CAUSAL], term.queue.get()[0][CAUSAL])


def test_balanced_weights_equalise_factor_values_within_each_class():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    z = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    w = balanced_weights(y, z, 2)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    for c in (0, 1):
        for v in (0, 1):
            assert torch.isclose(w[(y == c) & (z == v)].sum(), torch.tensor(0.25))


def test_bad_settings_are_refused_by_config_id():
    with pytest.raises(ConfigError, match="loss#factor_mi#weight"):
        ConditionalFactorMI(4, FACTORS, weight=-1)


def test_group_loss_weights_give_every_group_the_same_total():
    rng = np.random.default_rng(0)
    items = [{"label": int(rng.integers(2)), "sex": 0} for _ in range(50)]
    items += [{"label": 1, "sex": 1}] * 3 + [{"label": 0, "sex": 1}] * 7
    weights = group_loss_weights(items, FACTORS)
    specs = parse_factors(FACTORS)
    ids = np.array([group_index(it["label"], [it["sex"]], specs) for it in items])
    per_sample = weights[torch.as_tensor(ids)]
    assert torch.isclose(per_sample.mean(), torch.tensor(1.0))
    totals = [float(per_sample[torch.as_tensor(ids == g)].sum()) for g in np.unique(ids)]
    assert np.allclose(totals, totals[0])


def test_adaptive_scale_caps_the_penalty_gradient_at_the_task_gradient():
    g = torch.Generator().manual_seed(3)
    term = ConditionalFactorMI(4, FACTORS, queue_size=256, adaptive_scale=True)
    y, z = _cohort(64, 0.9, g)
    causal = torch.randn(64, 4, generator=g, requires_grad=True)
    ctx = _context(causal, y, z)
    for _ in range(20):
        term.critic_update(ctx)
    ctx.task_loss = 1e-6 * (causal**2).sum()  # a nearly fitted task: tiny gradient
    loss, stats = term(ctx)
    (grad_penalty,) = torch.autograd.grad(loss, causal, retain_graph=True)
    (grad_task,) = torch.autograd.grad(ctx.task_loss, causal)
    assert 0.0 < stats["mi_scale"] < 1.0
    assert float(grad_penalty.norm()) <= float(grad_task.norm()) * (1 + 1e-4)


def _decision_context(logits: torch.Tensor, y: torch.Tensor, z: torch.Tensor, epoch: int = 1) -> StepContext:
    return _context(torch.zeros(len(y), 4), y, z, epoch, logits=logits)


def _decision_estimate(shift: float, seed: int = 0, scale: float = 1.0, standardise: bool = False) -> float:
    """Critic fitted on logits whose margin moves by ``shift`` with the factor inside each class; every logit is then
    multiplied by ``scale``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    term = ConditionalDecisionMI(FACTORS, num_classes=2, queue_size=2048, hidden=32, lr=3e-3, standardise=standardise)

    def logits(y, z):
        margin = 3.0 * (2 * y.float() - 1) + shift * z.float() + 0.5 * torch.randn(len(y), generator=g)
        return scale * torch.stack([-margin / 2, margin / 2], dim=1)

    for _ in range(150):
        y, z = _cohort(64, 0.9, g)
        term.critic_update(_decision_context(logits(y, z), y, z))
    y, z = _cohort(2048, 0.5, g)
    ctx = _decision_context(logits(y, z), y, z)
    return float(term.estimate(term.reads(ctx), ctx.labels)["sex"].detach())


def test_decision_term_reads_the_causal_logits_and_sees_a_within_class_shift():
    none, shifted = _decision_estimate(0.0), _decision_estimate(2.0)
    assert none < 0.05 and shifted > 0.3
    g = torch.Generator().manual_seed(3)
    term = ConditionalDecisionMI(FACTORS, num_classes=2, queue_size=256, warmup_epochs=1)
    y, z = _cohort(64, 0.9, g)
    logits = torch.randn(64, 2, generator=g, requires_grad=True)
    stats = term.critic_update(_decision_context(logits, y, z))
    assert "critic_loss_decision" in stats and logits.grad is None
    loss, stats = term(_decision_context(logits, y, z, epoch=2))
    assert "mi_decision|sex|target" in stats
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_standardised_decision_term_cannot_be_lowered_by_shrinking_the_logits():
    # raw logits: the same within-class shift, 100x smaller, is invisible to the critic (the escape that held the CE
    # at chance); standardised, the estimate does not move with the scale
    raw, raw_small = _decision_estimate(2.0), _decision_estimate(2.0, scale=0.01)
    std, std_small = (_decision_estimate(2.0, scale=s, standardise=True) for s in (1.0, 0.01))
    assert raw > 0.3 and raw_small < 0.05
    assert std > 0.3 and abs(std_small - std) < 0.02
    assert _decision_estimate(0.0, scale=0.01, standardise=True) < 0.05  # no shift: still no dependence


def test_standardised_decision_reads_stay_finite_with_gradient_and_reject_bad_values():
    term = ConditionalDecisionMI(FACTORS, num_classes=2, queue_size=64, standardise=True)
    g = torch.Generator().manual_seed(4)
    y, z = _cohort(32, 0.9, g)
    constant = torch.ones(32, 2, requires_grad=True)
    assert torch.isfinite(term.reads(_decision_context(constant, y, z))).all()
    logits = torch.randn(32, 2, generator=g, requires_grad=True)
    reads = term.reads(_decision_context(logits, y, z))
    assert torch.allclose(reads.mean(dim=0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(reads.std(dim=0), torch.ones(2), atol=1e-4)
    reads[:, 1].pow(3).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="standardise"):
        ConditionalDecisionMI(FACTORS, standardise="sometimes")
