"""A ring buffer of recent detached feature rows and their labels, for critics that need more than one batch.

MI critics and adversaries estimate a dependence from samples; one batch of 32-64 is few for that. A queue keeps the
last ``size`` rows (detached: the encoder's gradient flows only through the current batch) so a critic can train on
thousands. The rows and the write position are buffers, so a resumed run continues with the same queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mimmx.errors import ConfigError

__all__ = ["FeatureQueue"]


class FeatureQueue(nn.Module):
    """Last ``size`` feature rows per partition plus their labels, overwritten oldest first.

    Args:
        size: rows kept.
        dims: partition name -> feature width.
        label_names: label keys stored beside the rows (default: the partition names, which are also the label names
            of :class:`mimmx.losses.StepContext`: ``causal`` and one per factor).
    """

    def __init__(self, size: int, dims: Mapping[str, int], label_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if int(size) < 1:
            raise ConfigError(f"FeatureQueue size must be >= 1, got {size}.")
        self.size = int(size)
        self.dims = {str(k): int(v) for k, v in dims.items()}
        self.label_names = list(self.dims if label_names is None else label_names)
        for name in [*self.dims, *self.label_names]:
            if not name or "." in name:
                raise ConfigError(f"FeatureQueue: name {name!r} must be non-empty and contain no '.'.")
        for name, dim in self.dims.items():
            self.register_buffer(f"feature_{name}", torch.zeros(self.size, dim))
        for name in self.label_names:
            self.register_buffer(f"label_{name}", torch.zeros(self.size, dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    @torch.no_grad()
    def push(self, parts: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> None:
        """Append a batch (detached); when full, the oldest rows go first. A batch over ``size`` keeps its end."""
        n = next(iter(parts.values())).shape[0] if parts else 0
        if n == 0:
            return
        take = min(n, self.size)
        index = (int(self.position) + torch.arange(take)) % self.size
        for name in self.dims:
            buffer = getattr(self, f"feature_{name}")
            buffer[index.to(buffer.device)] = parts[name][n - take :].detach().to(buffer)
        for name in self.label_names:
            buffer = getattr(self, f"label_{name}")
            buffer[index.to(buffer.device)] = labels[name].view(-1)[n - take :].to(buffer)
        self.position.fill_((int(self.position) + take) % self.size)
        self.filled.fill_(min(int(self.filled) + take, self.size))

    def get(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The stored rows and labels (filled part only, oldest first once the buffer has wrapped)."""
        n = len(self)
        order = torch.arange(n)
        if n == self.size:
            order = (order + int(self.position)) % self.size
        parts = {k: getattr(self, f"feature_{k}")[order.to(self.position.device)] for k in self.dims}
        labels = {k: getattr(self, f"label_{k}")[order.to(self.position.device)] for k in self.label_names}
        return parts, labels

    def concat(
        self, current_parts: Mapping[str, Tensor], current_labels: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Current batch (gradient kept) followed by the queue's rows (no gradient)."""
        stored_parts, stored_labels = self.get()
        parts = {k: torch.cat([current_parts[k], stored_parts[k].to(current_parts[k])]) for k in self.dims}
        labels = {
            k: torch.cat([current_labels[k].view(-1).long(), stored_labels[k].to(current_labels[k].device)])
            for k in self.label_names
        }
        return parts, labels
