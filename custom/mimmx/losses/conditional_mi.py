"""MI between the causal partition and each factor's label, given the target, under a group-balanced view.

Why this is the quantity to minimise: where the training data tie a factor z to the target y (rho 0.9), a causal
partition f that encodes only the target still shares I(f; z) = I(y; z) with the factor, so an unconditional
penalty has a floor that a shortcut barely exceeds; what a shortcut adds is dependence on z *inside* each target
class, I(f; z | y). Measured on the raw training distribution, that dependence lives in the few images whose factor
disagrees with the target (10% of a class at rho 0.9) and batch estimators do not see it. So the estimate is taken
under a group-balanced view: within each target class every factor value weighs the same, the conditional prior
p(z | y) becomes uniform, and

    I_bal(f; z | y) = E_bal[ KL( p(z | f, y) || uniform ) ].

A critic q(z | f, y) (an MLP on the causal partition beside the one-hot target) is fitted by balanced
cross-entropy on a :class:`mimmx.losses.FeatureQueue` of recent detached causal features (thousands of samples per
class, so the rare groups are represented), and the encoder minimises the balanced mean of KL(q(z | f, y) || uniform)
on the current batch, whose gradient flows into the encoder. The value is an MI estimate in nats, zero only when the
critic cannot tell factor values apart beyond the target; unlike gradient reversal of the critic's cross-entropy it
is bounded below and cannot be lowered by making the critic confidently wrong. The weight is fixed: a scale tied to
the task gradient fades once the training images are fitted, which is when shortcuts set in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mimmx.baselines import group_index, num_groups
from mimmx.config import as_bool
from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import (
    LossTerm,
    StepContext,
    check_causal_reader,
    load_optimizer_state,
    optimizer_state,
    scheduled_weight,
    with_target,
)
from mimmx.losses.queue import FeatureQueue
from mimmx.names import CAUSAL, CRITIC_LOSS, MI_PREFIX, MI_SCALE, PAIR_SEP, WEIGHT_PREFIX, pair_name
from mimmx.objective import adaptive_mi_scale

__all__ = ["ConditionalFactorMI", "ConditionalDecisionMI", "balanced_weights", "START_CES"]

START_CES = ("plain", "group_balanced")  # the causal CEs that start_below_chance can read
STD_FLOOR = 1e-6  # a standardised logit of a batch whose logits are all equal stays finite


def balanced_weights(target: Tensor, factor: Tensor, num_factor_classes: int) -> Tensor:
    """Sample weights (summing to 1) under which, inside each target class, every present factor value weighs the same
    and every present target class weighs the same."""
    target, factor = target.view(-1).long(), factor.view(-1).long()
    cell = target * num_factor_classes + factor
    counts = torch.bincount(cell, minlength=int(cell.max()) + 1).to(torch.float32)
    weights = 1.0 / counts[cell]
    return weights / weights.sum()


class ConditionalFactorMI(LossTerm):
    """``weight * sum_k I_bal(f_causal; z_k | y)`` with one critic per factor. Stats: ``mi_causal|<factor>|target``.

    Args:
        partition_dim: width of the causal partition.
        factors: the factors whose labels the causal partition must not carry beyond the target.
        num_classes: classes of the target.
        weight: weight of the term (fixed; see the module docstring).
        queue_size: causal feature rows kept for the critics (0: the current batch only).
        hidden: hidden width of each critic.
        critic_steps: critic updates per encoder step (each on the whole queue).
        lr: learning rate of the critics' Adam.
        warmup_epochs: epochs in which the critics train but the encoder is not penalised.
        ramp_epochs: after the warm-up, the weight grows linearly from ``weight / ramp_epochs`` to ``weight`` over
            this many epochs (0: full weight at once). A full penalty from the first step can collapse the causal
            partition before the balanced CE has found the target, leaving the CE at chance for several epochs.
        adaptive_scale: scale the penalty's gradient to at most the task loss's (as the earlier objective did); off
            by default, since that scale fades once the training images are fitted (kept for the ablation).
        held_out_only: critics train, and the penalty is estimated, on the rows held out from the task loss only
            (``held_out_fraction`` in the bundle, :mod:`mimmx.held_out`): the fitted images hide the dependence.
        start_below_chance: above 0, the warm-up also lasts until an epoch ends in which the causal head's mean
            cross-entropy was below this fraction of chance (ln ``num_classes``); the ramp starts after it. A
            penalty on a partition that has learnt nothing yet can only flatten it, and when the cue is slow to
            learn (strong augmentation) a fixed warm-up ends too early.
        start_ce: which causal CE ``start_below_chance`` reads: ``"plain"``, the mean over the epoch's rows, or
            ``"group_balanced"``, the mean over target x factor groups of each group's mean over the epoch. The plain
            CE falls below the mark through a shortcut once several factors explain the target, while the head is
            still at chance on the groups where factor and target disagree.

    The weight in force is logged as ``weight_factor_mi`` (its first epoch above 0 is where the ramp started).
    """

    name = "factor_mi"
    source = CAUSAL  # what the critics read, as named in the stats
    critic_suffix = "_cond"

    def __init__(
        self,
        partition_dim: int,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        num_classes: int = 2,
        weight: float = 1.0,
        queue_size: int = 4096,
        hidden: int = 64,
        critic_steps: int = 1,
        lr: float = 1e-3,
        warmup_epochs: int = 0,
        ramp_epochs: int = 0,
        adaptive_scale: bool = False,
        held_out_only: bool = False,
        start_below_chance: float = 0.0,
        start_ce: str = "plain",
    ) -> None:
        super().__init__()
        checked = (
            ("weight", weight),
            ("queue_size", queue_size),
            ("critic_steps", critic_steps),
            ("warmup_epochs", warmup_epochs),
            ("ramp_epochs", ramp_epochs),
            ("start_below_chance", start_below_chance),
        )
        for key, value in checked:
            if value < 0:
                raise ConfigError(f"loss#factor_mi#{key} must be >= 0, got {value}.")
        self.factors = parse_factors(factors, config_id="loss#factor_mi#factors")
        self.partition_dim = int(partition_dim)
        self.num_classes = int(num_classes)
        self.weight = float(weight)
        self.critic_steps = int(critic_steps)
        self.warmup_epochs = int(warmup_epochs)
        self.ramp_epochs = int(ramp_epochs)
        self.adaptive_scale = as_bool(adaptive_scale, "loss#factor_mi#adaptive_scale")
        self.held_out_only = as_bool(held_out_only, f"loss#{self.name}#held_out_only")
        if start_below_chance >= 1:
            raise ConfigError(f"loss#{self.name}#start_below_chance must be below 1, got {start_below_chance}.")
        self.start_below_chance = float(start_below_chance)
        if start_ce not in START_CES:
            raise ConfigError(f"loss#{self.name}#start_ce must be one of {START_CES}, got {start_ce!r}.")
        self.start_ce = start_ce
        # the causal CE of the epoch in progress (per-group sums and rows, one group for "plain") and the epoch after
        # which the ramp may start
        groups = num_groups(self.num_classes, self.factors) if start_ce == "group_balanced" else 1
        self._ce_epoch = 0
        self._ce_sums = [0.0] * groups
        self._ce_rows = [0] * groups
        self.learnt_by_epoch: int | None = None
        self.critics = nn.ModuleDict(
            {
                f.name: nn.Sequential(
                    nn.Linear(self.partition_dim + self.num_classes, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, f.num_classes),
                )
                for f in self.factors
            }
        )
        label_names = [CAUSAL] + [f.name for f in self.factors]
        self.queue = (
            FeatureQueue(queue_size, {CAUSAL: self.partition_dim}, label_names=label_names) if queue_size else None
        )
        self.optimizer = torch.optim.Adam(self.critics.parameters(), lr=lr)

    def check(self, network, factors, config_id: str) -> None:
        check_causal_reader(network, factors, config_id, self.partition_dim, self.factors, self.num_classes)

    def reads(self, ctx: StepContext) -> Tensor:
        """The tensor whose dependence on each factor beyond the target is penalised: the causal partition."""
        return ctx.parts[CAUSAL]

    def read(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """What this term reads and the labels it conditions on: every row of the batch, or only the rows held out
        from the task loss (``held_out_only``; possibly none in a given batch)."""
        source, labels = self.reads(ctx), ctx.labels
        if not self.held_out_only:
            return source, labels
        if ctx.held_out is None:
            raise ConfigError(
                f"loss#{self.name}#held_out_only is true but the training split holds no rows out; set "
                "held_out_fraction above 0 (mimmx.held_out)."
            )
        return source[ctx.held_out], {name: value[ctx.held_out] for name, value in labels.items()}

    def critic_update(self, ctx: StepContext) -> dict[str, float]:
        source, all_labels = self.read(ctx)
        labels = {name: all_labels[name] for name in [CAUSAL, *(f.name for f in self.factors)]}
        parts = {CAUSAL: source.detach()}
        if self.queue is not None:
            self.queue.push(parts, labels)
            parts, labels = self.queue.get()
        if parts[CAUSAL].shape[0] == 0:  # no held-out row seen yet
            return {}
        x = with_target(parts[CAUSAL], labels[CAUSAL], self.num_classes)
        loss = torch.zeros(())
        for _ in range(self.critic_steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.stack(
                [
                    (
                        F.cross_entropy(self.critics[f.name](x), labels[f.name], reduction="none")
                        * balanced_weights(labels[CAUSAL], labels[f.name], f.num_classes)
                    ).sum()
                    for f in self.factors
                ]
            ).sum()
            loss.backward()
            self.optimizer.step()
        return {CRITIC_LOSS + self.critic_suffix: float(loss.detach())}

    def estimate(self, causal: Tensor, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """I_bal(causal; z_k | y) per factor from the current critics (differentiable w.r.t. ``causal``)."""
        x = with_target(causal, labels[CAUSAL], self.num_classes)
        out = {}
        for f in self.factors:
            log_q = F.log_softmax(self.critics[f.name](x), dim=1)
            kl = (log_q.exp() * (log_q + math.log(f.num_classes))).sum(dim=1)
            out[f.name] = (kl * balanced_weights(labels[CAUSAL], labels[f.name], f.num_classes)).sum()
        return out

    def epoch_causal_ce(self) -> float | None:
        """The tracked causal CE of the epoch in progress: the mean over its groups that had rows (None: no rows)."""
        means = [total / rows for total, rows in zip(self._ce_sums, self._ce_rows, strict=True) if rows]
        return sum(means) / len(means) if means else None

    def track_causal_ce(self, ctx: StepContext) -> None:
        """Close the previous epoch's causal CE when a new epoch starts, then add this batch's."""
        if not self.start_below_chance or self.learnt_by_epoch is not None or CAUSAL not in ctx.logits:
            return
        if ctx.epoch != self._ce_epoch:
            ce = self.epoch_causal_ce()
            if ce is not None and ce < self.start_below_chance * math.log(self.num_classes):
                self.learnt_by_epoch = self._ce_epoch
                return
            self._ce_epoch = ctx.epoch
            self._ce_sums = [0.0] * len(self._ce_sums)
            self._ce_rows = [0] * len(self._ce_rows)
        target = ctx.labels[CAUSAL].view(-1).long()
        ce = F.cross_entropy(ctx.logits[CAUSAL].detach(), target, reduction="none")
        if len(self._ce_sums) == 1:
            groups = torch.zeros_like(target)
        else:
            groups = group_index(target, [ctx.labels[f.name].view(-1).long() for f in self.factors], self.factors)
        size = len(self._ce_sums)
        sums = torch.bincount(groups, weights=ce.double(), minlength=size).tolist()
        rows = torch.bincount(groups, minlength=size).tolist()
        self._ce_sums = [a + b for a, b in zip(self._ce_sums, sums, strict=True)]
        self._ce_rows = [a + b for a, b in zip(self._ce_rows, rows, strict=True)]

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        self.track_causal_ce(ctx)
        source, labels = self.read(ctx)
        if source.shape[0] == 0:  # no held-out row in this batch: nothing to estimate on
            return source.sum() * 0.0, {}
        values = self.estimate(source, labels)
        total = torch.stack(list(values.values())).sum()
        stats = {
            f"{MI_PREFIX}{pair_name(self.source, name)}{PAIR_SEP}target": float(v.detach())
            for name, v in values.items()
        }
        weight = self.weight_at(ctx.epoch)
        stats[WEIGHT_PREFIX + self.name] = weight
        if weight == 0.0:
            return total.detach() * 0.0, stats
        if self.adaptive_scale and ctx.task_loss is not None:
            scale = adaptive_mi_scale(ctx.task_loss, total, ctx.features)
            stats[MI_SCALE] = float(scale)
            return weight * scale * total, stats
        return weight * total, stats

    def weight_at(self, epoch: int) -> float:
        """The penalty's weight in ``epoch`` (1-based): 0 during the warm-up, then the linear ramp, then ``weight``."""
        warmup = self.warmup_epochs
        if self.start_below_chance:
            if self.learnt_by_epoch is None:
                return 0.0
            warmup = max(warmup, self.learnt_by_epoch)
        return scheduled_weight(self.weight, epoch, warmup, self.ramp_epochs)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "optimizer": optimizer_state(self.optimizer),
            "causal_ce": {"epoch": self._ce_epoch, "sums": list(self._ce_sums), "rows": list(self._ce_rows)},
            "learnt": self.learnt_by_epoch,
        }

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        load_optimizer_state(self.optimizer, state.get("optimizer"))
        ce = state.get("causal_ce")
        if isinstance(ce, Sequence) and len(ce) == 3 and len(self._ce_sums) == 1:  # before start_ce: [sum, rows, epoch]
            ce = {"sums": [ce[0]], "rows": [ce[1]], "epoch": ce[2]}
        if isinstance(ce, Mapping) and len(ce["sums"]) == len(self._ce_sums):
            self._ce_epoch, self._ce_sums, self._ce_rows = int(ce["epoch"]), list(ce["sums"]), list(ce["rows"])
        self.learnt_by_epoch = state.get("learnt")


