"""MIMMXNet: a MONAI backbone whose feature vector is split into a causal and one partition per spurious factor.

``forward(x)`` returns the causal task's logits only, as a plain tensor, so that the model behaves like any
MONAI classification network for ``verify_net_in_out``, TorchScript export, MONAI Deploy and MONAI Label.
Training uses :meth:`MIMMXNet.features`, :meth:`MIMMXNet.split` and :meth:`MIMMXNet.head_logits`, which
expose every partition and every head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.nets import DenseNet121, resnet10, resnet18, resnet34
from torch import nn

from mimmx.errors import ConfigError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.names import CAUSAL

__all__ = ["SmallCNN", "MIMMXNet", "BACKBONES", "CAUSAL"]


class SmallCNN(nn.Module):
    """A few strided convolutions, global pooling and a linear layer: fast enough to train on a CPU.

    ``norm`` is MONAI's normalisation name (``BATCH`` by default, ``INSTANCE``, or None). Batch statistics are
    per process when a batch is split over several (SyncBatchNorm needs GPUs); None or INSTANCE make such a run
    compute exactly what one process would.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 64),
        strides: Sequence[int] = (2, 2, 2, 2),
        dropout: float = 0.0,
        norm: str | None = "BATCH",
    ) -> None:
        super().__init__()
        if len(channels) != len(strides):
            raise ConfigError(f"network_def#channels and #strides differ in length: {channels} vs {strides}.")
        layers, c_in = [], in_channels
        for c_out, stride in zip(channels, strides):
            layers.append(Convolution(spatial_dims, c_in, c_out, strides=stride, kernel_size=3, act="RELU", norm=norm))
            c_in = c_out
        self.encoder = nn.Sequential(*layers)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.encoder(x)), 1)))


def _densenet121(spatial_dims: int, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


def _resnet(factory):
    def build(spatial_dims: int, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return factory(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=out_channels, **kwargs)

    return build


BACKBONES = {
    "small_cnn": SmallCNN,
    "densenet121": _densenet121,
    "resnet10": _resnet(resnet10),
    "resnet18": _resnet(resnet18),
    "resnet34": _resnet(resnet34),
}


class MIMMXNet(nn.Module):
    """Backbone -> feature vector of (K + 1) x partition_dim -> one linear head per partition.

    Args:
        spatial_dims: 2 for X-ray, 3 for MRI.
        in_channels: image channels.
        num_classes: classes of the causal task (the width of ``forward``'s output).
        factors: the bundle's ``factors`` list (dicts or FactorSpec); fixes the spurious partitions and heads.
        backbone: one of ``BACKBONES`` (small_cnn, densenet121, resnet10/18/34).
        partition_dim: width of each partition.
        backbone_kwargs: passed to the backbone (for example channels/strides of small_cnn).
    """

    __jit_unused_properties__ = ["partition_dims"]

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        factors: Sequence[Mapping[str, Any] | FactorSpec],
        backbone: str = "small_cnn",
        partition_dim: int = 32,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"network_def#spatial_dims must be 2 or 3, got {spatial_dims}.")
        if backbone not in BACKBONES:
            raise ConfigError(f"network_def#backbone must be one of {sorted(BACKBONES)}, got {backbone!r}.")
        if num_classes < 2:
            raise ConfigError(f"network_def#num_classes must be >= 2, got {num_classes}.")
        specs = parse_factors(factors, config_id="network_def#factors")
        self.factor_names = [f.name for f in specs]
        self.partition_names = [CAUSAL] + self.factor_names
        self.partition_dim = int(partition_dim)
        self.num_classes = int(num_classes)
        classes = {CAUSAL: self.num_classes, **{f.name: f.num_classes for f in specs}}
        self.backbone = BACKBONES[backbone](
            spatial_dims, in_channels, self.partition_dim * len(self.partition_names), **dict(backbone_kwargs or {})
        )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(self.partition_dim, classes[name]) for name in self.partition_names}
        )

    @property
    def partition_dims(self) -> dict[str, int]:
        return {name: self.partition_dim for name in self.partition_names}

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor:
        """Causal logits only: what deployment sees. ``features=True`` returns the whole feature vector instead: the
        trainer's pass, which must go through ``forward`` because DistributedDataParallel synchronises the gradients
        of what is computed there."""
        out = self.backbone(x)
        if features:
            return out
        return self.heads["causal"](out[:, : self.partition_dim])  # literal: TorchScript cannot read module globals

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The whole feature vector, all partitions side by side."""
        return self.backbone(x)

    def split(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Partition a feature vector by name (views, so gradients flow to the shared features)."""
        return dict(zip(self.partition_names, torch.split(features, self.partition_dim, dim=1)))

    def head_logits(self, parts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each partition's head applied to its own partition."""
        return {name: self.heads[name](parts[name]) for name in self.partition_names}

    def partitions(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every partition of an image batch."""
        return self.split(self.features(x))
