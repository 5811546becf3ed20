"""What a user would otherwise train, as options of the same trainer and network (see :mod:`mimmx.methods`).

* Group-balanced resampling: every group (target class x joint factor values) is drawn equally often.
* GroupDRO (Sagawa et al. 2020): the causal loss is a weighted sum of group losses; weights follow the worst groups.
* Group-balanced subsampling (Idrissi et al. 2022): train on a subsample in which every group has the size of the
  smallest non-empty one (no reweighting, no repeated images; a much shorter epoch).
* Deep feature reweighting, DFR (Kirichenko et al. 2023): after ERM, freeze the encoder and refit the causal head by
  logistic regression on group-balanced subsamples of the training list (weights averaged over several subsamples).
* Adversarial debiasing with gradient reversal (Kim et al. 2019, "Learning Not to Learn"): one adversary per factor
  reads the causal partition; its gradient reaches the encoder reversed, so the encoder hides the factor.

Groups are the product of the causal target and every factor: with K binary factors and a binary target there are
2^(K+1) of them, the finest partition on which a shortcut can hide.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler

from mimmx.errors import ConfigError, DataError
from mimmx.factors import FactorSpec, parse_factors

__all__ = [
    "GradientReversal",
    "FactorAdversary",
    "GroupDRO",
    "group_index",
    "group_balanced_sampler",
    "group_balanced_subsample",
    "item_groups",
    "num_groups",
    "refit_causal_head",
]


def num_groups(num_classes: int, factors: Sequence[FactorSpec]) -> int:
    """Number of target x joint factor groups."""
    return int(num_classes * np.prod([f.num_classes for f in factors], dtype=np.int64))


def group_index(target: torch.Tensor | np.ndarray, factor_labels: Sequence[Any], factors: Sequence[FactorSpec]):
    """Mixed-radix group id: target first, then each factor's class (works on tensors and arrays alike)."""
    g = target
    for spec, z in zip(factors, factor_labels):
        g = g * spec.num_classes + z
    return g


def group_balanced_sampler(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    target_key: str = "label",
    num_samples: int | None = None,
    seed: int = 0,
) -> WeightedRandomSampler:
    """Sampler that draws every non-empty group equally often (with replacement), one epoch = len(items) draws."""
    groups = item_groups(items, factors, target_key, caller="group_balanced_sampler")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples or len(items), replacement=True, generator=generator
    )


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


class GradientReversal(nn.Module):
    """Identity forward, gradient multiplied by ``-scale`` backward."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.scale)


class FactorAdversary(nn.Module):
    """One small MLP per factor predicting that factor from the (gradient-reversed) causal partition."""

    def __init__(self, partition_dim: int, factors: Sequence[Mapping[str, Any] | FactorSpec], hidden: int = 32) -> None:
        super().__init__()
        specs = parse_factors(factors)
        self.reverse = GradientReversal(1.0)
        self.heads = nn.ModuleDict(
            {
                f.name: nn.Sequential(nn.Linear(partition_dim, hidden), nn.ReLU(), nn.Linear(hidden, f.num_classes))
                for f in specs
            }
        )

    def forward(self, causal: torch.Tensor) -> dict[str, torch.Tensor]:
        reversed_features = self.reverse(causal)
        return {name: head(reversed_features) for name, head in self.heads.items()}


class GroupDRO(nn.Module):
    """Online group-robust weights: q_g <- q_g * exp(eta * loss_g), renormalised; loss = sum_g q_g * loss_g."""

    def __init__(self, n_groups: int, eta: float = 0.1) -> None:
        super().__init__()
        if n_groups < 1:
            raise ConfigError(f"GroupDRO needs at least one group, got {n_groups}.")
        if eta <= 0:
            raise ConfigError(f"GroupDRO eta (loss#group_dro#eta) must be > 0, got {eta}.")
        self.eta = float(eta)
        self.register_buffer("q", torch.full((n_groups,), 1.0 / n_groups))

    def forward(self, per_sample_loss: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        n = self.q.numel()
        sums = torch.zeros(n, device=per_sample_loss.device).index_add(0, groups, per_sample_loss)
        counts = torch.bincount(groups, minlength=n).to(per_sample_loss.dtype)
        present = counts > 0
        group_loss = torch.where(present, sums / counts.clamp_min(1), torch.zeros_like(sums))
        with torch.no_grad():
            q = self.q.to(per_sample_loss.device) * torch.exp(self.eta * group_loss.detach() * present)
            self.q.copy_(q / q.sum())
        return (self.q * group_loss).sum() / self.q[present].sum()


def item_groups(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    target_key: str = "label",
    caller: str = "item_groups",
) -> np.ndarray:
    """Group id (target x every factor, :func:`group_index`) of each data-list item; DataError names a bad item."""
    specs = parse_factors(factors)
    if not items:
        raise DataError(f"{caller}: the training list is empty.")
    keys = [target_key] + [f.key for f in specs]
    rows = []
    for i, item in enumerate(items):
        missing = [k for k in keys if k not in item]
        if missing:
            raise DataError(f"{caller}: training item {i} has no {missing} (keys: {sorted(item)}).")
        rows.append([int(item[k]) for k in keys])
    table = np.asarray(rows, dtype=np.int64)
    return group_index(table[:, 0], [table[:, j + 1] for j in range(len(specs))], specs)


def _balanced_indices(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: the same number (the smallest non-empty group's size) from every group, no repeats."""
    values, counts = np.unique(groups, return_counts=True)
    m = int(counts.min())
    picked = [rng.choice(np.flatnonzero(groups == g), size=m, replace=False) for g in values]
    return np.sort(np.concatenate(picked))


