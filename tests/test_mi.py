"""Tests of the MI estimators against analytic values on correlated Gaussians and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mimmx.errors import ConfigError
from mimmx.mi import CLUB, ESTIMATORS, MINE, DistanceCorrelation, PairwiseMI, build_estimator

D, R = 2, 0.8
GAUSS_MI = -D / 2 * math.log(1 - R * R)  # 1.0217 nats
GAUSS_CLUB = D * R * R / (1 - R * R)  # CLUB bound with the true conditional: 3.556 nats (>= 2x the MI)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaussians(n: int, r: float, gen: torch.Generator, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    """X, Y in R^d, each component pair with correlation r, other components independent."""
    x = torch.randn(n, d, generator=gen)
    z = torch.randn(n, d, generator=gen)
    return x, r * x + math.sqrt(1 - r * r) * z


def train_critic(est, r: float, steps: int, batch: int, lr: float, seed: int = 0) -> torch.Generator:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(est.parameters(), lr=lr)
    for _ in range(steps):
        a, b = gaussians(batch, r, gen)
        loss = est.critic_loss(a, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    est.eval()
    return gen


def mean_estimate(est, r: float, gen: torch.Generator, batch: int, repeats: int) -> float:
    with torch.no_grad():
        return float(np.mean([est(*gaussians(batch, r, gen)).item() for _ in range(repeats)]))


# --- MINE ---------------------------------------------------------------------------------------------------------


def test_mine_correlated_gaussians_close_to_analytic_mi():
    torch.manual_seed(0)
    est = MINE(D, D, hidden=32)
    gen = train_critic(est, R, steps=400, batch=128, lr=5e-3)
    value = mean_estimate(est, R, gen, batch=512, repeats=8)
    assert value == pytest.approx(GAUSS_MI, rel=0.15)


def test_mine_independent_inputs_near_zero():
    torch.manual_seed(0)
    est = MINE(D, D, hidden=32)
    gen = train_critic(est, 0.0, steps=200, batch=128, lr=5e-3)
    assert abs(mean_estimate(est, 0.0, gen, batch=512, repeats=8)) < 0.05


def test_mine_grid_equals_critic_on_concatenated_pairs():
    torch.manual_seed(0)
    est = MINE(3, 2, hidden=8)
    a, b = torch.randn(5, 3), torch.randn(5, 2)
    first = torch.nn.Linear(5, 8)
    with torch.no_grad():
        first.weight.copy_(torch.cat([est.proj_a.weight, est.proj_b.weight], dim=1))
        first.bias.copy_(est.proj_a.bias)
    pairs = torch.cat([a.unsqueeze(1).expand(5, 5, 3), b.unsqueeze(0).expand(5, 5, 2)], dim=-1)
    expected = est.body(first(pairs)).squeeze(-1)
    torch.testing.assert_close(est.scores(a, b), expected)


def test_mine_value_is_dv_bound_and_ema_only_updates_in_training():
    torch.manual_seed(0)
    est = MINE(2, 2, hidden=8, ema_decay=0.9)
    a, b = torch.randn(6, 2), torch.randn(6, 2)
    t = est.scores(a, b).detach()
    off = t[~torch.eye(6, dtype=torch.bool)]
    dv = t.diagonal().mean() - (torch.logsumexp(off, 0) - math.log(30))
    assert torch.isnan(est.log_ema)
    torch.testing.assert_close(est(a, b).detach(), dv)
    first = est.log_ema.clone()
    torch.testing.assert_close(first, torch.logsumexp(off, 0) - math.log(30))
    est(a * 2, b)
    assert est.log_ema != first and torch.isfinite(est.log_ema)
    est.eval()
    frozen = est.log_ema.clone()
    est(a, b)
    assert est.log_ema == frozen


def test_mine_ema_scales_marginal_gradient():
    """With the EMA equal to the batch's E_marg[e^T] the gradient is the plain DV gradient; a larger EMA shrinks it."""
    torch.manual_seed(0)
    est = MINE(2, 2, hidden=8)
    a, b = torch.zeros(8, 2), torch.randn(8, 2)  # a constant: joint and marginal terms only differ through b
    b.requires_grad_(True)
    est(a, b).backward()
    plain = b.grad.clone()
    t = est.scores(a, b)
    off = t[~torch.eye(8, dtype=torch.bool)]
    (grad_ref,) = torch.autograd.grad(t.diagonal().mean() - torch.logsumexp(off, 0), b, retain_graph=True)
    torch.testing.assert_close(plain, grad_ref)

    b.grad = None
    est.eval()
    est.log_ema.fill_(est.log_ema.item() + math.log(2.0))  # EMA twice the batch mean: marginal gradient halved
    est(a, b).backward()
    (joint_grad,) = torch.autograd.grad(t.diagonal().mean(), b)
    torch.testing.assert_close(b.grad, joint_grad + 0.5 * (plain - joint_grad))


