"""An exponential moving average of the trained weights, validated, selected and saved in place of the last step's.

MIMM-X trains its encoder against critics: a min-max game whose last iterate can swing from one epoch to the next
(a shortcut, then its reverse, as the critics catch up), while the average of the iterates settles (the reason GAN
training evaluates averaged generators). :class:`WeightAverage` keeps that average with torch's own
``AveragedModel`` and hands it to the validator, so model selection and ``model.pt``, ``model_balanced_val.pt`` and
``model_last.pt`` all hold averaged weights, in the network's own flat format. ``epochs=0`` (the bundles' default)
keeps the plain network: nothing is copied and nothing changes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAverage", "ema_decay"]

logger = logging.getLogger("mimmx")


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average spans about ``epochs`` epochs (1 / (1 - decay) steps)."""
    if epochs <= 0:
        raise ValueError(f"average_epochs must be > 0 for an average, got {epochs}.")
    if steps_per_epoch < 1:
        raise ValueError(f"the training data loader has {steps_per_epoch} batches per epoch; at least 1 is needed.")
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


class WeightAverage:
    """The weights averaged over about the last ``epochs`` epochs of training (0: none, the network itself).

    Args:
        network: the network the trainer updates (the plain module, also under DistributedDataParallel).
        epochs: the span of the exponential average, in epochs (``average_epochs`` in train.yaml).
        steps_per_epoch: optimiser steps per epoch (``len`` of the training data loader).
    """

    def __init__(self, network: torch.nn.Module, epochs: float = 0.0, steps_per_epoch: int = 1) -> None:
        self.source = network
        self.epochs = float(epochs)
        self.averaged: AveragedModel | None = None
        if self.epochs > 0:
            decay = ema_decay(self.epochs, int(steps_per_epoch))
            self.averaged = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            logger.info("weights averaged over about %g epochs (EMA decay %.5f per step)", self.epochs, decay)

    @property
    def network(self) -> torch.nn.Module:
        """What validation, model selection and the saved models use."""
        return self.source if self.averaged is None else self.averaged.module

    def attach(self, engine: Engine) -> None:
        if self.averaged is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def update(self, engine: Engine | None = None) -> None:
        """Fold the network's current weights (and BatchNorm statistics) into the average."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.source)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.averaged is None else self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.averaged is not None:
            if not state:
                raise ValueError("the checkpoint holds no averaged weights, but average_epochs is > 0 in this config.")
            self.averaged.load_state_dict(state)
        elif state:
            raise ValueError("the checkpoint holds averaged weights, but average_epochs is 0 in this config.")
