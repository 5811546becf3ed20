"""Cross-entropy of every head: the task term of ERM and MIMM-X.

The spurious partitions' heads train too (each with its factor's configured ``weight``): that is what makes each
spurious partition hold its factor, so the MI penalty can push the factor out of the causal partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import LossTerm, StepContext
from mimmx.networks import CAUSAL

__all__ = ["HeadCrossEntropy", "head_weights"]


def head_weights(
    factors: Sequence[FactorSpec], weights: Mapping[str, float] | None = None, causal_weight: float = 1.0
) -> dict[str, float]:
    """CE weight per head: the causal weight, each factor's configured weight, explicit ``weights`` on top."""
    out = {CAUSAL: float(causal_weight), **{f.name: float(f.weight) for f in factors}}
    out.update({k: float(v) for k, v in (weights or {}).items()})
    return out


class HeadCrossEntropy(LossTerm):
    """Weighted sum of each head's cross-entropy. Stats: ``ce_<head>`` (unweighted).

    Args:
        factors: the model's factors (their ``weight`` weighs their heads); None takes them from the trainer.
        weights: explicit head name -> weight, overriding the factors' weights.
        causal_weight: weight of the causal head.
    """

    name = "head_ce"
    is_task_loss = True

    def __init__(
        self,
        factors: Sequence[Mapping[str, Any] | FactorSpec] | None = None,
        weights: Mapping[str, float] | None = None,
        causal_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.factors = None if factors is None else parse_factors(factors, config_id="loss#head_ce#factors")
        self.weights = dict(weights or {})
        self.causal_weight = float(causal_weight)

    def check(self, network, factors, config_id: str) -> None:
        heads = {CAUSAL, *(f.name for f in (self.factors or factors))}
        unknown = sorted(set(self.weights) - heads)
        if unknown:
            raise ConfigError(f"{config_id}: weights for unknown heads {unknown}; heads are {sorted(heads)}.")
        if self.factors is not None and [f.name for f in self.factors] != [f.name for f in factors]:
            raise ConfigError(
                f"{config_id}: factors {[f.name for f in self.factors]} differ from the model's "
                f"{[f.name for f in factors]}."
            )

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        weights = head_weights(self.factors or ctx.factors, self.weights, self.causal_weight)
        ce = {name: F.cross_entropy(ctx.logits[name], ctx.labels[name]) for name in ctx.logits}
        total = torch.stack([weights[name] * value for name, value in ce.items()]).sum()
        return total, {f"ce_{name}": float(value.detach()) for name, value in ce.items()}
