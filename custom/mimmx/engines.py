"""MIMMXTrainer: MONAI's SupervisedTrainer whose loss is a configured list of terms (:mod:`mimmx.losses`).

Each iteration: one forward pass of the encoder and every head; each term's ``critic_update`` (inner steps of MI
critics or adversaries on detached features); then the terms' contributions in order, summed into one encoder
loss. ``ctx.task_loss`` is the running sum of the task (CE-type) terms, so a regulariser listed after them can scale
itself against it (MIMM-X's adaptive MI scale). A method is a list of terms: ERM is ``[head_ce]``, MIMM-X
``[head_ce, mi]``, GroupDRO ``[group_dro]``, the adversarial baseline ``[head_ce, adversary]`` (see
:mod:`mimmx.methods`). All term state (critics and their optimisers, pair-weight EMA, GroupDRO q, adversaries,
queues) lives in ``trainer.objective``, which the bundle's resumable checkpoint saves.

SupervisedTrainer's contract: ``prepare_batch`` gives the image and the target (factor labels are read from the batch
by their keys), ``inferer`` runs the network's feature pass, ``amp`` autocasts that pass (float16 with a gradient
scaler on CUDA, bfloat16 on CPU, or the ``dtype`` in ``amp_kwargs``; loss terms and critics stay in float32), and
``compile`` compiles the network with ``compile_kwargs``. Inferers that tile the image are refused, and so is
``accumulation_steps`` other than 1, as the critics step with every batch.

Several processes (``configs/multi_gpu_train.yaml``): the network comes wrapped in DistributedDataParallel, and
every loss term sees the global batch (:mod:`mimmx.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, PatchInferer, SliceInferer, SlidingWindowInferer
from monai.utils.enums import CommonKeys as Keys
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from mimmx.distributed import broadcast_module, gather_rows, world_size
from mimmx.errors import ConfigError, TrainingError
from mimmx.factors import FactorSpec, label_keys, parse_factors
from mimmx.held_out import HELD_OUT_KEY
from mimmx.losses import LossTerm, StepContext
from mimmx.names import CAUSAL
from mimmx.networks import MIMMXNet

__all__ = ["MIMMXTrainer"]


class MIMMXTrainer(SupervisedTrainer):
    """Sum of configured loss terms inside MONAI's Ignite workflow.

    Args:
        network: a :class:`mimmx.networks.MIMMXNet`, or one wrapped in DistributedDataParallel (several processes).
        optimizer: the encoder's optimiser; terms' ``encoder_side_parameters`` join it as extra parameter groups.
        factors: the model's factors; each factor's ``key`` is read from the batch.
        loss_terms: the terms of the objective, summed in order (task terms first, so that later terms can scale
            against ``ctx.task_loss``).
        target_key: batch key of the causal label, read when ``prepare_batch`` returns no target.
        loss_terms_id: config id of ``loss_terms`` used in error messages.
        prepare_batch: MONAI's ``prepare_batch`` callable: (image, target[, args, kwargs]) from a batch.
        inferer: runs the feature pass, ``inferer(image, network, *args, features=True, **kwargs)``; whole-image
            inferers only (default SimpleInferer).
        amp: autocast the network's pass (float16 and a gradient scaler on CUDA, bfloat16 on CPU).
        amp_kwargs: passed to ``torch.autocast`` (for example ``{dtype: $torch.bfloat16}`` on a GPU).
        compile: ``torch.compile`` the network for training, with ``compile_kwargs``.
        compile_kwargs: passed to ``torch.compile``.
        accumulation_steps: must be 1 (refused otherwise: the critics step with every batch).
        held_out_key: batch key flagging rows held out from the task loss (:func:`mimmx.held_out.mark_held_out`);
            a batch without it holds none out.
        kwargs: passed to SupervisedTrainer (handlers, postprocessing, key_train_metric, ...).

    Raises:
        ConfigError: a term is not a LossTerm, two terms share a name, no term is a task term, or a term does not fit
            the network or factors (the message names ``loss_terms[i]``); an inferer that tiles the image; gradient
            accumulation; several processes with a network not wrapped in DistributedDataParallel.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: MIMMXNet | DistributedDataParallel,
        optimizer: torch.optim.Optimizer,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        loss_terms: Sequence[LossTerm],
        target_key: str = Keys.LABEL,
        loss_terms_id: str = "loss_terms",
        loss_function: nn.Module | None = None,
        prepare_batch: Callable = default_prepare_batch,
        inferer: Inferer | None = None,
        amp: bool = False,
        amp_kwargs: Mapping[str, Any] | None = None,
        compile: bool = False,
        compile_kwargs: Mapping[str, Any] | None = None,
        accumulation_steps: int = 1,
        held_out_key: str | None = HELD_OUT_KEY,
        **kwargs: Any,
    ) -> None:
        _check_contract(inferer, accumulation_steps, network)
        device_type = torch.device(device).type
        amp_kwargs = dict(amp_kwargs or {})
        amp_kwargs.setdefault("dtype", torch.float16 if device_type == "cuda" else torch.bfloat16)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else nn.CrossEntropyLoss(),
            prepare_batch=prepare_batch,
            inferer=inferer,
            amp=amp,
            amp_kwargs=amp_kwargs,
            **kwargs,
        )
        wrapped = isinstance(network, (DataParallel, DistributedDataParallel))
        self.model: MIMMXNet = network.module if wrapped else network
        self.factors = parse_factors(factors, config_id="train#trainer#factors")
        if [f.name for f in self.factors] != list(getattr(self.model, "factor_names", [])):
            raise ConfigError(
                "train#trainer#factors must be the factors the network was built with "
                f"({getattr(self.model, 'factor_names', None)}), got {[f.name for f in self.factors]}."
            )
        self.target_key = target_key
        self.held_out_key = held_out_key
        self.device_type = device_type
        self.grad_scaling = bool(amp) and device_type == "cuda" and amp_kwargs["dtype"] == torch.float16
        self.compile = bool(compile)
        self.forward_network = torch.compile(network, **dict(compile_kwargs or {})) if compile else network
        self.objective = self._build_objective(loss_terms, loss_terms_id).to(device)
        for term in self.objective.values():
            params = list(term.encoder_side_parameters())
            if params:
                optimizer.add_param_group({"params": params})
        if world_size() > 1:
            # the terms' critics and queues start, and stay, equal on every rank
            broadcast_module(self.objective)
            self.add_event_handler(Events.EPOCH_STARTED, lambda engine: broadcast_module(engine.objective))
            # BatchNorm's running statistics last moved with each rank's own batch: validate rank 0's everywhere
            last = Events.ITERATION_COMPLETED(event_filter=lambda engine, i: i % engine.state.epoch_length == 0)
            self.add_event_handler(last, lambda engine: broadcast_module(engine.model))

    def run(self) -> None:
        """Trainer.run would make a CUDA-only gradient scaler; this trainer makes one only for float16 on CUDA."""
        self.scaler = torch.amp.GradScaler("cuda") if self.grad_scaling else None
        Workflow.run(self)

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
            term.check(self.model, self.factors, term_id)
            objective[term.name] = term
        if not any(term.is_task_loss for term in objective.values()):
            raise ConfigError(
                f"{config_id}: no task term among {list(objective)}; add mimmx.losses.HeadCrossEntropy or "
                "GroupDROCrossEntropy."
            )
        return objective

    def _labels(self, batchdata: Mapping[str, Any], target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        keys = label_keys(self.factors, self.target_key)
        out = {}
        for name, key in keys.items():
            if name == CAUSAL and target is not None:
                value = torch.as_tensor(target)
            elif key not in batchdata:
                raise ConfigError(f"batch has no key {key!r} (needed by head {name!r}); keys: {sorted(batchdata)}.")
            else:
                value = torch.as_tensor(batchdata[key])
            out[name] = value.view(-1).long().to(self.state.device, non_blocking=self.non_blocking)
        return out

    def _held_out(self, batchdata: Mapping[str, Any]) -> torch.Tensor | None:
        """Rows held out from the task loss (:mod:`mimmx.held_out`), all ranks' rows; None when none are marked."""
        if not self.held_out_key or self.held_out_key not in batchdata:
            return None
        flags = torch.as_tensor(batchdata[self.held_out_key]).view(-1).long().to(self.state.device)
        return gather_rows(flags, self.held_out_key)[0].bool()

    def _prepared(self, batchdata: Any) -> tuple[torch.Tensor, torch.Tensor | None, tuple, dict]:
        batch = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
        inputs, target, args, kwargs = batch if len(batch) == 4 else (*batch, (), {})
        if self.compile and isinstance(inputs, MetaTensor):  # as SupervisedTrainer does for torch.compile
            inputs = inputs.as_tensor()
        return inputs, target, tuple(args), dict(kwargs)

    def _iteration(self, engine: MIMMXTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, target, args, kwargs = engine._prepared(batchdata)
        local_labels = engine._labels(batchdata, target)
        held_out = engine._held_out(batchdata)

        engine.network.train()
        engine.objective.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        autocast = torch.autocast(engine.device_type, **engine.amp_kwargs) if engine.amp else nullcontext()
        with autocast:
            local_features = engine.inferer(inputs, engine.forward_network, *args, features=True, **kwargs)
        # the global batch (one process: the batch itself); loss terms and critics work in float32
        features, own = gather_rows(local_features.float())
        labels = {name: gather_rows(value, name)[0] for name, value in local_labels.items()}
        parts = engine.model.split(features)
        logits = engine.model.head_logits(parts)
        engine.state.output = {
            Keys.IMAGE: inputs,
            Keys.LABEL: local_labels[CAUSAL],
            Keys.PRED: logits[CAUSAL][own],
        }
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        ctx = StepContext(
            network=engine.model,
            features=features,
            parts=parts,
            logits=logits,
            labels=labels,
            factors=engine.factors,
            epoch=engine.state.epoch,
            iteration=engine.state.iteration,
            held_out=held_out,
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
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


_TILING_INFERERS = (SlidingWindowInferer, SliceInferer, PatchInferer)


def _check_contract(inferer: Inferer | None, accumulation_steps: int, network: nn.Module) -> None:
    """ConfigError, by config id, for the parts of SupervisedTrainer's contract this trainer cannot honour."""
    if inferer is not None and (isinstance(inferer, _TILING_INFERERS) or not callable(inferer)):
        raise ConfigError(
            f"train#trainer#inferer: MIMMXTrainer needs one feature vector per whole image, so it takes an inferer "
            f"that calls the network on the whole input (monai.inferers.SimpleInferer or a subclass of "
            f"monai.inferers.Inferer that does not tile); got {type(inferer).__name__}."
        )
    if int(accumulation_steps) != 1:
        raise ConfigError(
            f"train#trainer#accumulation_steps: expected 1, got {accumulation_steps}; the MI critics and their feature "
            "queue step with every batch. Use a larger train#dataloader batch_size (or more processes with "
            "configs/multi_gpu_train.yaml) instead."
        )
    if world_size() > 1 and not isinstance(network, DistributedDataParallel):
        raise ConfigError(
            f"train#trainer#network: {world_size()} processes, but the network is {type(network).__name__}, not "
            "torch.nn.parallel.DistributedDataParallel; merge configs/multi_gpu_train.yaml over train.yaml."
        )
