"""The critic-free decision-gap term: zero without within-class dependence, the planted gap in its stated units,
gradients on the logits only, small groups skipped."""

from __future__ import annotations

import pytest
import torch

from mimmx.errors import ConfigError
from mimmx.factors import parse_factors
from mimmx.losses import ConditionalDecisionGap, StepContext
from mimmx.losses.decision_gap import true_class_margin
from mimmx.networks import CAUSAL

FACTORS = [{"name": "sex", "column": "Sex", "classes": ["F", "M"]}]


def _batch(n: int, shift: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binary logits whose true-class margin is 2 + shift * z + N(0, 1) inside each class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    z = torch.randint(0, 2, (n,), generator=g)
    margin = 2.0 + shift * z.float() + torch.randn(n, generator=g)
    signed = torch.where(y == 1, margin, -margin)
    logits = torch.stack([-signed / 2, signed / 2], dim=1)
    return logits, y, z


def _context(logits: torch.Tensor, y: torch.Tensor, z: torch.Tensor, epoch: int = 2) -> StepContext:
    return StepContext(
        network=torch.nn.Identity(),
        features=logits,
        parts={},
        logits={CAUSAL: logits},
        labels={CAUSAL: y, "sex": z},
        factors=parse_factors(FACTORS),
        epoch=epoch,
    )


def test_margin_is_the_true_class_log_odds():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    assert true_class_margin(logits, torch.tensor([1, 0])).tolist() == pytest.approx([2.0, 2.0])
    three = torch.tensor([[1.0, 0.0, 0.0]])
    expected = 1.0 - torch.logsumexp(torch.tensor([0.0, 0.0]), 0)
    assert float(true_class_margin(three, torch.tensor([0]))) == pytest.approx(float(expected))


def test_gap_is_zero_without_dependence_and_the_planted_size_with_it():
    term = ConditionalDecisionGap(FACTORS)
    logits, y, z = _batch(20000, 0.0)
    independent = float(term.gaps(logits, {CAUSAL: y, "sex": z})["sex"])
    logits, y, z = _batch(20000, 1.0)
    planted = float(term.gaps(logits, {CAUSAL: y, "sex": z})["sex"])
    assert independent < 0.002
    # a shift of 1 within-class sd (pooled spread sqrt(1.25) here) gives (1/2)^2 / 1.25 = 0.2
    assert planted == pytest.approx(0.2, abs=0.02)


def test_gradient_reaches_the_logits_and_warmup_holds_it_back():
    logits, y, z = _batch(256, 1.0)
    logits.requires_grad_(True)
    term = ConditionalDecisionGap(FACTORS, weight=2.0, warmup_epochs=1)
    loss, stats = term(_context(logits, y, z, epoch=1))
    assert float(loss) == 0.0 and stats["decision_gap|sex"] > 0.05
    loss, _ = term(_context(logits, y, z, epoch=2))
    assert float(loss) == pytest.approx(2.0 * stats["decision_gap|sex"], rel=1e-5)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_groups_below_min_group_are_skipped():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    z = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1])  # class 0 has one image with z=1
    logits = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    only_class_1 = ConditionalDecisionGap(FACTORS, min_group=2).gaps(logits, {CAUSAL: y, "sex": z})["sex"]
    margin = true_class_margin(logits, y)[4:]
    means = torch.stack([margin[:2].mean(), margin[2:].mean()])
    assert float(only_class_1) == pytest.approx(float(((means - means.mean()) ** 2).mean() / margin.var()), rel=1e-5)
    none = ConditionalDecisionGap(FACTORS, min_group=3).gaps(logits, {CAUSAL: y, "sex": z})["sex"]
    assert float(none) == 0.0


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="min_group"):
        ConditionalDecisionGap(FACTORS, min_group=1)
    with pytest.raises(ConfigError, match="not the model's"):
        other = parse_factors([{"name": "age", "column": "Age", "classes": ["young", "old"]}])
        ConditionalDecisionGap(FACTORS).check(torch.nn.Identity(), other, "loss#decision_gap")
