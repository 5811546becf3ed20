"""Adversarial debiasing (Kim et al. 2019) as a loss term: one MLP per factor on the gradient-reversed causal part.

The adversary minimises its cross-entropy; through :class:`mimmx.baselines.GradientReversal` the encoder receives
the opposite gradient and hides the factor. Its parameters train in the main optimiser (the trainer adds
:meth:`FactorAdversaryTerm.encoder_side_parameters` as a parameter group), in the same step as the encoder, as in
the original method. ``adversary_steps > 0`` adds that many adversary-only updates per encoder step on detached
features, with the term's own Adam, so the adversary stays close to the best response (a weak adversary lets the
encoder look fair while the factor is still readable).

``conditional=True`` is the equalized-odds adversary of Zhang et al. (2018): it also sees the one-hot target, so it
can only profit from what the causal partition knows about a factor beyond the target. Where the training data ties
the factors to the target, the unconditional adversary also pushes the target itself out of the causal partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from mimmx.baselines import FactorAdversary
from mimmx.config import as_bool
from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import (
    LossTerm,
    StepContext,
    check_causal_reader,
    load_optimizer_state,
    optimizer_state,
    with_target,
)
from mimmx.names import ADV_PREFIX, CAUSAL

__all__ = ["FactorAdversaryTerm"]


class FactorAdversaryTerm(LossTerm):
    """``weight * sum_k CE(adversary_k(reverse(f_causal) [, onehot(y)]), z_k)``. Stats: ``adv_<factor>``.

    Args:
        partition_dim: width of the causal partition.
        factors: the factors to hide (each gets an adversary).
        num_classes: classes of the target (the one-hot width of a conditional adversary).
        weight: weight of the term (also the reversed gradient's scale on the encoder).
        hidden: hidden width of each adversary.
        conditional: also feed the one-hot target to the adversary (equalized odds).
        adversary_steps: extra adversary-only updates per encoder step, on detached features.
        lr: learning rate of the Adam used by those extra updates.
    """

    name = "adversary"

    def __init__(
        self,
        partition_dim: int,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        num_classes: int = 2,
        weight: float = 1.0,
        hidden: int = 32,
        conditional: bool = False,
        adversary_steps: int = 0,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"loss#adversary#weight must be >= 0, got {weight}.")
        if adversary_steps < 0:
            raise ConfigError(f"loss#adversary#adversary_steps must be >= 0, got {adversary_steps}.")
        self.factors = parse_factors(factors, config_id="loss#adversary#factors")
        self.partition_dim = int(partition_dim)
        self.num_classes = int(num_classes)
        self.weight = float(weight)
        self.conditional = as_bool(conditional, "loss#adversary#conditional")
        self.adversary_steps = int(adversary_steps)
        # the conditional adversary reads [causal, onehot(y)]; the reversal acts on both, but only the causal
        # partition carries a gradient back to the encoder
        width = self.partition_dim + (self.num_classes if self.conditional else 0)
        self.adversary = FactorAdversary(width, self.factors, hidden=hidden)
        self.optimizer = torch.optim.Adam(self.adversary.parameters(), lr=lr) if self.adversary_steps > 0 else None

    def check(self, network, factors, config_id: str) -> None:
        num_classes = self.num_classes if self.conditional else None
        check_causal_reader(network, factors, config_id, self.partition_dim, self.factors, num_classes)

    def encoder_side_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.adversary.parameters())

    def adversary_input(self, causal: Tensor, target: Tensor) -> Tensor:
        """What the adversary reads: the causal partition, beside the one-hot target if conditional."""
        if not self.conditional:
            return causal
        return with_target(causal, target, self.num_classes)

    def _losses(self, causal: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        logits = self.adversary(self.adversary_input(causal, ctx.labels[CAUSAL]))
        return {name: F.cross_entropy(value, ctx.labels[name]) for name, value in logits.items()}

    def critic_update(self, ctx: StepContext) -> dict[str, float]:
        if self.optimizer is None:
            return {}
        causal = ctx.parts[CAUSAL].detach()
        for _ in range(self.adversary_steps):
            self.optimizer.zero_grad(set_to_none=True)
            torch.stack(list(self._losses(causal, ctx).values())).sum().backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # the main optimiser also steps these parameters
        return {}

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        losses = self._losses(ctx.parts[CAUSAL], ctx)
        total = self.weight * torch.stack(list(losses.values())).sum()
        return total, {ADV_PREFIX + name: float(value.detach()) for name, value in losses.items()}

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": optimizer_state(self.optimizer)}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        load_optimizer_state(self.optimizer, state.get("optimizer"))
