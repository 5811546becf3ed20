"""What a user would otherwise train, as options of the same trainer and network (see :mod:`mimmx.methods`).

* Group-balanced resampling: every group (target class x joint factor values) is drawn equally often.
* GroupDRO (Sagawa et al. 2020): the causal loss is a weighted sum of group losses; weights follow the worst groups.
* Adversarial debiasing with gradient reversal (Kim et al. 2019, "Learning Not to Learn"): one adversary per factor
  reads the causal partition; its gradient reaches the encoder reversed, so the encoder hides the factor.

Groups are the product of the causal target and every factor: with K binary factors and a binary target there are
2^(K+1) of them, the finest partition on which a shortcut can hide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler

from mimmx.errors import ConfigError, DataError
from mimmx.factors import FactorSpec, parse_factors

__all__ = ["GradientReversal", "FactorAdversary", "GroupDRO", "group_index", "group_balanced_sampler", "num_groups"]


def num_groups(num_classes: int, factors: Sequence[FactorSpec]) -> int:
    """Number of target x joint factor groups."""
    return int(num_classes * np.prod([f.num_classes for f in factors], dtype=np.int64))


def group_index(target: torch.Tensor | np.ndarray, factor_labels: Sequence[Any], factors: Sequence[FactorSpec]):
    """Mixed-radix group id: target first, then each factor's class (works on tensors and arrays alike)."""
    g = target
    for spec, z in zip(factors, factor_labels):
        g = g * spec.num_classes + z
    return g


def group_balanced_sampler(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    target_key: str = "label",
    num_samples: int | None = None,
    seed: int = 0,
) -> WeightedRandomSampler:
    """Sampler that draws every non-empty group equally often (with replacement), one epoch = len(items) draws."""
    specs = parse_factors(factors)
    if not items:
        raise DataError("group_balanced_sampler: the training list is empty.")
    keys = [target_key] + [f.key for f in specs]
    rows = []
    for i, item in enumerate(items):
        missing = [k for k in keys if k not in item]
        if missing:
            raise DataError(f"group_balanced_sampler: training item {i} has no {missing} (keys: {sorted(item)}).")
        rows.append([int(item[k]) for k in keys])
    table = np.asarray(rows)
    groups = group_index(table[:, 0], [table[:, j + 1] for j in range(len(specs))], specs)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples or len(items), replacement=True, generator=generator
    )


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


class GradientReversal(nn.Module):
    """Identity forward, gradient multiplied by ``-scale`` backward."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.scale)


class FactorAdversary(nn.Module):
    """One small MLP per factor predicting that factor from the (gradient-reversed) causal partition."""

    def __init__(self, partition_dim: int, factors: Sequence[Mapping[str, Any] | FactorSpec], hidden: int = 32) -> None:
        super().__init__()
        specs = parse_factors(factors)
        self.reverse = GradientReversal(1.0)
        self.heads = nn.ModuleDict(
            {
                f.name: nn.Sequential(nn.Linear(partition_dim, hidden), nn.ReLU(), nn.Linear(hidden, f.num_classes))
                for f in specs
            }
        )

    def forward(self, causal: torch.Tensor) -> dict[str, torch.Tensor]:
        reversed_features = self.reverse(causal)
        return {name: head(reversed_features) for name, head in self.heads.items()}


class GroupDRO(nn.Module):
    """Online group-robust weights: q_g <- q_g * exp(eta * loss_g), renormalised; loss = sum_g q_g * loss_g."""

    def __init__(self, n_groups: int, eta: float = 0.1) -> None:
        super().__init__()
        if n_groups < 1:
            raise ConfigError(f"GroupDRO needs at least one group, got {n_groups}.")
        if eta <= 0:
            raise ConfigError(f"train#trainer#group_dro_eta must be > 0 to use GroupDRO, got {eta}.")
        self.eta = float(eta)
        self.register_buffer("q", torch.full((n_groups,), 1.0 / n_groups))

    def forward(self, per_sample_loss: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        n = self.q.numel()
        sums = torch.zeros(n, device=per_sample_loss.device).index_add(0, groups, per_sample_loss)
        counts = torch.bincount(groups, minlength=n).to(per_sample_loss.dtype)
        present = counts > 0
        group_loss = torch.where(present, sums / counts.clamp_min(1), torch.zeros_like(sums))
        with torch.no_grad():
            q = self.q.to(per_sample_loss.device) * torch.exp(self.eta * group_loss.detach() * present)
            self.q.copy_(q / q.sum())
        return (self.q * group_loss).sum() / self.q[present].sum()
