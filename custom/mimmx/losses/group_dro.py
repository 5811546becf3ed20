"""GroupDRO (Sagawa et al. 2020) as a task term: the causal CE is a q-weighted sum of group CEs.

Groups are target x every factor (:func:`mimmx.baselines.group_index`); q follows the worst groups online and is a
buffer, so it is checkpointed. The factor heads keep their plain CE, as in :class:`HeadCrossEntropy`, so a GroupDRO
method is ``[group_dro]`` in place of ``[head_ce]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from mimmx.baselines import GroupDRO, group_index, num_groups
from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import LossTerm, StepContext
from mimmx.losses.head_ce import head_weights
from mimmx.names import CAUSAL, CE_PREFIX, DRO_PREFIX

__all__ = ["GroupDROCrossEntropy"]


class GroupDROCrossEntropy(LossTerm):
    """GroupDRO causal CE plus the factor heads' CE. Stats: ``dro_causal``, ``ce_<head>`` (plain CEs).

    Args:
        num_classes: classes of the target.
        factors: the model's factors (they define the groups and weigh the factor heads).
        eta: GroupDRO's step size for the group weights (> 0).
        causal_weight: weight of the causal (GroupDRO) loss.
    """

    name = "group_dro"
    is_task_loss = True

    def __init__(
        self,
        num_classes: int,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        eta: float = 0.1,
        causal_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if eta <= 0:
            raise ConfigError(f"loss#group_dro#eta must be > 0, got {eta}.")
        self.factors = parse_factors(factors, config_id="loss#group_dro#factors")
        self.num_classes = int(num_classes)
        self.causal_weight = float(causal_weight)
        self.dro = GroupDRO(num_groups(self.num_classes, self.factors), eta)

    def check(self, network, factors, config_id: str) -> None:
        if [f.name for f in self.factors] != [f.name for f in factors]:
            raise ConfigError(
                f"{config_id}: factors {[f.name for f in self.factors]} differ from the model's "
                f"{[f.name for f in factors]}."
            )
        if getattr(network, "num_classes", self.num_classes) != self.num_classes:
            raise ConfigError(f"{config_id}: num_classes {self.num_classes} but the network has {network.num_classes}.")

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        weights = head_weights(self.factors, causal_weight=self.causal_weight)
        ce = {name: F.cross_entropy(ctx.logits[name], ctx.labels[name]) for name in ctx.logits}
        per_sample = F.cross_entropy(ctx.logits[CAUSAL], ctx.labels[CAUSAL], reduction="none")
        groups = group_index(ctx.labels[CAUSAL], [ctx.labels[f.name] for f in self.factors], self.factors)
        fitted = ctx.fitted_rows()
        if fitted is not None:  # rows held out from the task loss are never fitted
            per_sample, groups = per_sample[fitted], groups[fitted]
        dro = self.dro(per_sample, groups)
        robust = {**ce, CAUSAL: dro}
        total = torch.stack([weights[name] * value for name, value in robust.items()]).sum()
        stats = {CE_PREFIX + name: float(value.detach()) for name, value in ce.items()}
        stats[DRO_PREFIX + CAUSAL] = float(dro.detach())
        return total, stats
