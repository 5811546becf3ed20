"""Mutual information estimators between feature partitions (MIMM / MIMM-X).

The encoder minimises the MI between its partitions (causal vs every spurious factor, and spurious vs spurious so
that spurious partitions do not collapse onto each other). Three estimators are offered:

* ``MINE``  - Donsker-Varadhan lower bound with a learned critic (Belghazi et al. 2018), as in the MIMM reference code.
* ``CLUB``  - contrastive log-ratio upper bound with a learned Gaussian q(b|a) (Cheng et al. 2020); an upper bound is
  the safer quantity to *minimise*.
* ``DistanceCorrelation`` - Székely's sample distance correlation; parameter-free, no critic to train.

Every estimator's ``forward(a, b)`` is differentiable w.r.t. ``a`` and ``b`` (the encoder minimises it);
``critic_loss(a, b)`` is what the critic's own optimiser minimises (the caller passes detached features).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mimmx.config import as_bool
from mimmx.errors import ConfigError
from mimmx.names import PAIR_SEP, pair_name

__all__ = [
    "CLUB",
    "ESTIMATORS",
    "MINE",
    "DistanceCorrelation",
    "MIEstimator",
    "PairwiseMI",
    "build_estimator",
]


def _check_pair(a: Tensor, b: Tensor) -> int:
    """Validate two (B, D) batches of the same samples; return B."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"MI estimators expect 2-D (batch, features) tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"both partitions must hold the same samples, got batch sizes {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < 2:
        raise ValueError(f"MI estimation needs a batch of at least 2 samples, got {a.shape[0]}")
    return a.shape[0]


