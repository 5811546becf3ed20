"""Several training processes (``torchrun``, DistributedDataParallel) that still estimate MI on the global batch.

Why gather: MI critics, their feature queues and GroupDRO's group weights estimate a dependence from samples. Left
to each rank they would see 1/world_size of the batch, learn different critics, and the method would change with
the number of GPUs. :class:`mimmx.engines.MIMMXTrainer` therefore gathers the backbone's feature rows and the labels
of every rank (:func:`gather_rows`) and runs every loss term on the global batch, identically on every rank: the
terms' values, critic updates and queues are those of one process with the same global batch.

Why the gradient is scaled: only a rank's own rows keep their graph (no gradient crosses ranks), and DDP averages
parameter gradients over ranks. The average over ranks of "gradient of the global loss through my own rows" is
1/world_size of the global loss's gradient, so the own rows carry their gradient multiplied by world_size; the
average is then exactly the gradient one process would compute.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mimmx.errors import ConfigError, TrainingError

__all__ = ["world_size", "rank", "gather_rows", "gather_objects", "broadcast_module", "per_rank_batch_size"]


def world_size() -> int:
    """Processes in the default process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def gather_rows(x: Tensor, name: str = "features") -> tuple[Tensor, slice]:
    """Every rank's rows of ``x`` in rank order, and the slice holding this rank's own.

    The own rows keep their graph with the gradient scaled by the world size (see the module docstring); the other
    ranks' rows carry no gradient. Without a process group this returns ``x`` itself.

    Raises:
        TrainingError: the ranks hold different numbers of rows (the train loader must drop its last partial batch
            and the DistributedSampler must split the data evenly).
    """
    n = world_size()
    if n == 1:
        return x, slice(0, x.shape[0])
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    if len(set(counts)) != 1:
        raise TrainingError(
            f"the ranks hold {counts} rows of {name} in this iteration; every rank needs the same batch size "
            "(train#dataloader#drop_last: true and a DistributedSampler with even_divisible: true)."
        )
    rows = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(rows, x.detach().contiguous())
    own = rank()
    if x.requires_grad:
        rows[own] = _ScaleGrad.apply(x, float(n))
    return torch.cat(rows), slice(own * x.shape[0], (own + 1) * x.shape[0])


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` without a process group."""
    n = world_size()
    if n == 1:
        return [value]
    out: list[Any] = [None] * n
    dist.all_gather_object(out, value)
    return out


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank's ``module`` (no-op without a process group).

    The loss terms' critics and queues live outside DDP; they see the same global batch on every rank and so stay
    equal, but floating-point differences between devices could make them drift. Broadcasting them at the start and
    at every epoch keeps them identical.
    """
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src)


def per_rank_batch_size(batch_size: int, config_id: str = "batch_size") -> int:
    """Each rank's share of a global batch.

    Raises:
        ConfigError: the global batch does not split evenly over the processes.
    """
    n = world_size()
    if int(batch_size) < n or int(batch_size) % n:
        raise ConfigError(
            f"{config_id}: the global batch of {batch_size} images does not split evenly over {n} processes; "
            f"use a multiple of {n}."
        )
    return int(batch_size) // n
