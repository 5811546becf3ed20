"""Pieces of the MIMM-X encoder objective that are not MI estimators themselves.

The encoder minimises ``sum_h w_h CE_h + lambda * alpha * sum_p v_p MI_p / sum_p v_p`` where h runs over heads,
p over partition pairs, alpha rescales the MI gradient to the CE gradient's norm (MINE paper, adaptive gradient
clipping) and v_p are per-pair weights that follow how much dependence each pair still carries (GradNorm-like:
pairs whose MI stays high get more weight, so that no factor is left behind while others are already removed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from mimmx.names import split_pair

__all__ = ["adaptive_mi_scale", "DynamicPairWeights", "pair_base_weight"]


def adaptive_mi_scale(ce: torch.Tensor, mi: torch.Tensor, features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """alpha = min(|dCE/df|, |dMI/df|) / |dMI/df| on the shared features f: MI never outweighs the task gradient."""
    g_ce = torch.autograd.grad(ce, features, retain_graph=True, allow_unused=True)[0]
    g_mi = torch.autograd.grad(mi, features, retain_graph=True, allow_unused=True)[0]
    if g_mi is None or g_ce is None:
        return torch.ones((), device=features.device)
    n_ce, n_mi = g_ce.norm(), g_mi.norm()
    return (torch.minimum(n_ce, n_mi) / (n_mi + eps)).detach()


def pair_base_weight(pair: str, factor_weights: Mapping[str, float]) -> float:
    """Configured weight of a pair "a|b": the geometric mean of its factors' weights (causal counts as 1)."""
    a, b = split_pair(pair)
    return math.sqrt(factor_weights.get(a, 1.0) * factor_weights.get(b, 1.0))


class DynamicPairWeights:
    """Per-pair MI weights: configured weight x (EMA of the pair's MI / mean EMA) ** power, renormalised.

    With ``power = 0`` the weights stay at their configured values.
    """

    def __init__(
        self, pair_names: Sequence[str], factor_weights: Mapping[str, float], momentum: float = 0.9, power: float = 1.0
    ) -> None:
        self.pair_names = list(pair_names)
        self.base = torch.tensor([pair_base_weight(p, factor_weights) for p in self.pair_names], dtype=torch.float32)
        self.momentum = float(momentum)
        self.power = float(power)
        self.ema: torch.Tensor | None = None

    def update(self, mi_values: Mapping[str, torch.Tensor]) -> None:
        """Fold this iteration's (detached, clamped at 0) pair MIs into the running average."""
        current = torch.stack([mi_values[p].detach().float().cpu().clamp_min(0.0) for p in self.pair_names])
        self.ema = current if self.ema is None else self.momentum * self.ema + (1 - self.momentum) * current

    def weights(self) -> torch.Tensor:
        if self.ema is None or self.power == 0:
            return self.base.clone()
        rel = (self.ema + 1e-3) / (self.ema.mean() + 1e-3)
        w = self.base * rel.pow(self.power)
        return w * (self.base.sum() / w.sum())

    def state_dict(self) -> dict:
        return {"ema": self.ema}

    def load_state_dict(self, state: Mapping) -> None:
        self.ema = state.get("ema")
