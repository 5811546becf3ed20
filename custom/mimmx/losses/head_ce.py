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

from mimmx.baselines import group_index, num_groups
from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import LossTerm, StepContext
from mimmx.names import CAUSAL, CE_PREFIX

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
        group_weights: optional weight per target x factor group id (``mimmx.baselines.group_index`` order, e.g. from
            :func:`mimmx.losses.group_weights.group_loss_weights`): the causal CE becomes the group-balanced risk.
        group_log_prior: optional log p(target | factors) per group id, the same order (e.g. from
            :func:`mimmx.losses.group_weights.group_log_prior`): added to the causal logits inside the CE only, so the
            factor labels explain their share of the target and the causal head learns the rest. The logged
            ``ce_causal`` stays the CE of the causal logits alone, as deployed.
    """

    name = "head_ce"
    is_task_loss = True

    def __init__(
        self,
        factors: Sequence[Mapping[str, Any] | FactorSpec] | None = None,
        weights: Mapping[str, float] | None = None,
        causal_weight: float = 1.0,
        group_weights: torch.Tensor | None = None,
        group_log_prior: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if group_weights is not None and group_log_prior is not None:
            raise ConfigError(
                "loss#head_ce: set group_weights or group_log_prior, not both (each alone removes the factors' share "
                "of the target from the causal CE)."
            )
        self.register_buffer("group_weights", None if group_weights is None else torch.as_tensor(group_weights).float())
        self.register_buffer(
            "group_log_prior", None if group_log_prior is None else torch.as_tensor(group_log_prior).float()
        )
        self.factors = None if factors is None else parse_factors(factors, config_id="loss#head_ce#factors")
        self.weights = dict(weights or {})
        self.causal_weight = float(causal_weight)

    def check(self, network, factors, config_id: str) -> None:
        specs = self.factors or factors
        expected = num_groups(getattr(network, "num_classes", 2), specs)
        for key in ("group_weights", "group_log_prior"):
            table = getattr(self, key)
            if table is not None and table.numel() != expected:
                raise ConfigError(
                    f"{config_id}: {key} has {table.numel()} entries, expected {expected} "
                    "(target classes x every factor's classes)."
                )
        heads = {CAUSAL, *(f.name for f in specs)}
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
        ce, terms = {}, []  # the logged CE of each head, and each head's weighted loss
        for name, logits in ctx.logits.items():
            loss = self.causal_loss(ctx) if name == CAUSAL else F.cross_entropy(logits, ctx.labels[name])
            logged = name == CAUSAL and self.group_log_prior is not None
            ce[name] = F.cross_entropy(logits.detach(), ctx.labels[name]) if logged else loss  # the deployed logits
            terms.append(weights[name] * loss)
        return torch.stack(terms).sum(), {CE_PREFIX + name: float(value.detach()) for name, value in ce.items()}

    def causal_loss(self, ctx: StepContext) -> Tensor:
        """The causal head's CE: plain, group-balanced or on prior-adjusted logits, over the rows it may fit."""
        factors = self.factors or ctx.factors
        target, logits = ctx.labels[CAUSAL], ctx.logits[CAUSAL]
        zs = [ctx.labels[f.name].view(-1).long() for f in factors]
        if self.group_log_prior is not None:  # the factor labels' prior as a second expert, inside the CE only
            factor_group = group_index(torch.zeros_like(target).long(), zs, factors)  # target is the top digit
            logits = logits + self.group_log_prior.view(logits.shape[1], -1)[:, factor_group].T
        per_sample = F.cross_entropy(logits, target, reduction="none")
        if self.group_weights is not None:  # the group-balanced risk of the causal head
            per_sample = per_sample * self.group_weights[group_index(target, zs, factors)]
        fitted = ctx.fitted_rows()
        # rows held out from the task loss are never fitted; the mean is over the others (0 when none are left)
        return per_sample.mean() if fitted is None else (per_sample * fitted).sum() / fitted.sum().clamp(min=1)
