"""The report's figures of the metrics JSON: ROC curves, per-subgroup and per-cell bars, leakage heatmaps.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas), so no pyplot global state is touched;
each is written atomically, so a crash never leaves a torn PNG beside the report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from mimmx.io_utils import atomic_path
from mimmx.names import CAUSAL
from mimmx.report.values import (
    PROBE_TITLES,
    factor_entry,
    factor_names,
    fmt_ci,
    metric_ci,
    metric_value,
    ordered_splits,
    probe_axes,
    probe_kinds,
)

__all__ = ["roc_figure", "group_figure", "leakage_figure", "save_figure", "safe_name", "panel_grid", "split_colour"]

DPI = 120
# Fixed colours so a split has the same colour in every figure.
_SPLIT_COLOURS = {"test_id": "#1f77b4", "test_inverted": "#d62728", "test_balanced": "#2ca02c"}
_OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e")


def save_figure(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG atomically (same reason as the report)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return path


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "partition"


def panel_grid(k: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = 2 if k == 4 else min(k, max_cols)
    return math.ceil(k / ncols), ncols


def split_colour(split: str, splits: Sequence[str]) -> str:
    """The split's fixed colour; other splits take the next free colour in file order."""
    if split in _SPLIT_COLOURS:
        return _SPLIT_COLOURS[split]
    others = [s for s in splits if s not in _SPLIT_COLOURS]
    return _OTHER_COLOURS[others.index(split) % len(_OTHER_COLOURS)] if split in others else "#7f7f7f"


def _group_data(metrics: Mapping, factor: str, kind: str) -> dict[str, dict[str, Any]]:
    """``{split: {x label: metric entry}}`` for one factor; kind is "subgroups" (AUROC) or "cells" (accuracy)."""
    out: dict[str, dict[str, Any]] = {}
    for split in ordered_splits(metrics):
        entries = factor_entry(metrics, split, factor).get(kind) or []
        row: dict[str, Any] = {}
        for e in entries:
            if not isinstance(e, Mapping):
                continue
            label = str(e.get("value")) if kind == "subgroups" else f"{e.get('target')}\n{e.get('value')}"
            row[label] = e.get("auroc" if kind == "subgroups" else "accuracy")
        if row:
            out[split] = row
    return out


def group_figure(metrics: Mapping, kind: str, path: Path) -> Path | None:
    """Bars per subgroup (or target×factor cell) with 95% CI error bars, one panel per factor, colour = split."""
    factors = [f for f in factor_names(metrics) if _group_data(metrics, f, kind)]
    if not factors:
        return None
    splits = ordered_splits(metrics)
    data = {f: _group_data(metrics, f, kind) for f in factors}
    xlabels = {}
    for f in factors:
        labels: list[str] = []
        for row in data[f].values():
            labels += [x for x in row if x not in labels]
        xlabels[f] = labels
    nsplit = max(len(d) for d in data.values())
    ncat = max(len(v) for v in xlabels.values())
    panel_w = min(9.0, max(3.4, 0.32 * ncat * nsplit + 1.4))
    nrows, ncols = panel_grid(len(factors))
    fig_w = min(18.0, max(6.5, panel_w * ncols))
    fig = Figure(figsize=(fig_w, 3.9 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    metric = "AUROC" if kind == "subgroups" else "accuracy"
    used: list[str] = []
    for ax, f in zip(axes, factors):
        cats = xlabels[f]
        present = [s for s in splits if s in data[f]]
        width = 0.8 / max(1, len(present))
        for j, split in enumerate(present):
            xs, ys, err_lo, err_hi, missing = [], [], [], [], []
            for i, cat in enumerate(cats):
                x = i - 0.4 + width * (j + 0.5)
                m = data[f][split].get(cat)
                v = metric_value(m)
                if v is None:
                    missing.append(x)
                    continue
                ci = metric_ci(m)
                xs.append(x)
                ys.append(v)
                err_lo.append(max(0.0, v - ci[0]) if ci else 0.0)
                err_hi.append(max(0.0, ci[1] - v) if ci else 0.0)
            if xs:
                ax.bar(xs, ys, width * 0.92, color=split_colour(split, splits), label=split)
                ax.errorbar(xs, ys, yerr=[err_lo, err_hi], fmt="none", ecolor="black", elinewidth=1, capsize=3)
            for x in missing:
                ax.text(x, 0.03, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="dimgray")
            if split not in used:
                used.append(split)
        ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(cats)))
        longest = max(len(line) for c in cats for line in c.split("\n"))
        chars_per_cat = fig_w / ncols * 72 / max(1, len(cats)) / 6.5
        if longest > chars_per_cat:
            ax.set_xticklabels(cats, rotation=30, ha="right", rotation_mode="anchor", fontsize=9)
        else:
            ax.set_xticklabels(cats, fontsize=9)
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(f, fontsize=11)
        ax.set_xlabel(f"{f} value" if kind == "subgroups" else f"target / {f} value", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for i, ax in enumerate(axes):
        if i >= len(factors):
            ax.set_visible(False)
        elif i % ncols == 0:
            ax.set_ylabel(f"causal-head {metric}")
    handles = [Patch(color=split_colour(s, splits), label=s) for s in used]
    handles.append(Line2D([], [], color="gray", linestyle="--", label="chance (0.5)"))
    per_row = max(1, min(len(handles), int(fig_w / 1.5)))  # about 1.5 in per entry, so the legend fits the width
    fig.legend(handles=handles, loc="outside lower center", ncols=per_row, fontsize=9)
    what = "AUROC per factor subgroup" if kind == "subgroups" else "accuracy per target×factor cell"
    fig.suptitle(f"Causal-head {what} (95% CI)", fontsize=12)
    return save_figure(fig, path)


def roc_figure(metrics: Mapping, path: Path) -> Path | None:
    """One ROC curve of the causal head per split."""
    splits = ordered_splits(metrics)
    curves = []
    for split in splits:
        s = metrics["splits"][split] or {}
        roc = s.get("roc")
        if not isinstance(roc, Mapping):
            continue
        fpr, tpr = roc.get("fpr"), roc.get("tpr")
        if not isinstance(fpr, Sequence) or not isinstance(tpr, Sequence) or len(fpr) != len(tpr) or len(fpr) < 2:
            continue
        pts = [(a, b) for a, b in zip(fpr, tpr) if metric_value(a) is not None and metric_value(b) is not None]
        if len(pts) >= 2:
            curves.append((split, np.array(pts, dtype=float), (s.get(CAUSAL) or {}).get("auroc")))
    if not curves:
        return None
    fig = Figure(figsize=(5.6, 6.2 + 0.22 * len(curves)), layout="constrained")
    ax = fig.subplots()
    for split, pts, auroc in curves:
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            color=split_colour(split, splits),
            linewidth=1.8,
            label=f"{split} (AUROC {fmt_ci(auroc)})",
        )
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curves of the causal head")
    ax.grid(alpha=0.3)
    # below the axes: inside, the legend covered the test_inverted curve, which runs near the lower right
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize=8)
    return save_figure(fig, path)


