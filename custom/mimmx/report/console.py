"""The console summary printed at the end of an evaluation: one line per split, plain text, no figures."""

from __future__ import annotations

from collections.abc import Mapping

from mimmx.names import CAUSAL
from mimmx.report.values import (
    WORST_SUBGROUP_AUROC,
    decision_leakage_entries,
    factor_entry,
    factor_names,
    fmt,
    fmt_ci,
    fmt_int,
    ordered_splits,
)

__all__ = ["format_summary"]


def format_summary(metrics: Mapping) -> str:
    """A plain-text table for a console: split, n, AUROC [CI], worst factor-subgroup AUROC and each factor's
    switched AUROC."""
    factors = factor_names(metrics)
    header = ["split", "n", "AUROC [95% CI]", WORST_SUBGROUP_AUROC] + [f"switched {f}" for f in factors]
    rows = []
    for split in ordered_splits(metrics):
        s = metrics["splits"][split] or {}
        rows.append(
            [
                split,
                fmt_int(s.get("n")),
                fmt_ci((s.get(CAUSAL) or {}).get("auroc")),
                fmt(s.get("worst_group_auroc")),
            ]
            + [fmt_ci(factor_entry(metrics, split, f).get("switched_auroc")) for f in factors]
        )
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    if factors:
        lines.append("(switched AUROC: the causal head scored against the factor's label; 0.5 = no shortcut)")
    leakage = (metrics.get("summary") or {}).get("leakage_auc")
    if leakage:
        lines.append(
            "leakage probe AUROC from the causal partition (ideal 0.5): "
            + ", ".join(f"{name} {fmt(value)}" for name, value in leakage.items())
        )
    entries = decision_leakage_entries(metrics)
    if entries:
        floors = [null for _, _, null in entries if null is not None]
        floor = f"; no dependence reads up to {max(floors):.3f}" if floors else ""
        lines.append(
            f"decision leakage of the causal output inside each class (0.5 = none{floor}): "
            + ", ".join(f"{name} {fmt_ci(entry)}" for name, entry, _ in entries)
        )
    return "\n".join(lines)