def group_balanced_subsample(
    items: Sequence[Mapping[str, Any]],
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    seed: int = 0,
    target_key: str = "label",
) -> list[dict]:
    """The items of a group-balanced subsample (Idrissi et al. 2022), in their original order.

    Every non-empty target x factor group keeps as many items as the smallest one has: the training set the
    shortcut cannot be learned from, at the price of most of the data. Empty groups cannot be balanced and are
    logged by the shortcut audit; they are skipped here.
    """
    groups = item_groups(items, factors, target_key, caller="group_balanced_subsample")
    keep = _balanced_indices(groups, np.random.default_rng(int(seed)))
    logging.getLogger("mimmx").info(
        "group-balanced subsample: %d of %d training items (%d groups of %d)",
        len(keep),
        len(items),
        len(np.unique(groups)),
        len(keep) // max(len(np.unique(groups)), 1),
    )
    return [dict(items[i]) for i in keep]


def fit_balanced_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    n_subsamples: int = 10,
    c: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (num_classes, d) and bias (num_classes,) of a linear head, as DFR fits it.

    Features are standardised on the whole set; a logistic regression is fitted on each of ``n_subsamples``
    group-balanced subsamples and the coefficients averaged (Kirichenko et al. 2023), then folded back to raw
    features so the result drops into an ``nn.Linear``. A binary fit (one coefficient row) becomes the symmetric
    pair of rows, which gives the same softmax probabilities.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    xs = (x - mean) / std
    rng = np.random.default_rng(int(seed))
    coefs, intercepts = [], []
    for _ in range(int(n_subsamples)):
        idx = _balanced_indices(groups, rng)
        if len(np.unique(y[idx])) < 2:
            raise DataError(f"DFR: a group-balanced subsample of {len(idx)} items holds a single target class.")
        model = LogisticRegression(C=float(c), max_iter=2000).fit(xs[idx], y[idx])
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: one row for class 1 against class 0
            coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        full_w, full_b = np.zeros((num_classes, x.shape[1])), np.full(num_classes, -1e4)
        full_w[model.classes_], full_b[model.classes_] = coef, intercept
        coefs.append(full_w)
        intercepts.append(full_b)
    w, b = np.mean(coefs, axis=0), np.mean(intercepts, axis=0)
    return w / std, b - (w / std) @ mean


@torch.no_grad()
def _causal_features(network: nn.Module, items: Sequence[Mapping], transform: Any, device: Any, batch_size: int):
    from monai.data import DataLoader, Dataset

    network.eval()
    loader = DataLoader(Dataset(list(items), transform), batch_size=batch_size, shuffle=False, num_workers=0)
    feats = [network.partitions(batch["image"].to(device))["causal"].float().cpu().numpy() for batch in loader]
    return np.concatenate(feats)


def refit_causal_head(
    network: nn.Module,
    items: Sequence[Mapping[str, Any]],
    transform: Any,
    factors: Sequence[Mapping[str, Any] | FactorSpec],
    model_files: Sequence[str],
    device: torch.device | str = "cpu",
    n_subsamples: int = 10,
    c: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    target_key: str = "label",
) -> dict[str, int]:
    """DFR: refit the causal head of each saved model in ``model_files`` and write it back to the same file.

    Evaluation loads those files, so every model-selection rule (best val AUROC, best group-balanced val AUROC,
    last epoch) gets its own refit head on its own frozen encoder. ``transform`` must be deterministic (the
    validation preprocessing): the head is fitted on features, not augmentations. Missing files are skipped
    (a config without that checkpoint); none present is an error. Returns the files refit, with the items used.
    """
    from mimmx.checkpoints import load_strict, load_weights, save_weights

    groups = item_groups(items, factors, target_key, caller="refit_causal_head")
    labels = np.asarray([int(item[target_key]) for item in items])
    present = [f for f in model_files if os.path.isfile(f)]
    if not present:
        raise ConfigError(f"refit_causal_head (dfr): none of the model files {list(model_files)} exists; train first.")
    head = network.heads["causal"]
    done: dict[str, int] = {}
    for path in present:
        load_strict(network, load_weights(path, map_location=device), path)
        feats = _causal_features(network, items, transform, device, batch_size)
        w, b = fit_balanced_logistic(feats, labels, groups, head.out_features, n_subsamples, c, seed)
        head.weight.data.copy_(torch.as_tensor(w, dtype=head.weight.dtype))
        head.bias.data.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
        save_weights(network.state_dict(), path)
        done[path] = len(items)
        logging.getLogger("mimmx").info("DFR: refit the causal head of %s on %d training items", path, len(items))
    return done
