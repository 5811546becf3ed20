"""An exponential moving average of the trained weights, validated, selected and saved in place of the last step's.

MIMM-X trains its encoder against critics: a min-max game whose last iterate can swing from one epoch to the next
(a shortcut, then its reverse, as the critics catch up), while the average of the iterates settles (the reason GAN
training evaluates averaged generators). :class:`WeightAverage` keeps that average with torch's own
``AveragedModel`` and hands it to the validator, so model selection and ``model.pt``, ``model_balanced_val.pt`` and
``model_last.pt`` all hold averaged weights, in the network's own flat format. ``epochs=0`` (the bundles' default)
keeps the plain network: nothing is copied and nothing changes.

BatchNorm statistics: by default the running means and variances are averaged with the weights. While the weights
move fast, that average is not the statistics of the averaged network's own activations, and a factor that shifts
image intensity (MRI field strength) then shifts the scores through the mismatch (point 48 of docs/results.md).
``bn_images > 0`` (``average_bn_images`` in train.yaml) instead recomputes them at the end of every epoch, before
validation, on that many clean training images drawn equally from every target x factor group, as torch's SWA does
with ``update_bn``. The recomputation runs under its own random state, so training itself is exactly as without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import CacheDataset
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from mimmx.baselines import group_balanced_sampler

__all__ = ["WeightAverage", "balanced_images", "ema_decay", "image_batches", "recompute_batchnorm"]

logger = logging.getLogger("mimmx")


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average spans about ``epochs`` epochs (1 / (1 - decay) steps)."""
    if epochs <= 0:
        raise ValueError(f"average_epochs must be > 0 for an average, got {epochs}.")
    if steps_per_epoch < 1:
        raise ValueError(f"the training data loader has {steps_per_epoch} batches per epoch; at least 1 is needed.")
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


def _batchnorm_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def recompute_batchnorm(network: torch.nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Every BatchNorm layer's running statistics as the plain average over ``batches`` (image tensors), with the
    global random state (dropout) restored afterwards, so that a training run is not perturbed by it."""
    if not _batchnorm_layers(network):
        raise ValueError("the network has no BatchNorm layer: there are no statistics to recompute.")
    device = next(network.parameters()).device
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        update_bn(batches, network, device=device)


def balanced_images(
    data: Sequence[Mapping[str, Any]], transform: Callable, factors: Sequence[Any], count: int, seed: int = 0
) -> CacheDataset:
    """``count`` training images drawn equally from every target x factor group (with replacement), loaded with
    ``transform`` once: the images the statistics are recomputed on, the same at every call."""
    draw = list(group_balanced_sampler(data, factors, num_samples=count, seed=seed))
    return CacheDataset([data[i] for i in draw], transform, cache_rate=1.0, progress=False)


def image_batches(images: CacheDataset, batch_size: int) -> Iterator[torch.Tensor]:
    """The images' tensors in whole batches only (each batch weighs the same in the recomputed average)."""
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images for BatchNorm statistics: at least one batch ({batch_size}) needed.")
    for start in range(0, len(images) - batch_size + 1, batch_size):
        yield torch.stack([torch.as_tensor(images[i]["image"]) for i in range(start, start + batch_size)])


class WeightAverage:
    """The weights averaged over about the last ``epochs`` epochs of training (0: none, the network itself).

    Args:
        network: the network the trainer updates (the plain module, also under DistributedDataParallel).
        epochs: the span of the exponential average, in epochs (``average_epochs`` in train.yaml).
        steps_per_epoch: optimiser steps per epoch (``len`` of the training data loader).
        bn_images: > 0: the averaged network's BatchNorm statistics recomputed at every epoch's end on this many
            training images (``average_bn_images``); 0: averaged with the weights.
        bn_data: the training data list the images are drawn from (group-balanced, with ``factors`` and ``seed``).
        bn_transform: the clean (validation) preprocessing that loads them.
        factors: the model's factors, which define the target x factor groups of the draw.
        batch_size: images per BatchNorm batch (the training batch size: the statistics batches the network saw).
        seed: the draw's seed; the same images every epoch.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        epochs: float = 0.0,
        steps_per_epoch: int = 1,
        bn_images: int = 0,
        bn_data: Sequence[Mapping[str, Any]] | None = None,
        bn_transform: Callable | None = None,
        factors: Sequence[Any] = (),
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.source = network
        self.epochs = float(epochs)
        self.averaged: AveragedModel | None = None
        self.bn_images: CacheDataset | None = None
        self.batch_size = int(batch_size)
        count = int(bn_images)
        if count > 0:
            if self.epochs <= 0:
                raise ValueError(f"average_bn_images is {count}, but average_epochs is 0: no average to refresh.")
            if count < self.batch_size:
                raise ValueError(f"average_bn_images ({count}) must be at least one batch ({self.batch_size}).")
            if not _batchnorm_layers(network):
                raise ValueError("average_bn_images > 0, but the network has no BatchNorm layer: set it to 0.")
            if not bn_data or bn_transform is None:
                raise ValueError("average_bn_images > 0 needs the training data list and the clean preprocessing.")
            self.bn_images = balanced_images(bn_data, bn_transform, factors, count, seed=seed)
            logger.info("BatchNorm statistics of the average recomputed at every epoch's end on %d images", count)
        if self.epochs > 0:
            decay = ema_decay(self.epochs, int(steps_per_epoch))
            statistics_averaged = self.bn_images is None  # else copied from the network, recomputed at epoch ends
            self.averaged = AveragedModel(
                network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=statistics_averaged
            )
            logger.info("weights averaged over about %g epochs (EMA decay %.5f per step)", self.epochs, decay)

    @property
    def network(self) -> torch.nn.Module:
        """What validation, model selection and the saved models use."""
        return self.source if self.averaged is None else self.averaged.module

    def attach(self, engine: Engine) -> None:
        if self.averaged is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def update(self, engine: Engine | None = None) -> None:
        """Fold the network's current weights (and BatchNorm statistics) into the average; on an epoch's last step,
        with ``bn_images``, the average's statistics are recomputed instead, before validation reads them."""
        if self.averaged is None:
            return
        self.averaged.update_parameters(self.source)
        if self.bn_images is not None and (engine is None or engine.state.iteration % engine.state.epoch_length == 0):
            self.refresh_batchnorm()

    def refresh_batchnorm(self) -> None:
        """The averaged network's BatchNorm statistics from its own activations on the drawn training images."""
        recompute_batchnorm(self.averaged.module, image_batches(self.bn_images, self.batch_size))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.averaged is None else self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.averaged is not None:
            if not state:
                raise ValueError("the checkpoint holds no averaged weights, but average_epochs is > 0 in this config.")
            self.averaged.load_state_dict(state)
        elif state:
            raise ValueError("the checkpoint holds averaged weights, but average_epochs is 0 in this config.")