def test_mine_gradient_reaches_inputs_and_batch_of_two_works():
    torch.manual_seed(0)
    est = MINE(3, 4)
    a = torch.randn(2, 3, requires_grad=True)
    b = torch.randn(2, 4, requires_grad=True)
    value = est(a, b)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    for x in (a, b):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        est(a[:1], b[:1])


# --- CLUB ---------------------------------------------------------------------------------------------------------


def test_club_correlated_gaussians_matches_its_analytic_bound():
    """CLUB is an upper bound: on Gaussians with the true conditional it is D r^2/(1-r^2), not the MI itself."""
    torch.manual_seed(0)
    est = CLUB(D, D, hidden=32)
    gen = train_critic(est, R, steps=500, batch=256, lr=3e-3)
    value = mean_estimate(est, R, gen, batch=8192, repeats=4)
    assert value == pytest.approx(GAUSS_CLUB, rel=0.15)
    assert value > GAUSS_MI
    # The fitted q(b|a) itself is right: H(b) - H_q(b|a) recovers the MI (H(b) = D/2 ln(2 pi e) for unit Gaussians).
    with torch.no_grad():
        loglik = est.log_likelihood(*gaussians(8192, R, gen)).item()
    assert D / 2 * math.log(2 * math.pi * math.e) + loglik == pytest.approx(GAUSS_MI, rel=0.1)


def test_club_independent_inputs_near_zero():
    torch.manual_seed(0)
    est = CLUB(D, D, hidden=32)
    gen = train_critic(est, 0.0, steps=300, batch=256, lr=3e-3)
    assert abs(mean_estimate(est, 0.0, gen, batch=8192, repeats=4)) < 0.05


def test_club_closed_form_marginal_term_matches_explicit_grid():
    torch.manual_seed(0)
    est = CLUB(3, 2, hidden=8)
    a, b = torch.randn(7, 3), torch.randn(7, 2) + 5.0
    mu, logvar = est._params(a)
    # log q(b_j | a_i) for every (i, j), without the constants that cancel.
    grid = -0.5 * ((b.unsqueeze(0) - mu.unsqueeze(1)) ** 2 * torch.exp(-logvar).unsqueeze(1) + logvar.unsqueeze(1))
    grid = grid.sum(-1)
    off = grid[~torch.eye(7, dtype=torch.bool)]
    torch.testing.assert_close(est(a, b), grid.diagonal().mean() - off.mean())


# --- distance correlation -----------------------------------------------------------------------------------------