class MIEstimator(nn.Module):
    """Base class: ``forward`` is the (differentiable) estimate, ``critic_loss`` trains the critic if any."""

    has_critic: bool = True

    def forward(self, a: Tensor, b: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def critic_loss(self, a: Tensor, b: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MINE(MIEstimator):
    """Donsker-Varadhan bound I(a; b) >= E_joint[T] - log E_marg[e^T] (Belghazi et al., ICML 2018).

    Joint samples are the batch's own pairs (a_i, b_i); product-of-marginals samples are all B(B-1) off-diagonal pairs
    (a_i, b_j), i != j, as in MIMM. The critic T is an MLP on [a; b]; its first layer is separable
    (W [a; b] = W_a a + W_b b), so the B x B grid costs two (B, H) products and a broadcast add.

    The returned value is the DV bound; its gradient uses the MINE bias correction: the gradient of log E_marg[e^T] is
    replaced by grad E_marg[e^T] / EMA(E_marg[e^T]), the EMA being kept in log space for stability and updated only in
    training mode.
    """

    def __init__(self, dim_a: int, dim_b: int, hidden: int = 64, ema_decay: float = 0.99) -> None:
        super().__init__()
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"MINE ema_decay must be in [0, 1), got {ema_decay}")
        self.proj_a = nn.Linear(dim_a, hidden)
        self.proj_b = nn.Linear(dim_b, hidden, bias=False)
        self.body = nn.Sequential(nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1))
        self.ema_decay = float(ema_decay)
        # log of the EMA of E_marg[e^T]; NaN until the first training-mode call.
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    def scores(self, a: Tensor, b: Tensor) -> Tensor:
        """Critic values T(a_i, b_j) on the full B x B grid (row i: a_i, column j: b_j)."""
        h = self.proj_a(a).unsqueeze(1) + self.proj_b(b).unsqueeze(0)  # (B, B, H)
        return self.body(h).squeeze(-1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        n = _check_pair(a, b)
        t = self.scores(a, b)
        joint = t.diagonal().mean()
        off_diag = ~torch.eye(n, dtype=torch.bool, device=t.device)
        log_marg = torch.logsumexp(t[off_diag], dim=0) - math.log(n * (n - 1))  # log-mean-exp over i != j

        log_ema = self._ema_for_gradient(log_marg.detach())
        # d/dtheta exp(log_marg - log_ema) = E_marg[e^T] grad(log_marg) / ema = grad(E_marg[e^T]) / ema; the value
        # stays the DV bound and the log term's own gradient is replaced by the surrogate's.
        surrogate = torch.exp(log_marg - log_ema)
        return joint - log_marg.detach() - (surrogate - surrogate.detach())

    @torch.no_grad()
    def _ema_for_gradient(self, log_marg: Tensor) -> Tensor:
        """Update (training mode) and return log EMA(E_marg[e^T]); falls back to the batch value before any update."""
        log_marg = log_marg.to(self.log_ema.dtype)
        if self.training:
            if torch.isnan(self.log_ema):
                self.log_ema.copy_(log_marg)
            elif self.ema_decay > 0.0:
                self.log_ema.copy_(
                    torch.logaddexp(self.log_ema + math.log(self.ema_decay), log_marg + math.log1p(-self.ema_decay))
                )
            else:
                self.log_ema.copy_(log_marg)
        if torch.isnan(self.log_ema):
            return log_marg
        return self.log_ema.clone()

    def critic_loss(self, a: Tensor, b: Tensor) -> Tensor:
        """The critic maximises the DV bound."""
        return -self.forward(a, b)


class CLUB(MIEstimator):
    """Contrastive log-ratio upper bound (Cheng et al., ICML 2020).

    I(a; b) <= E_joint[log q(b|a)] - E_marg[log q(b|a)] with q(b|a) = N(mu(a), diag exp(logvar(a))) fitted by maximum
    likelihood on the joint pairs (``critic_loss``). The marginal term averages over all off-diagonal pairs of the
    batch in closed form (no B x B x D tensor). Note: even with the true conditional the bound is loose; for
    correlated Gaussians it equals d r^2 / (1 - r^2) against the true MI -d/2 ln(1 - r^2), i.e. >= 2x the MI.
    It is zero when q ignores a, which is what minimisation aims for.
    """

    def __init__(self, dim_a: int, dim_b: int, hidden: int = 64, max_logvar: float = 10.0) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(dim_a, hidden), nn.ReLU(), nn.Linear(hidden, dim_b))
        self.logvar = nn.Sequential(nn.Linear(dim_a, hidden), nn.ReLU(), nn.Linear(hidden, dim_b))
        self.max_logvar = float(max_logvar)

    def _params(self, a: Tensor) -> tuple[Tensor, Tensor]:
        # Soft clamp of the log-variance: keeps the likelihood finite without killing gradients at a hard bound.
        logvar = self.max_logvar * torch.tanh(self.logvar(a) / self.max_logvar)
        return self.mu(a), logvar

    def log_likelihood(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean over the batch of log q(b_i | a_i)."""
        _check_pair(a, b)
        mu, logvar = self._params(a)
        ll = -0.5 * ((b - mu) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
        return ll.sum(dim=1).mean()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        n = _check_pair(a, b)
        mu, logvar = self._params(a)
        inv_var = torch.exp(-logvar)  # (B, Db)
        sq_joint = (b - mu) ** 2  # (b_i - mu_i)^2
        # sum_j (b_j - mu_i)^2 = sum_j (b_j - b_mean)^2 + B (mu_i - b_mean)^2 (centred: no cancellation).
        b_mean = b.mean(dim=0, keepdim=True)
        sq_all = ((b - b_mean) ** 2).sum(dim=0, keepdim=True) + n * (mu - b_mean) ** 2
        sq_marg = (sq_all - sq_joint) / (n - 1)  # mean over j != i
        # log q terms; the log-variance and 2*pi terms are the same for (i, i) and (i, j) and cancel.
        return 0.5 * ((sq_marg - sq_joint) * inv_var).sum(dim=1).mean()

    def critic_loss(self, a: Tensor, b: Tensor) -> Tensor:
        """Negative log-likelihood of the joint pairs: fits q(b|a)."""
        return -self.log_likelihood(a, b)


class DistanceCorrelation(MIEstimator):
    """Sample distance correlation dCor(a, b) in [0, 1] (Székely, Rizzo & Bakirov 2007), a dependence measure.

    Zero iff independent (in the population), one iff b is a similarity transform of a. Not an MI in nats, but
    parameter-free, so no critic to train. ``squared=True`` returns dCor^2 (smoother gradient near 0). ``hidden`` is
    accepted and unused, so that a bundle switches estimators with one override (``mi_estimator#estimator dcor``).
    """

    has_critic = False

    def __init__(self, squared: bool = False, eps: float = 1e-10, hidden: int | None = None) -> None:
        super().__init__()
        self.squared = squared
        self.eps = float(eps)

    def _centred_distances(self, x: Tensor) -> Tensor:
        x = x - x.mean(dim=0, keepdim=True)  # translation-invariant; smaller norms, less cancellation below
        sq_norm = (x * x).sum(dim=1)
        sq = (sq_norm.unsqueeze(1) + sq_norm.unsqueeze(0) - 2.0 * x @ x.T).clamp_min(0.0)
        sq = sq * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))  # exact zeros on the diagonal
        d = torch.sqrt(sq + self.eps)  # eps: finite gradient at zero distance
        return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        _check_pair(a, b)
        da, db = self._centred_distances(a), self._centred_distances(b)
        dcov2 = (da * db).mean()
        dvar2 = (da * da).mean() * (db * db).mean()
        dcor2 = (dcov2 / torch.sqrt(dvar2 + self.eps**2)).clamp(0.0, 1.0)
        return dcor2 if self.squared else torch.sqrt(dcor2 + self.eps)

    def critic_loss(self, a: Tensor, b: Tensor) -> Tensor:
        """No critic: a constant zero that needs no backward pass."""
        return torch.zeros((), dtype=a.dtype, device=a.device)


ESTIMATORS: dict[str, type[MIEstimator]] = {"mine": MINE, "club": CLUB, "dcor": DistanceCorrelation}


def build_estimator(name: str, dim_a: int, dim_b: int, **kwargs) -> MIEstimator:
    """Estimator by config name; critic-free estimators ignore the dimensions."""
    cls = ESTIMATORS.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"unknown MI estimator {name!r}; allowed: {', '.join(sorted(ESTIMATORS))}")
    try:
        return cls(dim_a, dim_b, **kwargs) if cls.has_critic else cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for MI estimator {name!r}: {exc}") from exc


class PairwiseMI(nn.Module):
    """One estimator per pair of partitions, named "a|b".

    The default pairs are all unordered pairs in insertion order (causal with each spurious partition and spurious with
    spurious, as in the multi-factor MIMM), so that no two partitions share information.

    With ``conditional``, each estimate is computed within each class of a conditioning label (the causal target) and
    averaged over classes weighted by their size: I(a; b | y) instead of I(a; b). Where the target itself is correlated
    with the factors, I(causal; factor) cannot reach zero for a model that predicts the target from causal evidence,
    while I(causal; factor | y) can: only what the causal partition knows about a factor beyond the target is
    penalised. Product-of-marginals samples then pair only images of the same class.

    With ``balance``, each pair is estimated on a resample of the batch in which every combination of the two
    partitions' labels (target for causal, the factor for a factor partition) is equally frequent. The training
    data ties the factors to the target (rho 0.9), so on the raw batch a causal partition that encodes only the
    target still shares I(y; z_k) with factor k's partition: the penalty has a floor that a shortcut hardly
    exceeds. On the balanced resample y and z_k are independent, the floor is zero and only the shortcut is
    penalised. The resample draws with replacement, proportionally to 1 / (count of the sample's label pair).

    With ``standardize`` (default) each partition is standardised over the batch before it reaches an estimator. MI is
    invariant to such per-dimension affine maps, but the critics are not: without it the encoder can lower a MINE or
    CLUB estimate by rescaling features rather than by removing information.
    """

    def __init__(
        self,
        partition_dims: Mapping[str, int],
        estimator: str = "mine",
        pairs: Sequence[tuple[str, str]] | None = None,
        standardize: bool = True,
        conditional: bool = False,
        balance: bool = False,
        **estimator_kwargs,
    ) -> None:
        super().__init__()
        self.standardize = as_bool(standardize, "mi_estimator#standardize")
        self.conditional = as_bool(conditional, "mi_estimator#conditional")
        self.balance = as_bool(balance, "mi_estimator#balance")
        dims = dict(partition_dims)
        for name, dim in dims.items():
            if PAIR_SEP in name or "." in name or not name:
                raise ConfigError(f"partition name {name!r} must be non-empty and contain neither '|' nor '.'")
            if int(dim) < 1:
                raise ConfigError(f"partition {name!r} needs a positive dimension, got {dim}")
        if len(dims) < 2:
            raise ConfigError(f"MI needs at least two partitions, got {list(dims)}")
        pairs = list(itertools.combinations(dims, 2)) if pairs is None else [tuple(p) for p in pairs]
        if not pairs:
            raise ConfigError("MI pairs must not be empty")
        seen: set[frozenset[str]] = set()
        for pair in pairs:
            if len(pair) != 2 or pair[0] == pair[1] or any(p not in dims for p in pair):
                raise ConfigError(f"MI pair {pair!r} must name two different partitions of {list(dims)}")
            if frozenset(pair) in seen:
                raise ConfigError(f"MI pair {pair!r} is listed twice")
            seen.add(frozenset(pair))
        self.pairs: list[tuple[str, str]] = pairs
        self.pair_names: list[str] = [pair_name(a, b) for a, b in pairs]
        self.estimators = nn.ModuleDict(
            {
                name: build_estimator(estimator, dims[a], dims[b], **estimator_kwargs)
                for name, (a, b) in zip(self.pair_names, pairs, strict=True)
            }
        )
        self.has_critic: bool = ESTIMATORS[str(estimator).lower()].has_critic

    def _get(self, parts: Mapping[str, Tensor], name: str) -> Tensor:
        if name not in parts:
            raise KeyError(f"partition {name!r} missing from features; got {list(parts)}")
        return parts[name]

    def _standardize(self, x: Tensor) -> Tensor:
        if self.standardize and x.shape[0] > 1:
            x = (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + 1e-5)
        return x

    def _groups(self, condition: Tensor | None) -> list[Tensor | None]:
        """Index sets to estimate on: the whole batch, or each class of ``condition`` with at least two samples."""
        if not self.conditional:
            return [None]
        if condition is None:
            raise ValueError("a conditional PairwiseMI needs the conditioning labels (condition=...)")
        condition = condition.view(-1)
        groups = [torch.nonzero(condition == c).view(-1) for c in torch.unique(condition)]
        return [g for g in groups if g.numel() >= 2]

    def _balanced_index(self, labels: Mapping[str, Tensor] | None, a: str, b: str) -> Tensor:
        """Batch indices drawn so that every (label_a, label_b) combination present is equally frequent."""
        if labels is None or a not in labels or b not in labels:
            raise ValueError(f"a balanced PairwiseMI needs labels for partitions {a!r} and {b!r} (labels=...)")
        la, lb = labels[a].view(-1).long(), labels[b].view(-1).long()
        cell = la * (int(lb.max()) + 1) + lb
        _, inverse, counts = torch.unique(cell, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse].float()
        return torch.multinomial(weights, cell.numel(), replacement=True)

    def _per_pair(
        self, parts: Mapping[str, Tensor], condition: Tensor | None, fn, labels: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """fn(estimator, a, b) per pair, averaged over the groups weighted by group size."""
        out = {}
        for name, (a, b) in zip(self.pair_names, self.pairs, strict=True):
            xa, xb = self._get(parts, a), self._get(parts, b)
            cond = condition
            if self.balance:
                index = self._balanced_index(labels, a, b)
                xa, xb = xa[index], xb[index]
                cond = None if condition is None else condition.view(-1)[index]
            groups = self._groups(cond)
            values, weights = [], []
            for g in groups:
                ga, gb = (xa, xb) if g is None else (xa[g], xb[g])
                values.append(fn(self.estimators[name], self._standardize(ga), self._standardize(gb)))
                weights.append(float(ga.shape[0]))
            if not values:  # no class with two samples in this batch
                out[name] = xa.sum() * 0.0
                continue
            total = sum(weights)
            out[name] = sum(v * (w / total) for v, w in zip(values, weights, strict=True))
        return out

    def forward(
        self,
        parts: Mapping[str, Tensor],
        condition: Tensor | None = None,
        labels: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Differentiable MI estimate per pair (conditional on ``condition`` if the module is conditional; on a
        label-balanced resample, from ``labels`` keyed by partition name, if it balances)."""
        return self._per_pair(parts, condition, lambda est, a, b: est(a, b), labels)

    def critic_loss(
        self,
        parts: Mapping[str, Tensor],
        condition: Tensor | None = None,
        labels: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Sum of the critics' losses; detaches the features so only critic parameters get gradients."""
        detached = {k: v.detach() for k, v in parts.items()}
        losses = self._per_pair(detached, condition, lambda est, a, b: est.critic_loss(a, b), labels)
        return torch.stack(list(losses.values())).sum()