def leakage_figure(metrics: Mapping, path: Path) -> Path | None:
    """Heatmaps of probe AUROC, partition x label, one per probe kind, colour fixed to 0.5..1."""
    probes = metrics.get("probes")
    if not isinstance(probes, Mapping):
        return None
    kinds = [k for k in probe_kinds(probes) if all(probe_axes(metrics, probes[k]))]
    if not kinds:
        return None
    shapes = [tuple(map(len, probe_axes(metrics, probes[k]))) for k in kinds]
    max_rows = max(s[0] for s in shapes)
    max_cols = max(s[1] for s in shapes)
    longest = max(len(str(c)) for k in kinds for c in probe_axes(metrics, probes[k])[1])
    fig = Figure(
        figsize=(len(kinds) * (0.85 * max_cols + 1.6) + 1.2, 0.62 * max_rows + 1.6 + 0.06 * longest),
        layout="constrained",
    )
    axes = fig.subplots(1, len(kinds), squeeze=False).ravel()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = None
    for ax, kind in zip(axes, kinds):
        rows, cols = probe_axes(metrics, probes[kind])
        grid = np.full((len(rows), len(cols)), np.nan)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                v = metric_value((probes[kind].get(r) or {}).get(c))
                grid[i, j] = np.nan if v is None else v
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.5, vmax=1.0, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = grid[i, j]
                if np.isnan(v):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=9, color="black")
                else:
                    dark = (min(max(v, 0.5), 1.0) - 0.5) / 0.5 < 0.6
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="white" if dark else "black")
                if rows[i] == cols[j]:  # the cell that should be high: a partition predicting its own label
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xticks(range(len(cols)))
        rotate = longest > 7 and len(cols) > 2
        ax.set_xticklabels(
            cols, rotation=30 if rotate else 0, ha="right" if rotate else "center", rotation_mode="anchor"
        )
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows)
        ax.set_xlabel("probe target")
        ax.set_ylabel("partition")
        ax.set_title(f"{PROBE_TITLES.get(kind, kind)} probe", fontsize=11)
    cbar = fig.colorbar(image, ax=list(axes), extend="min", shrink=0.9)
    cbar.set_label("probe AUROC (< 0.5 shown as 0.5)")
    where = ", ".join(
        x for x in (str(probes.get("split") or ""), f"{probes['folds']}-fold CV" if probes.get("folds") else "") if x
    )
    fig.suptitle(f"Leakage: AUROC of probes on each partition{f' ({where})' if where else ''}", fontsize=12)
    return save_figure(fig, path)
