"""scripts/bn_statistics_check.py: recomputed BatchNorm statistics are the plain mean and variance of the batches
fed, whatever the saved running averages held, and a network without BatchNorm is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("bn_statistics_check", ROOT / "scripts" / "bn_statistics_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Net(torch.nn.Module):
    def __init__(self, norm: bool = True) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3) if norm else torch.nn.Identity()

    def partitions(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def test_recomputed_statistics_are_those_of_the_batches_fed():
    net = _Net()
    net.norm.running_mean.fill_(7.0)  # a stale average, as an EMA of moving weights leaves
    net.norm.running_var.fill_(9.0)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([1.0, -2.0, 3.0])
    _script().recompute_bn(net, [{"image": data[i : i + 16]} for i in range(0, 64, 16)])
    assert not net.training
    assert torch.allclose(net.norm.running_mean, data.mean(0), atol=1e-5)
    per_batch = torch.stack([data[i : i + 16].var(0, unbiased=True) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(net.norm.running_var, per_batch, atol=1e-5)


def test_a_network_without_batchnorm_is_refused():
    with pytest.raises(SystemExit, match="no BatchNorm"):
        _script().recompute_bn(_Net(norm=False), [{"image": torch.zeros(4, 3)}])
