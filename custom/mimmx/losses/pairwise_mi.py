"""MIMM-X's MI penalty between partitions, as a loss term that owns its critics, their optimiser and pair weights.

Per iteration: ``critic_steps`` updates of the critics on the detached partitions (optionally together with a
:class:`FeatureQueue` of recent batches), then the estimate on the current batch with gradient to the encoder,
weighted per pair by :class:`mimmx.objective.DynamicPairWeights` and scaled by
:func:`mimmx.objective.adaptive_mi_scale` so the MI gradient never outweighs the task terms' (``ctx.task_loss``).
During ``warmup_epochs`` the critics train and the estimate is logged, but nothing reaches the encoder.
``mi_lambda = 0`` turns the term off entirely (no critic updates, no stats): the same config is then plain ERM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mimmx.config import as_bool
from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses.base import LossTerm, StepContext, load_optimizer_state, optimizer_state
from mimmx.losses.queue import FeatureQueue
from mimmx.mi import PairwiseMI
from mimmx.names import CAUSAL, CRITIC_LOSS, MI_PREFIX, MI_SCALE, MI_TOTAL, WEIGHT_PREFIX
from mimmx.objective import DynamicPairWeights, adaptive_mi_scale

__all__ = ["PairwiseMITerm"]


class PairwiseMITerm(LossTerm):
    """``mi_lambda * scale * sum_p v_p MI_p / sum_p v_p``.

    Stats: ``mi_<pair>``, ``weight_<pair>``, ``mi_total``, ``mi_scale``, ``critic_loss``.

    Args:
        estimator: the pairwise estimator over the network's partitions.
        mi_lambda: weight of the term (>= 0; 0 disables it).
        critic_optimizer: optimiser of the critics; None builds Adam(lr=critic_lr) for estimators with a critic.
        critic_lr: learning rate of that Adam.
        critic_steps: critic updates per encoder step.
        adaptive_scale: rescale the MI gradient on the shared features to at most the task loss's.
        weight_power: exponent of the dynamic pair weights (0 keeps the configured weights).
        weight_momentum: EMA momentum of the pair MIs behind the dynamic weights.
        warmup_epochs: epochs in which the term only trains the critics.
        factors: the model's factors (their ``weight`` gives each pair's base weight); None: the trainer's.
        queue: optional :class:`FeatureQueue`; the critics then train on the batch plus the queue's rows.
    """

    name = "mi"

    def __init__(
        self,
        estimator: PairwiseMI,
        mi_lambda: float = 0.5,
        critic_optimizer: torch.optim.Optimizer | None = None,
        critic_lr: float = 1e-3,
        critic_steps: int = 1,
        adaptive_scale: bool = True,
        weight_power: float = 1.0,
        weight_momentum: float = 0.9,
        warmup_epochs: int = 0,
        factors: Sequence[Mapping[str, Any] | FactorSpec] | None = None,
        queue: FeatureQueue | None = None,
    ) -> None:
        super().__init__()
        if mi_lambda < 0:
            raise ConfigError(f"mi_lambda (loss#mi#mi_lambda) must be >= 0, got {mi_lambda}.")
        if critic_steps < 0:
            raise ConfigError(f"loss#mi#critic_steps must be >= 0, got {critic_steps}.")
        if not isinstance(estimator, PairwiseMI):
            raise ConfigError(f"loss#mi#estimator must be a mimmx.mi.PairwiseMI, got {type(estimator).__name__}.")
        self.estimator = estimator
        self.mi_lambda = float(mi_lambda)
        self.critic_steps = int(critic_steps)
        self.adaptive_scale = as_bool(adaptive_scale, "loss#mi#adaptive_scale")
        self.warmup_epochs = int(warmup_epochs)
        self.queue = queue
        self.critic_optimizer = critic_optimizer
        if critic_optimizer is None and estimator.has_critic:
            self.critic_optimizer = torch.optim.Adam(estimator.parameters(), lr=critic_lr)
        self._factors_given = factors is not None
        specs = parse_factors(factors, config_id="loss#mi#factors") if factors is not None else []
        self.pair_weights = DynamicPairWeights(
            estimator.pair_names, {f.name: f.weight for f in specs}, momentum=weight_momentum, power=weight_power
        )

    @property
    def active(self) -> bool:
        return self.mi_lambda > 0

    def check(self, network, factors, config_id: str) -> None:
        expected = set(getattr(network, "partition_names", []))
        used = {name for pair in self.estimator.pairs for name in pair}
        if expected and not used <= expected:
            raise ConfigError(
                f"{config_id}: the MI estimator's partitions {sorted(used)} are not all partitions of the network "
                f"{sorted(expected)}."
            )
        if not self._factors_given:  # pair base weights from the trainer's factors
            power, momentum = self.pair_weights.power, self.pair_weights.momentum
            self.pair_weights = DynamicPairWeights(
                self.estimator.pair_names, {f.name: f.weight for f in factors}, momentum=momentum, power=power
            )

    def critic_update(self, ctx: StepContext) -> dict[str, float]:
        if not self.active:
            return {}
        parts = {k: v.detach() for k, v in ctx.parts.items()}
        labels = ctx.labels
        if self.queue is not None:
            parts, labels = self.queue.concat(parts, labels)
        loss = torch.zeros(())
        if self.estimator.has_critic and self.critic_steps > 0:
            self.estimator.train()
            for _ in range(self.critic_steps):
                self.critic_optimizer.zero_grad(set_to_none=True)
                loss = self.estimator.critic_loss(parts, condition=labels[CAUSAL], labels=labels)
                loss.backward()
                self.critic_optimizer.step()
        if self.queue is not None:
            self.queue.push(ctx.parts, ctx.labels)
        return {CRITIC_LOSS: float(loss.detach())}

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        zero = ctx.features.new_zeros(())
        if not self.active:
            return zero, {}
        self.estimator.train()
        mi_on = ctx.epoch > self.warmup_epochs
        with torch.set_grad_enabled(mi_on):
            mi_input = ctx.parts if mi_on else {k: v.detach() for k, v in ctx.parts.items()}
            pairs = self.estimator(mi_input, condition=ctx.labels[CAUSAL], labels=ctx.labels)
        self.pair_weights.update(pairs)
        weights = self.pair_weights.weights().to(ctx.features.device)
        mi_total = (weights * torch.stack([pairs[p] for p in self.estimator.pair_names])).sum() / weights.sum()
        scale = torch.ones((), device=ctx.features.device)
        contribution = zero
        if mi_on:
            task = ctx.task_loss
            if self.adaptive_scale and task is not None and task.requires_grad:
                scale = adaptive_mi_scale(task, mi_total, ctx.features)
            contribution = self.mi_lambda * scale * mi_total
        stats = {MI_PREFIX + p: float(v.detach()) for p, v in pairs.items()}
        stats.update({WEIGHT_PREFIX + p: float(w) for p, w in zip(self.estimator.pair_names, weights, strict=True)})
        stats[MI_TOTAL] = float(mi_total.detach())
        stats[MI_SCALE] = float(scale)
        return contribution, stats

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "critic_optimizer": optimizer_state(self.critic_optimizer),
            "pair_weights": self.pair_weights.state_dict(),
        }

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        load_optimizer_state(self.critic_optimizer, state.get("critic_optimizer"))
        self.pair_weights.load_state_dict(state.get("pair_weights", {}))
