"""How strongly a factor goes with the target: the numbers the split report and the shortcut audit print."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["phi", "cramers_v"]


def phi(a: np.ndarray, b: np.ndarray) -> float | None:
    """Phi coefficient (Pearson r of two binary variables, the point-biserial r); None where either is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def cramers_v(y: np.ndarray, z: np.ndarray) -> float | None:
    """Association of the target with a categorical factor (0 = independent, 1 = determined)."""
    y, z = np.asarray(y), np.asarray(z)
    yv, zv = np.unique(y), np.unique(z)
    if len(yv) < 2 or len(zv) < 2:
        return None
    table = np.array([[np.sum((y == a) & (z == b)) for b in zv] for a in yv], dtype=float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
