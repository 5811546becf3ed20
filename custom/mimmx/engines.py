"""MIMMXTrainer: MONAI's SupervisedTrainer with MIMM-X's alternating critic and encoder steps.

Each iteration: one forward pass of the encoder; ``critic_steps`` updates of the MI critics on the detached
partitions; one encoder step on the weighted cross-entropy of every head plus ``mi_lambda`` times the
(adaptively scaled, per-pair weighted) MI between partitions. With ``mi_lambda = 0`` it is plain ERM with the
same network, data and budget (the heads of the spurious partitions still train, which costs nothing
measurable and keeps the comparison one switch apart). ``group_dro_eta`` and ``adversary_lambda`` turn it into
the GroupDRO and gradient-reversal baselines of :mod:`mimmx.baselines` (see :mod:`mimmx.methods`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from mimmx.baselines import FactorAdversary, GroupDRO, group_index, num_groups
from mimmx.errors import ConfigError, TrainingError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.mi import PairwiseMI
from mimmx.networks import CAUSAL, MIMMXNet
from mimmx.objective import DynamicPairWeights, adaptive_mi_scale

__all__ = ["MIMMXTrainer"]


class MIMMXTrainer(SupervisedTrainer):
    """Alternating MI-critic / encoder optimisation inside MONAI's Ignite workflow.

    Args:
        network: a :class:`mimmx.networks.MIMMXNet`.
        factors: the bundle's ``factors`` list; each factor's ``key`` is read from the batch.
        mi_estimator: a :class:`mimmx.mi.PairwiseMI` over ``network.partition_dims`` (None only with mi_lambda 0).
        critic_optimizer: optimiser of the critics' parameters (None for parameter-free estimators).
        mi_lambda: weight of the MI term; 0 turns MIMM-X into the plain baseline.
        critic_steps: critic updates per encoder step.
        adaptive_scale: rescale the MI gradient to at most the CE gradient's norm.
        weight_power: exponent of the dynamic per-pair weights (0 keeps the configured weights).
        weight_momentum: EMA momentum of the pair MIs that drive the dynamic weights.
        causal_weight: CE weight of the causal head (factors use their configured ``weight``).
        mi_warmup_epochs: epochs of CE only before the MI term switches on (critics still train).
        group_dro_eta: > 0 replaces the causal CE by GroupDRO's worst-group weighted CE over target x factor groups.
        adversary_lambda: > 0 adds a gradient-reversal adversary per factor on the causal partition (its
            parameters join ``optimizer``); the weight is the reversed gradient's scale.
        adversary_hidden: hidden width of each adversary.
        target_key: batch key of the causal label.
        kwargs: passed to SupervisedTrainer (handlers, postprocessing, key_train_metric, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: MIMMXNet,
        optimizer: torch.optim.Optimizer,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        mi_estimator: PairwiseMI | None = None,
        critic_optimizer: torch.optim.Optimizer | None = None,
        mi_lambda: float = 0.5,
        critic_steps: int = 1,
        adaptive_scale: bool = True,
        weight_power: float = 1.0,
        weight_momentum: float = 0.9,
        causal_weight: float = 1.0,
        mi_warmup_epochs: int = 0,
        group_dro_eta: float = 0.0,
        adversary_lambda: float = 0.0,
        adversary_hidden: int = 32,
        target_key: str = Keys.LABEL,
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
        if mi_lambda < 0:
            raise ConfigError(f"train#trainer#mi_lambda must be >= 0, got {mi_lambda}.")
        if critic_steps < 0:
            raise ConfigError(f"train#trainer#critic_steps must be >= 0, got {critic_steps}.")
        if mi_lambda > 0 and mi_estimator is None:
            raise ConfigError("train#trainer#mi_estimator is required when mi_lambda > 0.")
        if mi_estimator is not None and mi_estimator.has_critic and critic_optimizer is None:
            raise ConfigError("train#trainer#critic_optimizer is required by a critic-based MI estimator.")
        if group_dro_eta < 0 or adversary_lambda < 0:
            raise ConfigError(
                "train#trainer#group_dro_eta and train#trainer#adversary_lambda must be >= 0, "
                f"got {group_dro_eta} and {adversary_lambda}."
            )
        self.mi_estimator = mi_estimator
        self.critic_optimizer = critic_optimizer
        self.mi_lambda = float(mi_lambda)
        self.critic_steps = int(critic_steps)
        self.adaptive_scale = bool(adaptive_scale)
        self.mi_warmup_epochs = int(mi_warmup_epochs)
        self.target_key = target_key
        self.head_weights = {CAUSAL: float(causal_weight), **{f.name: f.weight for f in self.factors}}
        self.pair_weights = (
            DynamicPairWeights(
                mi_estimator.pair_names,
                {f.name: f.weight for f in self.factors},
                momentum=weight_momentum,
                power=weight_power,
            )
            if mi_estimator is not None
            else None
        )

        # baseline state lives in one module so the resumable checkpoint can hold it (empty for MIMM-X and ERM)
        self.baseline_modules = nn.ModuleDict()
        if group_dro_eta > 0:
            self.baseline_modules["group_dro"] = GroupDRO(num_groups(network.num_classes, self.factors), group_dro_eta)
        self.adversary_lambda = float(adversary_lambda)
        if adversary_lambda > 0:
            adversary = FactorAdversary(network.partition_dim, self.factors, hidden=adversary_hidden)
            self.baseline_modules["adversary"] = adversary
            optimizer.add_param_group({"params": list(adversary.parameters())})
        self.baseline_modules.to(device)

    def _labels(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        keys = {CAUSAL: self.target_key, **{f.name: f.key for f in self.factors}}
        out = {}
        for name, key in keys.items():
            if key not in batchdata:
                raise ConfigError(f"batch has no key {key!r} (needed by head {name!r}); keys: {sorted(batchdata)}.")
            value = torch.as_tensor(batchdata[key])
            out[name] = value.view(-1).long().to(self.state.device, non_blocking=self.non_blocking)
        return out

    def _train_critics(self, parts: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> float:
        if self.mi_estimator is None or not self.mi_estimator.has_critic or self.critic_steps == 0:
            return 0.0
        loss = torch.zeros(())
        for _ in range(self.critic_steps):
            self.critic_optimizer.zero_grad(set_to_none=True)
            loss = self.mi_estimator.critic_loss(parts, condition=labels[CAUSAL], labels=labels)  # detaches itself
            loss.backward()
            self.critic_optimizer.step()
        return float(loss.detach())

    def _iteration(self, engine: MIMMXTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs = batchdata[Keys.IMAGE].to(engine.state.device, non_blocking=engine.non_blocking)
        labels = engine._labels(batchdata)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: labels[CAUSAL]}

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        features = engine.network.features(inputs)
        parts = engine.network.split(features)
        logits = engine.network.head_logits(parts)
        engine.state.output[Keys.PRED] = logits[CAUSAL]
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        ce = {name: engine.loss_function(logits[name], labels[name]).mean() for name in logits}
        stats: dict[str, float] = {f"ce_{name}": float(v.detach()) for name, v in ce.items()}
        if "group_dro" in engine.baseline_modules:
            per_sample = nn.functional.cross_entropy(logits[CAUSAL], labels[CAUSAL], reduction="none")
            groups = group_index(labels[CAUSAL], [labels[f.name] for f in engine.factors], engine.factors)
            ce[CAUSAL] = engine.baseline_modules["group_dro"](per_sample, groups)
            stats["dro_causal"] = float(ce[CAUSAL].detach())
        ce_total = sum(engine.head_weights[name] * ce[name] for name in ce)

        loss = ce_total
        if "adversary" in engine.baseline_modules:
            adv_logits = engine.baseline_modules["adversary"](parts[CAUSAL])
            adv_ce = {n: nn.functional.cross_entropy(v, labels[n]) for n, v in adv_logits.items()}
            stats.update({f"adv_{n}": float(v.detach()) for n, v in adv_ce.items()})
            loss = loss + engine.adversary_lambda * sum(adv_ce.values())
        if engine.mi_estimator is not None and engine.mi_lambda > 0:
            engine.mi_estimator.train()
            stats["critic_loss"] = engine._train_critics(parts, labels)
            mi_on = engine.state.epoch > engine.mi_warmup_epochs
            with torch.set_grad_enabled(mi_on):
                mi_input = parts if mi_on else {k: v.detach() for k, v in parts.items()}
                mi_pairs = engine.mi_estimator(mi_input, condition=labels[CAUSAL], labels=labels)
            engine.pair_weights.update(mi_pairs)
            weights = engine.pair_weights.weights().to(features.device)
            mi_stack = torch.stack([mi_pairs[p] for p in engine.mi_estimator.pair_names])
            mi_total = (weights * mi_stack).sum() / weights.sum()
            scale = torch.ones(())
            if mi_on:
                if engine.adaptive_scale:
                    scale = adaptive_mi_scale(ce_total, mi_total, features)
                loss = ce_total + engine.mi_lambda * scale * mi_total
            stats.update({f"mi_{p}": float(v.detach()) for p, v in mi_pairs.items()})
            stats.update({f"weight_{p}": float(w) for p, w in zip(engine.mi_estimator.pair_names, weights)})
            stats["mi_total"] = float(mi_total.detach())
            stats["mi_scale"] = float(scale)

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
