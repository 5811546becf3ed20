"""Per-group quantities of the training list that remove the factors' share of the target from the causal CE.

Weights. At rho 0.9 with two binary factors, the group where both factors disagree with the target holds 1% of a
class: the plain mean cross-entropy is met by the shortcut and a few memorised images. Weighting each sample by
1 / (size of its target x factor group) gives every group the same total weight, so the causal evidence is what
lowers the loss on every group (importance weighting, the expectation of group-balanced resampling without its
repeated draws). The weights come from the training list once; the trainer looks them up per sample by group id.

Log-prior: the training split's log p(y | factors) per group, added to the causal logits inside the CE (a product of
experts with the factor labels as the bias expert, also known as logit adjustment). The factors' labels then already
explain the part of the target they predict, and at the start that prior is the best factor-only predictor, so a
shortcut through the factors gets no gradient at all; every image keeps weight 1, where the weights above reach 100x
on the rarest groups. The causal logits alone (what is deployed) then model what the image says beyond the factors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mimmx.baselines import item_groups, num_groups
from mimmx.factors import FactorSpec, parse_factors

__all__ = ["group_counts", "group_loss_weights", "group_log_prior"]


def group_counts(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    num_classes: int = 2,
    target_key: str = "label",
    caller: str = "group_counts",
) -> np.ndarray:
    """Images per group id (``mimmx.baselines.group_index`` order), every possible group present (0 if empty)."""
    specs = parse_factors(factors)
    groups = item_groups(items, specs, target_key, caller=caller)
    return np.bincount(groups, minlength=num_groups(num_classes, specs)).astype(np.float64)


def group_loss_weights(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    num_classes: int = 2,
    target_key: str = "label",
) -> torch.Tensor:
    """Weight per group id (``mimmx.baselines.group_index`` order): N / (groups present x group size), 0 if empty.

    The mean weight over the training samples is 1, so the weighted loss keeps the scale of the plain one.
    """
    counts = group_counts(items, factors, num_classes, target_key, caller="group_loss_weights")
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = len(items) / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


def group_log_prior(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    num_classes: int = 2,
    target_key: str = "label",
    smoothing: float = 0.5,
) -> torch.Tensor:
    """log p(y | factors) of the training list per group id (``mimmx.baselines.group_index`` order).

    ``smoothing`` is added to every group's count, so a factor combination without one of the target classes gets a
    finite prior (and one seen in no image gets the uniform prior).
    """
    if smoothing <= 0:
        raise ValueError(f"group_log_prior: smoothing must be > 0, got {smoothing}.")
    counts = group_counts(items, factors, num_classes, target_key, caller="group_log_prior") + smoothing
    by_class = counts.reshape(num_classes, -1)  # target is the most significant digit of the group id
    prior = np.log(by_class / by_class.sum(axis=0, keepdims=True))
    return torch.as_tensor(prior.reshape(-1), dtype=torch.float32)
