"""Reading values out of a metrics JSON: metric entries, their formatting, and the order of splits and factors.

Every value in ``metrics.json`` may be missing (``null``, NaN, a malformed CI): the helpers here turn that into
``None`` or "n/a" once, so the tables, the figures and the console summary never need their own checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mimmx.names import CAUSAL, TEST_SPLITS

__all__ = [
    "SPLIT_ORDER",
    "PROBE_TITLES",
    "MI_UNIT",
    "WORST_SUBGROUP_AUROC",
    "WORST_CELL_ACCURACY",
    "metric_value",
    "metric_ci",
    "fmt",
    "fmt_ci",
    "fmt_int",
    "ordered_splits",
    "factor_entry",
    "factor_names",
    "probe_kinds",
    "probe_axes",
]

SPLIT_ORDER = TEST_SPLITS
PROBE_TITLES = {"logistic": "logistic regression", "knn": "kNN"}
PROBE_META = ("split", "folds", "n")
MI_UNIT = "nats"  # the post-hoc MINE bound uses the natural logarithm
# Human-facing names of the metrics JSON's worst_group_* keys: the AUROC one is the lowest over factor values (an
# AUROC needs both target classes), the accuracy one the lowest over target x factor cells.
WORST_SUBGROUP_AUROC = "worst factor-subgroup AUROC"
WORST_CELL_ACCURACY = "worst target×factor cell accuracy"


def metric_value(m: Any) -> float | None:
    """The number of a metric entry: ``{"value": x, "ci": ...}``, a bare number, or None; NaN counts as missing."""
    if isinstance(m, Mapping):
        m = m.get("value")
    if isinstance(m, bool) or not isinstance(m, int | float):
        return None
    return None if math.isnan(m) else float(m)


def metric_ci(m: Any) -> tuple[float, float] | None:
    """The 95% CI of a metric entry, or None when absent or malformed."""
    if not isinstance(m, Mapping):
        return None
    ci = m.get("ci")
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    lo, hi = metric_value(ci[0]), metric_value(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def fmt(m: Any, digits: int = 3) -> str:
    """A number with fixed decimals, or "n/a"."""
    v = metric_value(m)
    return "n/a" if v is None else f"{v:.{digits}f}"


def fmt_ci(m: Any, digits: int = 3) -> str:
    """``value [lo, hi]`` when the CI is known, the value alone otherwise, "n/a" when there is no value."""
    v = metric_value(m)
    if v is None:
        return "n/a"
    ci = metric_ci(m)
    return f"{v:.{digits}f}" if ci is None else f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def fmt_int(v: Any) -> str:
    return str(int(v)) if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v) else "n/a"


def ordered_splits(metrics: Mapping) -> list[str]:
    """The standard test splits first, in their usual order, then any other split in file order."""
    splits = metrics.get("splits") or {}
    return [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]


def factor_entry(metrics: Mapping, split: str, factor: str) -> Mapping:
    return (((metrics.get("splits") or {}).get(split) or {}).get("factors") or {}).get(factor) or {}


def factor_names(metrics: Mapping) -> list[str]:
    """Factors from the top-level list, plus any that only appear inside a split."""
    names = list(metrics.get("factors") or [])
    for split in ordered_splits(metrics):
        for name in (metrics["splits"][split] or {}).get("factors") or {}:
            if name not in names:
                names.append(name)
    return names


def probe_kinds(probes: Mapping) -> list[str]:
    return [k for k, v in probes.items() if k not in PROBE_META and isinstance(v, Mapping) and v]


def probe_axes(metrics: Mapping, table: Mapping) -> tuple[list[str], list[str]]:
    """Rows (partitions, network order first) and columns ("causal" then each factor) of a probe matrix."""
    rows = [p for p in metrics.get("partitions") or [] if p in table] + [
        p for p in table if p not in (metrics.get("partitions") or [])
    ]
    cols = [CAUSAL, *factor_names(metrics)]
    for row in table.values():
        if isinstance(row, Mapping):
            cols += [c for c in row if c not in cols]
    cols = [c for c in cols if any(isinstance(table.get(r), Mapping) and c in table[r] for r in rows)]
    return rows, cols


def decision_leakage_entries(metrics: Mapping) -> list[tuple[str, dict, float | None]]:
    """Per factor: its decision leakage as a metric entry (value and bootstrap CI) and the level the split reads for
    no dependence; [] when the metrics carry no decision leakage (multi-class tasks, older files)."""
    leakage = metrics.get("decision_leakage")
    if not isinstance(leakage, Mapping) or not any(metric_value(v) is not None for v in leakage.values()):
        return []
    ci, null = metrics.get("decision_leakage_ci") or {}, metrics.get("decision_leakage_null") or {}
    return [(str(f), {"value": v, "ci": ci.get(f)}, metric_value(null.get(f))) for f, v in leakage.items()]