def dcor_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook sample distance correlation with explicit loops (an independent reference)."""

    def centred(z):
        n = len(z)
        d = np.array([[np.linalg.norm(z[i] - z[j]) for j in range(n)] for i in range(n)])
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(x), centred(y)
    return math.sqrt((a * b).mean() / math.sqrt((a * a).mean() * (b * b).mean()))


def test_dcor_hand_computed_four_points():
    # x = 0..3, y = parity: dCov^2 = 1/8, dVar^2(x) = 13/16, dVar^2(y) = 1/4  =>  dCor^2 = 1/sqrt(13).
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    assert DistanceCorrelation(squared=True)(x, y).item() == pytest.approx(1 / math.sqrt(13), abs=1e-5)
    assert DistanceCorrelation()(x, y).item() == pytest.approx(13**-0.25, abs=1e-5)


def test_dcor_matches_numpy_reference():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(20, 3))
    y = np.concatenate([x[:, :1] ** 2, gen.normal(size=(20, 1))], axis=1)
    value = DistanceCorrelation()(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert value.item() == pytest.approx(dcor_numpy(x, y), abs=1e-4)


def test_dcor_independent_small_similarity_one():
    torch.manual_seed(0)
    dcor = DistanceCorrelation()
    a = torch.randn(2000, 3)
    assert dcor(a, torch.randn(2000, 2)).item() < 0.1  # finite-sample V-statistic bias ~ 1/sqrt(n)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    assert dcor(a, 2.5 * a @ q + 1.0).item() == pytest.approx(1.0, abs=1e-4)  # scaled rotation + shift
    assert dcor(a[:, :1], -3 * a[:, :1] + 2).item() == pytest.approx(1.0, abs=1e-4)
    assert 0.3 < dcor(a, a[:, :1] ** 2).item() < 1.0  # nonlinear dependence is caught


def test_dcor_gradient_finite_with_duplicates_and_no_critic():
    torch.manual_seed(0)
    dcor = DistanceCorrelation()
    a = torch.randn(6, 3)
    a = torch.cat([a, a[:2]]).requires_grad_(True)  # repeated rows: zero off-diagonal distances
    b = torch.randn(8, 2, requires_grad=True)
    dcor(a, b).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all() and a.grad.abs().sum() > 0
    assert not dcor.has_critic and list(dcor.parameters()) == []
    loss = dcor.critic_loss(a.detach(), b.detach())
    assert loss.item() == 0.0 and not loss.requires_grad
    constant = torch.ones(5, 2)
    assert torch.isfinite(dcor(constant, torch.randn(5, 2)))


# --- minimisation through the estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mine", "club", "dcor"])
def test_minimising_the_estimate_removes_dependence(name):
    """b = alpha * a + noise has MI D/2 ln(1 + alpha^2); minimising the estimate over alpha must drive alpha to 0."""
    torch.manual_seed(0)
    est = build_estimator(name, 2, 2, **({} if name == "dcor" else {"hidden": 16}))
    alpha = torch.nn.Parameter(torch.tensor(1.5))
    opt_alpha = torch.optim.Adam([alpha], lr=0.02)
    opt_critic = torch.optim.Adam(est.parameters(), lr=5e-3) if est.has_critic else None
    for _ in range(150):
        a, noise = torch.randn(64, 2), torch.randn(64, 2)
        if opt_critic is not None:
            for _ in range(5):  # critic ahead of the encoder, as in MIMM's alternating schedule
                loss = est.critic_loss(a, (alpha * a + noise).detach())
                opt_critic.zero_grad()
                loss.backward()
                opt_critic.step()
        mi = est(a, alpha * a + noise)
        opt_alpha.zero_grad()
        mi.backward()
        opt_alpha.step()
    assert abs(alpha.item()) < 0.25


# --- PairwiseMI and the factory -----------------------------------------------------------------------------------

DIMS = {"causal": 4, "sex": 2, "age": 2, "site": 3}


def test_pairwise_default_pairs_cover_every_unordered_pair_in_order():
    pmi = PairwiseMI(DIMS, estimator="mine", hidden=8)
    assert pmi.pair_names == ["causal|sex", "causal|age", "causal|site", "sex|age", "sex|site", "age|site"]
    assert pmi.has_critic
    assert isinstance(pmi.estimators["sex|site"], MINE)
    assert pmi.estimators["sex|site"].proj_b.in_features == 3


def test_pairwise_forward_is_per_pair_and_critic_loss_only_reaches_critics():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(5, sum(DIMS.values()))
    feats = encoder(torch.randn(16, 5))
    parts = dict(zip(DIMS, torch.split(feats, list(DIMS.values()), dim=1), strict=True))
    for estimator in ("mine", "club"):
        pmi = PairwiseMI(DIMS, estimator=estimator, hidden=8)
        encoder.zero_grad()
        pmi.critic_loss(parts).backward(retain_graph=True)
        assert all(p.grad is None for p in encoder.parameters())
        assert all(p.grad is not None for p in pmi.parameters())

        pmi.zero_grad()
        values = pmi(parts)
        assert list(values) == pmi.pair_names
        assert all(v.dim() == 0 and torch.isfinite(v) for v in values.values())
        torch.stack(list(values.values())).sum().backward(retain_graph=True)
        assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_pairwise_dcor_custom_pairs_and_checkpoint_roundtrip():
    pmi = PairwiseMI(DIMS, estimator="dcor", pairs=[("causal", "sex"), ("causal", "age")])
    assert pmi.pair_names == ["causal|sex", "causal|age"] and not pmi.has_critic
    parts = {k: torch.randn(8, d) for k, d in DIMS.items()}
    assert set(pmi(parts)) == {"causal|sex", "causal|age"}
    loss = pmi.critic_loss(parts)
    assert loss.item() == 0.0 and not loss.requires_grad

    mine = PairwiseMI(DIMS, estimator="mine", hidden=8)
    mine(parts)  # initialises the EMA buffers
    again = PairwiseMI(DIMS, estimator="mine", hidden=8)
    again.load_state_dict(mine.state_dict())
    torch.testing.assert_close(again.estimators["causal|sex"].log_ema, mine.estimators["causal|sex"].log_ema)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partition_dims": {"causal": 4}},
        {"partition_dims": DIMS, "pairs": [("causal", "causal")]},
        {"partition_dims": DIMS, "pairs": [("causal", "colour")]},
        {"partition_dims": DIMS, "pairs": [("causal", "sex"), ("sex", "causal")]},
        {"partition_dims": {"a|b": 2, "c": 2}},
        {"partition_dims": DIMS, "estimator": "infonce"},
    ],
)
def test_pairwise_rejects_bad_config(kwargs):
    with pytest.raises(ConfigError):
        PairwiseMI(**kwargs)


def test_build_estimator_names_and_unknown():
    assert set(ESTIMATORS) == {"mine", "club", "dcor"}
    assert isinstance(build_estimator("MINE", 2, 3), MINE)
    assert isinstance(build_estimator("club", 2, 3, hidden=4), CLUB)
    assert isinstance(build_estimator("dcor", 2, 3), DistanceCorrelation)
    with pytest.raises(ConfigError, match="club, dcor, mine"):
        build_estimator("nwj", 2, 3)
    with pytest.raises(ConfigError, match="mine"):
        build_estimator("mine", 2, 3, hiddn=4)
