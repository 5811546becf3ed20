"""The interface every training-objective term implements, and the per-iteration context the trainer hands it.

A method is a list of terms (:mod:`mimmx.methods`); :class:`mimmx.engines.MIMMXTrainer` sums their contributions.
A term is an ``nn.Module`` so that everything it must carry across a resume (critics, their optimisers, running
averages, group weights, feature queues) is part of its ``state_dict``; the trainer exposes all terms as
``trainer.objective`` and the bundle checkpoints that one object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec

__all__ = [
    "StepContext",
    "LossTerm",
    "optimizer_state",
    "load_optimizer_state",
    "with_target",
    "check_causal_reader",
    "scheduled_weight",
]


@dataclass
class StepContext:
    """What one training iteration knows, shared by every term.

    Attributes:
        network: the :class:`mimmx.networks.MIMMXNet` being trained.
        features: (B, D) shared feature tensor, all partitions side by side (with grad).
        parts: partition name -> (B, d) view of ``features``.
        logits: head name -> (B, C) logits of that head.
        labels: name -> (B,) long labels; ``"causal"`` is the target, each factor name its factor's label.
        factors: the model's factors (order of the network's partitions).
        epoch: current epoch (1-based, as Ignite counts).
        iteration: global iteration (1-based).
        task_loss: running sum of the contributions of the task terms evaluated so far (``is_task_loss``); the
            reference that adaptive scaling compares a regulariser's gradient with.
        held_out: (B,) bool, rows held out from the causal task loss (:mod:`mimmx.held_out`); None when the
            training split holds none out.
        device: where the batch lives.
    """

    network: nn.Module
    features: Tensor
    parts: dict[str, Tensor]
    logits: dict[str, Tensor]
    labels: dict[str, Tensor]
    factors: list[FactorSpec]
    epoch: int = 1
    iteration: int = 1
    task_loss: Tensor | None = None
    held_out: Tensor | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def fitted_rows(self) -> Tensor | None:
        """Rows a task term fits: all but those held out (:mod:`mimmx.held_out`); None when none are held out."""
        return None if self.held_out is None else ~self.held_out


class LossTerm(nn.Module):
    """One additive term of the encoder objective.

    Subclasses implement :meth:`forward`; optional hooks:

    * :meth:`critic_update` runs before the encoder loss, for inner updates of the term's own networks (MI critics,
      adversaries) on detached features with the term's own optimiser. It must not leave gradients on the encoder.
    * :meth:`encoder_side_parameters` returns parameters that the trainer adds to the main optimiser as one more
      parameter group, so they train in the same step as the encoder (the gradient-reversal adversary).
    * :meth:`check` validates the term against the network and factors when the trainer is built, raising
      :class:`mimmx.errors.ConfigError` that names ``config_id``.

    Anything to checkpoint goes into the module's state: parameters, buffers, and for non-tensor state (an
    optimiser's, an EMA) :meth:`get_extra_state` / :meth:`set_extra_state`.

    Attributes:
        name: key of the term in ``trainer.objective`` and in its checkpoint.
        is_task_loss: True for terms that fit the target (CE-type); their sum is ``ctx.task_loss``.
    """

    name: str = "term"
    is_task_loss: bool = False

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover - abstract
        """The term's weighted contribution to the encoder loss (scalar tensor) and its stats for logging."""
        raise NotImplementedError

    def critic_update(self, ctx: StepContext) -> dict[str, float]:
        """Inner updates before the encoder loss (default: none). Returns stats for logging."""
        return {}

    def encoder_side_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimiser trains together with the encoder (default: none)."""
        return []

    def check(self, network: nn.Module, factors: Sequence[FactorSpec], config_id: str) -> None:
        """Raise ConfigError (naming ``config_id``) if the term does not fit the network or factors."""


def optimizer_state(optimizer: torch.optim.Optimizer | None) -> dict[str, Any] | None:
    """An optimiser's state for a term's extra state (None when the term has none)."""
    return None if optimizer is None else optimizer.state_dict()


def load_optimizer_state(optimizer: torch.optim.Optimizer | None, state: Mapping[str, Any] | None) -> None:
    """Restore what :func:`optimizer_state` saved (nothing to do when either side has no optimiser)."""
    if optimizer is not None and state is not None:
        optimizer.load_state_dict(state)


def with_target(causal: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """The causal partition beside the one-hot target: the input of class-conditional critics and adversaries."""
    return torch.cat([causal, nn.functional.one_hot(target.view(-1).long(), num_classes).to(causal.dtype)], dim=1)


def check_causal_reader(
    network: nn.Module,
    factors: Sequence[FactorSpec],
    config_id: str,
    partition_dim: int,
    term_factors: Sequence[FactorSpec],
    num_classes: int | None = None,
) -> None:
    """ConfigError (naming ``config_id``) when a term that reads the causal partition does not fit the network:
    another partition width, another number of target classes (checked when given), or factors the model lacks."""
    if getattr(network, "partition_dim", partition_dim) != partition_dim:
        raise ConfigError(f"{config_id}: partition_dim {partition_dim} but the network's is {network.partition_dim}.")
    if num_classes is not None and getattr(network, "num_classes", num_classes) != num_classes:
        raise ConfigError(f"{config_id}: num_classes {num_classes} but the network has {network.num_classes}.")
    unknown = sorted({f.name for f in term_factors} - {f.name for f in factors})
    if unknown:
        raise ConfigError(f"{config_id}: factors {unknown} are not the model's {[f.name for f in factors]}.")


def scheduled_weight(weight: float, epoch: int, warmup_epochs: int = 0, ramp_epochs: int = 0) -> float:
    """A penalty's weight in ``epoch`` (1-based): 0 during the warm-up, then a linear ramp, then ``weight``."""
    active = epoch - warmup_epochs
    if active <= 0:
        return 0.0
    if ramp_epochs and active < ramp_epochs:
        return weight * active / ramp_epochs
    return weight