class ConditionalDecisionMI(ConditionalFactorMI):
    """``weight * sum_k I_bal(causal logits; z_k | y)``: the same estimate, read from the causal head's decision
    instead of its partition. Stats: ``mi_decision|<factor>|target``.

    The partition term can be met by moving the factor to where the current critic does not look (after training,
    fresh probes still read every factor from the partition), while what the inverted test split punishes is the
    decision's dependence on a factor inside each target class. The decision is ``num_classes`` numbers, so a critic
    on it is near-optimal within a few steps and leaves the encoder nowhere to hide the factor from it. Same
    arguments as :class:`ConditionalFactorMI` except ``partition_dim`` (the critics read ``num_classes`` logits), and:

    Args:
        standardise: the critics read each logit centred and divided by its standard deviation over the batch
            (with gradient), so that the estimate does not change with the logits' scale. On raw logits a critic
            reads less from smaller logits, so the penalty can always be lowered by shrinking every logit towards a
            constant decision, the same for every image. Standardised, the penalty is lowered only by a decision
            that moves less with the factor inside each class (or follows nothing in the image: an early penalty
            still held the causal CE at chance on most runs, point 37 of docs/results.md).
    """

    name = "decision_mi"
    source = "decision"
    critic_suffix = "_decision"

    def __init__(
        self,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        num_classes: int = 2,
        standardise: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(partition_dim=num_classes, factors=factors, num_classes=num_classes, **kwargs)
        self.standardise = as_bool(standardise, f"loss#{self.name}#standardise")

    def check(self, network, factors, config_id: str) -> None:
        check_causal_reader(
            network, factors, config_id, getattr(network, "partition_dim", 0), self.factors, self.num_classes
        )

    def reads(self, ctx: StepContext) -> Tensor:
        """The causal head's logits, standardised over the batch when ``standardise`` is set."""
        logits = ctx.logits[CAUSAL]
        if not self.standardise or logits.shape[0] < 2:
            return logits
        return (logits - logits.mean(dim=0)) / logits.std(dim=0).clamp_min(STD_FLOOR)
