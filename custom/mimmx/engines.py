"""MIMMXTrainer: MONAI's SupervisedTrainer whose loss is a configured list of terms (:mod:`mimmx.losses`).

Each iteration: one forward pass of the encoder and every head; each term's ``critic_update`` (inner steps of MI
critics or adversaries on detached features); then the terms' contributions in order, summed into one encoder
loss. ``ctx.task_loss`` is the running sum of the task (CE-type) terms, so a regulariser listed after them can scale
itself against it (MIMM-X's adaptive MI scale). A method is a list of terms: ERM is ``[head_ce]``, MIMM-X
``[head_ce, mi]``, GroupDRO ``[group_dro]``, the adversarial baseline ``[head_ce, adversary]`` (see
:mod:`mimmx.methods`). All term state (critics and their optimisers, pair-weight EMA, GroupDRO q, adversaries,
queues) lives in ``trainer.objective``, which the bundle's resumable checkpoint saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from mimmx.errors import ConfigError, TrainingError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.losses import LossTerm, StepContext
from mimmx.networks import CAUSAL, MIMMXNet

__all__ = ["MIMMXTrainer"]


class MIMMXTrainer(SupervisedTrainer):
    """Sum of configured loss terms inside MONAI's Ignite workflow.

    Args:
        network: a :class:`mimmx.networks.MIMMXNet`.
        optimizer: the encoder's optimiser; terms' ``encoder_side_parameters`` join it as extra parameter groups.
        factors: the model's factors; each factor's ``key`` is read from the batch.
        loss_terms: the terms of the objective, summed in order (task terms first, so that later terms can scale
            against ``ctx.task_loss``).
        target_key: batch key of the causal label.
        loss_terms_id: config id of ``loss_terms`` used in error messages.
        kwargs: passed to SupervisedTrainer (handlers, postprocessing, key_train_metric, ...).

    Raises:
        ConfigError: a term is not a LossTerm, two terms share a name, no term is a task term, or a term does not fit
            the network or factors (the message names ``loss_terms[i]``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: MIMMXNet,
        optimizer: torch.optim.Optimizer,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        loss_terms: Sequence[LossTerm],
        target_key: str = Keys.LABEL,
        loss_terms_id: str = "loss_terms",
        loss_function: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else nn.CrossEntropyLoss(),
            **kwargs,
        )
        self.factors = parse_factors(factors, config_id="train#trainer#factors")
        if [f.name for f in self.factors] != list(getattr(network, "factor_names", [])):
            raise ConfigError(
                "train#trainer#factors must be the factors the network was built with "
                f"({getattr(network, 'factor_names', None)}), got {[f.name for f in self.factors]}."
            )
        self.target_key = target_key
        self.objective = self._build_objective(loss_terms, loss_terms_id).to(device)
        for term in self.objective.values():
            params = list(term.encoder_side_parameters())
            if params:
                optimizer.add_param_group({"params": params})

    def _build_objective(self, loss_terms: Sequence[LossTerm], config_id: str) -> nn.ModuleDict:
        if isinstance(loss_terms, (LossTerm, str, Mapping)) or not isinstance(loss_terms, Sequence) or not loss_terms:
            raise ConfigError(f"{config_id}: expected a non-empty list of mimmx.losses terms, got {loss_terms!r}.")
        objective = nn.ModuleDict()
        for i, term in enumerate(loss_terms):
            term_id = f"{config_id}[{i}]"
            if not isinstance(term, LossTerm):
                raise ConfigError(f"{term_id}: expected a mimmx.losses.LossTerm, got {type(term).__name__} ({term!r}).")
            if term.name in objective:
                raise ConfigError(f"{term_id}: a second term named {term.name!r}; each term may appear once.")
            term.check(self.network, self.factors, term_id)
            objective[term.name] = term
        if not any(term.is_task_loss for term in objective.values()):
            raise ConfigError(
                f"{config_id}: no task term among {list(objective)}; add mimmx.losses.HeadCrossEntropy or "
                "GroupDROCrossEntropy."
            )
        return objective

    def _labels(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        keys = {CAUSAL: self.target_key, **{f.name: f.key for f in self.factors}}
        out = {}
        for name, key in keys.items():
            if key not in batchdata:
                raise ConfigError(f"batch has no key {key!r} (needed by head {name!r}); keys: {sorted(batchdata)}.")
            value = torch.as_tensor(batchdata[key])
            out[name] = value.view(-1).long().to(self.state.device, non_blocking=self.non_blocking)
        return out

    def _iteration(self, engine: MIMMXTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs = batchdata[Keys.IMAGE].to(engine.state.device, non_blocking=engine.non_blocking)
        labels = engine._labels(batchdata)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: labels[CAUSAL]}

        engine.network.train()
        engine.objective.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        features = engine.network.features(inputs)
        parts = engine.network.split(features)
        logits = engine.network.head_logits(parts)
        engine.state.output[Keys.PRED] = logits[CAUSAL]
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        ctx = StepContext(
            network=engine.network,
            features=features,
            parts=parts,
            logits=logits,
            labels=labels,
            factors=engine.factors,
            epoch=engine.state.epoch,
            iteration=engine.state.iteration,
            device=torch.device(engine.state.device),
        )
        stats: dict[str, float] = {}
        for term in engine.objective.values():
            stats.update(term.critic_update(ctx))
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)  # inner steps leave nothing behind

        loss = features.new_zeros(())
        for term in engine.objective.values():
            contribution, term_stats = term(ctx)
            stats.update(term_stats)
            loss = loss + contribution
            if term.is_task_loss:
                ctx.task_loss = contribution if ctx.task_loss is None else ctx.task_loss + contribution

        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss ({float(loss.detach())}) at epoch {engine.state.epoch}, "
                f"iteration {engine.state.iteration}: "
                f"{', '.join(f'{k}={v:.4g}' for k, v in stats.items())}. Lower the learning rate or mi_lambda, "
                "or check the input images for NaN/inf values."
            )
        engine.state.output[Keys.LOSS] = loss
        engine.state.output.update(stats)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
