"""Per-group loss weights that make the causal cross-entropy the group-balanced risk.

At rho 0.9 with two binary factors, the group where both factors disagree with the target holds 1% of a class: the
plain mean cross-entropy is met by the shortcut and a few memorised images. Weighting each sample by
1 / (size of its target x factor group) gives every group the same total weight, so the causal evidence is what
lowers the loss on every group (importance weighting, the expectation of group-balanced resampling without its
repeated draws). The weights come from the training list once; the trainer looks them up per sample by group id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mimmx.baselines import item_groups, num_groups
from mimmx.factors import FactorSpec, parse_factors

__all__ = ["group_loss_weights"]


def group_loss_weights(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    num_classes: int = 2,
    target_key: str = "label",
) -> torch.Tensor:
    """Weight per group id (``mimmx.baselines.group_index`` order): N / (groups present x group size), 0 if empty.

    The mean weight over the training samples is 1, so the weighted loss keeps the scale of the plain one.
    """
    specs = parse_factors(factors)
    groups = item_groups(items, specs, target_key, caller="group_loss_weights")
    counts = np.bincount(groups, minlength=num_groups(num_classes, specs)).astype(np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = len(items) / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)
