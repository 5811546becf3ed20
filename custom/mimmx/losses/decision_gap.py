"""Within-class gaps of the causal head's decision between factor values: a critic-free check on what the MI term
leaves behind.

Decision leakage (the AUROC of the causal output against a factor inside each target class) is what the
inverted test split punishes, and it can stay at 0.65-0.75 while a critic on the causal partition reports about
0.1 nats: the encoder keeps moving the factor to where the current critic does not look. This term needs no
critic. For each target class c and factor k it compares, on the current batch, the mean margin of the causal
head (log-odds of the true class) across the factor's values, in units of the class's own spread:

    gap_k(c) = mean_z (mu(c, z) - mean_z' mu(c, z'))^2 / var(margin | y = c)

so 0 means the decision does not move with the factor inside the class, and a binary factor whose values shift
the margin by one within-class standard deviation scores 0.25. The spread is detached, so the encoder cannot
lower the term by spreading its margins. Groups with fewer than two images in the batch are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import LossTerm, StepContext, scheduled_weight
from mimmx.names import CAUSAL

__all__ = ["ConditionalDecisionGap", "true_class_margin"]


def true_class_margin(logits: Tensor, target: Tensor) -> Tensor:
    """Log-odds of the true class against all others: unlike its probability it does not saturate."""
    target = target.view(-1).long()
    true = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


class ConditionalDecisionGap(LossTerm):
    """``weight * sum_k mean_c gap_k(c)`` (see the module docstring). Stats: ``decision_gap|<factor>``.

    Args:
        factors: the factors the causal decision must not move with inside a target class.
        weight: weight of the term.
        min_group: images a (class, factor value) group needs in the batch to take part.
        warmup_epochs: epochs in which the term is logged but not applied.
    """

    name = "decision_gap"

    def __init__(
        self,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        weight: float = 1.0,
        min_group: int = 2,
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__()
        if weight < 0 or min_group < 2 or warmup_epochs < 0:
            raise ConfigError(
                "loss#decision_gap: expected weight >= 0, min_group >= 2 and warmup_epochs >= 0, got "
                f"{weight}, {min_group} and {warmup_epochs}."
            )
        self.factors = parse_factors(factors, config_id="loss#decision_gap#factors")
        self.weight = float(weight)
        self.min_group = int(min_group)
        self.warmup_epochs = int(warmup_epochs)

    def check(self, network, factors, config_id: str) -> None:
        unknown = sorted({f.name for f in self.factors} - {f.name for f in factors})
        if unknown:
            raise ConfigError(f"{config_id}: factors {unknown} are not the model's {[f.name for f in factors]}.")

    def gaps(self, logits: Tensor, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per factor, the mean over target classes of the normalised between-value variance of the margin."""
        target = labels[CAUSAL].view(-1).long()
        margin = true_class_margin(logits, target)
        out = {}
        for f in self.factors:
            factor = labels[f.name].view(-1).long()
            per_class = []
            for c in target.unique():
                in_class = target == c
                means = [
                    margin[in_class & (factor == z)].mean()
                    for z in factor[in_class].unique()
                    if int((in_class & (factor == z)).sum()) >= self.min_group
                ]
                if len(means) < 2:
                    continue
                means_t = torch.stack(means)
                spread = margin[in_class].detach().var().clamp_min(1e-6)
                per_class.append(((means_t - means_t.mean()) ** 2).mean() / spread)
            out[f.name] = torch.stack(per_class).mean() if per_class else margin.sum() * 0.0
        return out

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        values = self.gaps(ctx.logits[CAUSAL], ctx.labels)
        total = torch.stack(list(values.values())).sum()
        stats = {f"decision_gap|{name}": float(v.detach()) for name, v in values.items()}
        weight = scheduled_weight(self.weight, ctx.epoch, self.warmup_epochs)
        return (weight * total if weight else total.detach() * 0.0), stats
