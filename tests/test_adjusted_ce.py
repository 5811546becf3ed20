"""The causal CE with the factor labels' prior added to the logits (logit adjustment): the prior's values, the loss
it gives, and why it stops the shortcut: at zero logits no function of the factors gets any gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mimmx.errors import ConfigError
from mimmx.losses import HeadCrossEntropy, StepContext
from mimmx.losses.group_weights import group_log_prior
from mimmx.networks import CAUSAL

FACTORS = [
    {"name": "sex", "column": "Sex", "classes": ["F", "M"]},
    {"name": "site", "column": "Site", "classes": ["a", "b", "c"]},
]


def _items(seed: int = 0, n: int = 400, rho: float = 0.9) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        y = int(rng.integers(2))
        sex = y if rng.random() < rho else 1 - y
        site = int(rng.integers(3)) if y else int(rng.integers(2))  # site c only with label 1
        items.append({"label": y, "sex": sex, "site": site})
    return items


def _context(items: list[dict], logits: torch.Tensor) -> StepContext:
    labels = {CAUSAL: torch.tensor([it["label"] for it in items])}
    labels.update({name: torch.tensor([it[name] for it in items]) for name in ("sex", "site")})
    return StepContext(
        network=torch.nn.Identity(),
        features=logits,
        parts={},
        logits={CAUSAL: logits},
        labels=labels,
        factors=[],
    )


def test_group_log_prior_is_the_training_lists_log_p_target_given_factors():
    items = _items()
    prior = group_log_prior(items, FACTORS, smoothing=0.5).view(2, 2, 3)  # target, sex, site
    for sex in range(2):
        for site in range(3):
            counts = [sum(it["label"] == y and it["sex"] == sex and it["site"] == site for it in items) for y in (0, 1)]
            expected = [math.log((c + 0.5) / (sum(counts) + 1.0)) for c in counts]
            assert torch.allclose(prior[:, sex, site], torch.tensor(expected), atol=1e-5)
    assert torch.allclose(prior.exp().sum(dim=0), torch.ones(2, 3))  # a distribution over the target per group
    assert float(prior[0, 1, 2].exp()) < 0.02  # site c never has label 0: near zero, finite
    with pytest.raises(ValueError, match="smoothing"):
        group_log_prior(items, FACTORS, smoothing=0)


def test_adjusted_ce_adds_the_prior_inside_the_loss_and_logs_the_causal_logits_alone():
    items = _items(1, n=64)
    prior = group_log_prior(items, FACTORS)
    term = HeadCrossEntropy(factors=FACTORS, group_log_prior=prior)
    logits = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    ctx = _context(items, logits)
    loss, stats = term(ctx)
    groups = [[c * 6 + it["sex"] * 3 + it["site"] for c in (0, 1)] for it in items]
    adjusted = logits + prior[torch.tensor(groups)]
    assert torch.isclose(loss, F.cross_entropy(adjusted, ctx.labels[CAUSAL]))
    assert math.isclose(stats["ce_causal"], float(F.cross_entropy(logits, ctx.labels[CAUSAL])), rel_tol=1e-5)


def test_at_zero_logits_no_function_of_the_factors_gets_a_gradient():
    # the prior is already the best factor-only predictor of the training list, so a shortcut through the factors
    # gives the encoder nothing to gain; under the plain CE the same direction is the steepest there is
    items = _items(2)
    sex = torch.tensor([float(it["sex"]) for it in items])
    shortcut = torch.stack([-sex, sex], dim=1) - 0.5  # logits that follow sex
    prior = group_log_prior(items, FACTORS, smoothing=1e-6)
    for term, expect_zero in (
        (HeadCrossEntropy(factors=FACTORS, group_log_prior=prior), True),
        (HeadCrossEntropy(), False),
    ):
        scale = torch.zeros((), requires_grad=True)
        loss, _ = term(_context(items, scale * shortcut))
        (grad,) = torch.autograd.grad(loss, scale)
        assert (abs(float(grad)) < 1e-4) == expect_zero


def test_adjusted_ce_rejects_weights_beside_the_prior_and_a_prior_of_the_wrong_size():
    with pytest.raises(ConfigError, match="not both"):
        HeadCrossEntropy(group_weights=torch.ones(12), group_log_prior=torch.zeros(12))
    network = torch.nn.Module()
    network.num_classes = 2
    from mimmx.factors import parse_factors

    with pytest.raises(ConfigError, match="group_log_prior has 4 entries, expected 12"):
        HeadCrossEntropy(group_log_prior=torch.zeros(4)).check(network, parse_factors(FACTORS), "loss#head_ce_adjusted")


def test_a_bundle_trains_with_the_adjusted_ce_and_the_decision_term(tmp_path):
    import json
    from pathlib import Path

    from monai.bundle import ConfigParser, run

    from mimmx.methods import method_overrides

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "mimmx_cxr" / "configs"
    small = ConfigParser.load_config_file(str(bundle / "smoke_test.yaml"))
    run(
        "training",
        bundle_root=str(tmp_path),
        config_file=str(bundle / "train.yaml"),
        **small,
        **method_overrides("mimmx_adjusted"),
    )
    (epoch,) = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert 0.0 < epoch["ce_causal"] < 1.0 and epoch["weight_decision_mi"] == 0.0  # the start waits for the head
    assert {"mi_decision|sex|target", "mi_decision|age|target", "mi_decision|devices|target"} <= set(epoch)
