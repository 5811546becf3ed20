"""A Markdown evaluation report with figures, from the metrics JSON (plus the training history and test features).

A reviewer judges shortcut removal from several views at once: per-split AUROC, per-subgroup and per-cell
metrics, the switched AUROC, how much each partition leaks, and how training went. Tables alone hide the
pattern; figures alone hide the numbers, so the report has both. Every value may be missing (``null``): the
tables print "n/a" and the figures leave it out.

    write_report("eval/metrics.json", "eval/report", history_file="train/history.json",
                 features_file="eval/features.npz")

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas), so no pyplot global state is touched.
"""

from __future__ import annotations

import json
import logging
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

from mimmx.errors import DataError
from mimmx.io_utils import atomic_path, atomic_write_text

__all__ = ["write_report", "format_summary", "SPLIT_ORDER"]

SPLIT_ORDER = ("test_id", "test_inverted", "test_balanced")
DPI = 120
MAX_EMBEDDING_POINTS = 1000
# Fixed colours so a split has the same colour in every figure.
_SPLIT_COLOURS = {"test_id": "#1f77b4", "test_inverted": "#d62728", "test_balanced": "#2ca02c"}
_OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e")
_PROBE_TITLES = {"logistic": "logistic regression", "knn": "kNN"}
_PROBE_META = ("split", "folds", "n")
# Figure names this module owns: stale copies from an earlier run are removed so the folder matches the report.
_OWNED_FIGURES = ("group_auroc.png", "group_accuracy.png", "roc.png", "leakage.png", "training.png")


# ---------------------------------------------------------------- values


def _value(m: Any) -> float | None:
    """The number of a metric entry: ``{"value": x, "ci": ...}``, a bare number, or None; NaN counts as missing."""
    if isinstance(m, Mapping):
        m = m.get("value")
    if isinstance(m, bool) or not isinstance(m, int | float):
        return None
    return None if math.isnan(m) else float(m)


def _ci(m: Any) -> tuple[float, float] | None:
    """The 95% CI of a metric entry, or None when absent or malformed."""
    if not isinstance(m, Mapping):
        return None
    ci = m.get("ci")
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    lo, hi = _value(ci[0]), _value(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def _fmt(m: Any, digits: int = 3) -> str:
    """A number with fixed decimals, or "n/a"."""
    v = _value(m)
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt_ci(m: Any, digits: int = 3) -> str:
    """``value [lo, hi]`` when the CI is known, the value alone otherwise, "n/a" when there is no value."""
    v = _value(m)
    if v is None:
        return "n/a"
    ci = _ci(m)
    return f"{v:.{digits}f}" if ci is None else f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _fmt_int(v: Any) -> str:
    return str(int(v)) if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v) else "n/a"


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _ordered_splits(metrics: Mapping) -> list[str]:
    """The standard test splits first, in their usual order, then any other split in file order."""
    splits = metrics.get("splits") or {}
    return [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]


def _split_colour(split: str, splits: Sequence[str]) -> str:
    if split in _SPLIT_COLOURS:
        return _SPLIT_COLOURS[split]
    others = [s for s in splits if s not in _SPLIT_COLOURS]
    return _OTHER_COLOURS[others.index(split) % len(_OTHER_COLOURS)] if split in others else "#7f7f7f"


def _factor(metrics: Mapping, split: str, factor: str) -> Mapping:
    return (((metrics.get("splits") or {}).get(split) or {}).get("factors") or {}).get(factor) or {}


def _factor_names(metrics: Mapping) -> list[str]:
    """Factors from the top-level list, plus any that only appear inside a split."""
    names = list(metrics.get("factors") or [])
    for split in _ordered_splits(metrics):
        for name in (metrics["splits"][split] or {}).get("factors") or {}:
            if name not in names:
                names.append(name)
    return names


# ---------------------------------------------------------------- files


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{what} file not found: {path}") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what} JSON: {e}") from e


def _save(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG atomically (same reason as the report)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return path


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "partition"


def _read_history(path: str) -> list[dict]:
    data = _read_json(path, "history")
    if isinstance(data, Mapping):
        data = data.get("history", data.get("epochs"))
    if not isinstance(data, list) or not all(isinstance(row, Mapping) for row in data):
        raise DataError(f"{path}: history must be a list of per-epoch objects")
    return [dict(row) for row in data]


def _read_features(path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]]:
    """Partition features, integer labels and optional class names from the features ``.npz``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError as e:
        raise DataError(f"features file not found: {path}") from e
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read features npz: {e}") from e
    parts = {k[len("part_") :]: np.asarray(v, dtype=float) for k, v in arrays.items() if k.startswith("part_")}
    labels = {k[len("label_") :]: np.asarray(v) for k, v in arrays.items() if k.startswith("label_")}
    names: dict[str, list[str]] = {}
    for key, value in arrays.items():
        if key.startswith("label_names_"):
            names[key[len("label_names_") :]] = _class_names(value)
            labels.pop(key[len("label_") :], None)  # "label_names_x" also matched the "label_" prefix
    n = {len(v) for v in parts.values()} | {len(v) for v in labels.values()}
    if len(n) > 1:
        raise DataError(f"{path}: partition and label arrays have different lengths {sorted(n)}")
    for name, arr in parts.items():
        if arr.ndim != 2:
            raise DataError(f"{path}: part_{name} must be 2-D (n, d), got shape {arr.shape}")
    return parts, labels, names


def _class_names(value: np.ndarray) -> list[str]:
    """Class names from a 1-d string array, or a 0-d one holding a JSON list or comma-separated names."""
    if value.ndim == 0:
        text = str(value.item())
        if text.strip().startswith("["):
            try:
                return [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                pass
        return [s.strip() for s in text.split(",")]
    return [str(v) for v in value.reshape(-1).tolist()]


# ---------------------------------------------------------------- console summary


def format_summary(metrics: Mapping) -> str:
    """A plain-text table for a console: split, n, AUROC [CI], worst-group AUROC and each factor's switched AUROC."""
    factors = _factor_names(metrics)
    header = ["split", "n", "AUROC [95% CI]", "worst-group AUROC"] + [f"switched {f}" for f in factors]
    rows = []
    for split in _ordered_splits(metrics):
        s = metrics["splits"][split] or {}
        rows.append(
            [
                split,
                _fmt_int(s.get("n")),
                _fmt_ci((s.get("causal") or {}).get("auroc")),
                _fmt(s.get("worst_group_auroc")),
            ]
            + [_fmt_ci(_factor(metrics, split, f).get("switched_auroc")) for f in factors]
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
            + ", ".join(f"{name} {_fmt(value)}" for name, value in leakage.items())
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def _grid(k: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = 2 if k == 4 else min(k, max_cols)
    return math.ceil(k / ncols), ncols


def _group_data(metrics: Mapping, factor: str, kind: str) -> dict[str, dict[str, Any]]:
    """``{split: {x label: metric entry}}`` for one factor; kind is "subgroups" (AUROC) or "cells" (accuracy)."""
    out: dict[str, dict[str, Any]] = {}
    for split in _ordered_splits(metrics):
        entries = _factor(metrics, split, factor).get(kind) or []
        row: dict[str, Any] = {}
        for e in entries:
            if not isinstance(e, Mapping):
                continue
            label = str(e.get("value")) if kind == "subgroups" else f"{e.get('target')}\n{e.get('value')}"
            row[label] = e.get("auroc" if kind == "subgroups" else "accuracy")
        if row:
            out[split] = row
    return out


def _group_figure(metrics: Mapping, kind: str, path: Path) -> Path | None:
    """Bars per subgroup (or target x factor cell) with 95% CI error bars, one panel per factor, colour = split."""
    factors = [f for f in _factor_names(metrics) if _group_data(metrics, f, kind)]
    if not factors:
        return None
    splits = _ordered_splits(metrics)
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
    nrows, ncols = _grid(len(factors))
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
                v = _value(m)
                if v is None:
                    missing.append(x)
                    continue
                ci = _ci(m)
                xs.append(x)
                ys.append(v)
                err_lo.append(max(0.0, v - ci[0]) if ci else 0.0)
                err_hi.append(max(0.0, ci[1] - v) if ci else 0.0)
            if xs:
                ax.bar(xs, ys, width * 0.92, color=_split_colour(split, splits), label=split)
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
    handles = [Patch(color=_split_colour(s, splits), label=s) for s in used]
    handles.append(Line2D([], [], color="gray", linestyle="--", label="chance (0.5)"))
    per_row = max(1, min(len(handles), int(fig_w / 1.5)))  # about 1.5 in per entry, so the legend fits the width
    fig.legend(handles=handles, loc="outside lower center", ncols=per_row, fontsize=9)
    what = "AUROC per factor subgroup" if kind == "subgroups" else "accuracy per target x factor cell"
    fig.suptitle(f"Causal-head {what} (95% CI)", fontsize=12)
    return _save(fig, path)


def _roc_figure(metrics: Mapping, path: Path) -> Path | None:
    """One ROC curve of the causal head per split."""
    splits = _ordered_splits(metrics)
    curves = []
    for split in splits:
        s = metrics["splits"][split] or {}
        roc = s.get("roc")
        if not isinstance(roc, Mapping):
            continue
        fpr, tpr = roc.get("fpr"), roc.get("tpr")
        if not isinstance(fpr, Sequence) or not isinstance(tpr, Sequence) or len(fpr) != len(tpr) or len(fpr) < 2:
            continue
        pts = [(a, b) for a, b in zip(fpr, tpr) if _value(a) is not None and _value(b) is not None]
        if len(pts) >= 2:
            curves.append((split, np.array(pts, dtype=float), (s.get("causal") or {}).get("auroc")))
    if not curves:
        return None
    fig = Figure(figsize=(5.6, 5.6), layout="constrained")
    ax = fig.subplots()
    for split, pts, auroc in curves:
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            color=_split_colour(split, splits),
            linewidth=1.8,
            label=f"{split} (AUROC {_fmt_ci(auroc)})",
        )
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curves of the causal head")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _probe_kinds(probes: Mapping) -> list[str]:
    return [k for k, v in probes.items() if k not in _PROBE_META and isinstance(v, Mapping) and v]


def _probe_axes(metrics: Mapping, table: Mapping) -> tuple[list[str], list[str]]:
    """Rows (partitions, network order first) and columns ("causal" then each factor) of a probe matrix."""
    rows = [p for p in metrics.get("partitions") or [] if p in table] + [
        p for p in table if p not in (metrics.get("partitions") or [])
    ]
    cols = ["causal", *_factor_names(metrics)]
    for row in table.values():
        if isinstance(row, Mapping):
            cols += [c for c in row if c not in cols]
    cols = [c for c in cols if any(isinstance(table.get(r), Mapping) and c in table[r] for r in rows)]
    return rows, cols


def _leakage_figure(metrics: Mapping, path: Path) -> Path | None:
    """Heatmaps of probe AUROC, partition x label, one per probe kind, colour fixed to 0.5..1."""
    probes = metrics.get("probes")
    if not isinstance(probes, Mapping):
        return None
    kinds = [k for k in _probe_kinds(probes) if all(_probe_axes(metrics, probes[k]))]
    if not kinds:
        return None
    shapes = [tuple(map(len, _probe_axes(metrics, probes[k]))) for k in kinds]
    max_rows = max(s[0] for s in shapes)
    max_cols = max(s[1] for s in shapes)
    longest = max(len(str(c)) for k in kinds for c in _probe_axes(metrics, probes[k])[1])
    fig = Figure(
        figsize=(len(kinds) * (0.85 * max_cols + 1.6) + 1.2, 0.62 * max_rows + 1.6 + 0.06 * longest),
        layout="constrained",
    )
    axes = fig.subplots(1, len(kinds), squeeze=False).ravel()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = None
    for ax, kind in zip(axes, kinds):
        rows, cols = _probe_axes(metrics, probes[kind])
        grid = np.full((len(rows), len(cols)), np.nan)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                v = _value((probes[kind].get(r) or {}).get(c))
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
        ax.set_title(f"{_PROBE_TITLES.get(kind, kind)} probe", fontsize=11)
    cbar = fig.colorbar(image, ax=list(axes), extend="min", shrink=0.9)
    cbar.set_label("probe AUROC (< 0.5 shown as 0.5)")
    where = ", ".join(
        x for x in (str(probes.get("split") or ""), f"{probes['folds']}-fold CV" if probes.get("folds") else "") if x
    )
    fig.suptitle(f"Leakage: AUROC of probes on each partition{f' ({where})' if where else ''}", fontsize=12)
    return _save(fig, path)


def _series(history: Sequence[Mapping], key: str) -> np.ndarray:
    return np.array([np.nan if _value(row.get(key)) is None else _value(row.get(key)) for row in history])


def _training_figure(history: Sequence[Mapping], path: Path) -> Path | None:
    """Per-epoch panels: losses, MI per partition pair, pair weights / MI scale, critic loss, validation AUROC."""
    if not history:
        return None
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    x = _series(history, "epoch") if "epoch" in keys else np.arange(1, len(history) + 1, dtype=float)
    if np.isnan(x).any():
        x = np.arange(1, len(history) + 1, dtype=float)
    is_val_auc = [k for k in keys if k.startswith("val_") and "auc" in k]
    panels = [
        (
            "losses",
            "loss",
            [k for k in keys if k == "loss" or k.startswith("ce_") or (k.startswith("val_") and "loss" in k)],
        ),
        ("mutual information between partitions", "MI estimate", [k for k in keys if k.startswith("mi_") and "|" in k]),
        ("pair weights and MI scale", "value", [k for k in keys if k.startswith("weight_") or k == "mi_scale"]),
        ("MI critic loss", "critic loss", [k for k in keys if k == "critic_loss"]),
        ("validation AUROC", "AUROC", is_val_auc),
    ]
    if "mi_total" in keys:
        panels[1] = (panels[1][0], panels[1][1], [*panels[1][2], "mi_total"])
    panels = [(t, y, [k for k in ks if not np.isnan(_series(history, k)).all()]) for t, y, ks in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    fig = Figure(figsize=(9.0, 2.7 * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False).ravel()
    cycle = colormaps["tab10"].colors + colormaps["Dark2"].colors
    marker = "o" if len(x) <= 30 else None
    for ax, (title, ylabel, ks) in zip(axes, panels):
        for i, k in enumerate(ks):
            style = {"color": "black", "linestyle": "--", "linewidth": 2} if k in ("mi_total", "loss") else {}
            label = k[len("mi_") :] if k.startswith("mi_") and "|" in k else k
            ax.plot(
                x,
                _series(history, k),
                marker=marker,
                markersize=3,
                label=label,
                **{"color": cycle[i % len(cycle)], **style},
            )
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("epoch")
        ax.tick_params(labelbottom=True)  # shared x, but every panel keeps its epoch ticks
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.suptitle("Training history", fontsize=12)
    return _save(fig, path)


def _tsne(features: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    if features.shape[1] < 2:  # PCA initialisation needs two dimensions
        features = np.hstack([features, np.zeros((len(features), 2 - features.shape[1]))])
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(features)


def _embedding_figure(
    partition: str,
    coords: np.ndarray,
    labels: Mapping[str, np.ndarray],
    class_names: Mapping[str, Sequence[str]],
    n_total: int,
    path: Path,
) -> Path:
    """t-SNE of one partition, one panel per label, points coloured by that label's classes."""
    nrows, ncols = _grid(len(labels))
    fig = Figure(figsize=(4.3 * ncols, 4.5 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, y) in zip(axes, labels.items()):
        names = class_names.get(name) or []
        classes = np.unique(y)
        if len(classes) > 12:  # many classes (or a continuous value): a colour scale reads better than a legend
            sc = ax.scatter(coords[:, 0], coords[:, 1], c=y.astype(float), cmap="viridis", s=8, alpha=0.8)
            fig.colorbar(sc, ax=ax, label=name)
        else:
            palette = colormaps["tab10"].colors
            for i, c in enumerate(classes):
                mask = y == c
                numeric = np.issubdtype(y.dtype, np.number) and float(c).is_integer()
                ci = int(c) if numeric else -1  # class index into the names (labels saved as 0.0/1.0 too)
                label = names[ci] if 0 <= ci < len(names) else str(c)
                ax.scatter(
                    coords[mask, 0],
                    coords[mask, 1],
                    s=8,
                    alpha=0.75,
                    color=palette[i % 10],
                    label=f"{label} (n={mask.sum()})",
                )
            ax.legend(
                loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=min(len(classes), 3), fontsize=8, markerscale=2
            )
        ax.set_title("target (causal)" if name == "causal" else name, fontsize=11)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    shown = f"{len(coords)} of {n_total} points" if len(coords) < n_total else f"{n_total} points"
    fig.suptitle(f"t-SNE of the '{partition}' partition ({shown}), coloured by each label", fontsize=12)
    return _save(fig, path)


def _embedding_figures(
    features_file: str, metrics: Mapping, figures: Path, seed: int
) -> tuple[list[tuple[str, Path]], list[str]]:
    """One t-SNE figure per partition of the features file; also the notes on partitions that were skipped."""
    parts, labels, class_names = _read_features(features_file)
    if "causal" not in class_names and metrics.get("target_names"):
        class_names["causal"] = [str(v) for v in metrics["target_names"]]
    order = ["causal", *_factor_names(metrics)]
    labels = {k: labels[k] for k in [*order, *labels] if k in labels}
    labels = {k: v.reshape(-1) for k, v in labels.items()}
    part_order = [p for p in metrics.get("partitions") or [] if p in parts] + [
        p for p in parts if p not in (metrics.get("partitions") or [])
    ]
    out: list[tuple[str, Path]] = []
    notes: list[str] = []
    if not parts or not labels:
        notes.append(f"{features_file}: no `part_*` or no `label_*` arrays; no embedding drawn.")
        return out, notes
    n = len(next(iter(parts.values())))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, MAX_EMBEDDING_POINTS, replace=False)) if n > MAX_EMBEDDING_POINTS else np.arange(n)
    for p in part_order:
        x = parts[p][idx]
        keep = np.isfinite(x).all(axis=1)
        if keep.sum() < 5:
            notes.append(f"partition `{p}`: fewer than 5 finite feature rows; no embedding drawn.")
            continue
        if np.allclose(x[keep].std(axis=0), 0):
            notes.append(f"partition `{p}`: features are constant; no embedding drawn.")
            continue
        coords = _tsne(x[keep], seed)
        sub_labels = {k: v[idx][keep] for k, v in labels.items()}
        path = figures / f"embedding_{_safe_name(p)}.png"
        out.append((p, _embedding_figure(p, coords, sub_labels, class_names, n, path)))
    return out, notes


# ---------------------------------------------------------------- report


def _image(lines: list[str], heading: str, path: Path, caption: str) -> None:
    lines += ["", f"### {heading}", "", f"![{heading}](figures/{path.name})", "", f"*{caption}*"]


def _summary_section(metrics: Mapping, roc: Path | None) -> list[str]:
    header = [
        "split",
        "n",
        "AUROC [95% CI]",
        "AUPRC [95% CI]",
        "accuracy [95% CI]",
        "balanced accuracy [95% CI]",
        "ECE",
        "worst-group AUROC",
        "worst-group accuracy",
    ]
    rows = []
    for split in _ordered_splits(metrics):
        s = metrics["splits"][split] or {}
        c = s.get("causal") or {}
        rows.append(
            [
                split,
                _fmt_int(s.get("n", c.get("n"))),
                _fmt_ci(c.get("auroc")),
                _fmt_ci(c.get("auprc")),
                _fmt_ci(c.get("accuracy")),
                _fmt_ci(c.get("balanced_accuracy")),
                _fmt_ci(c.get("ece")),
                _fmt(s.get("worst_group_auroc")),
                _fmt(s.get("worst_group_accuracy")),
            ]
        )
    lines = ["## Summary", ""]
    lines += [
        "Causal head on each test split. test_id follows the training distribution; test_inverted reverses the "
        "factor-target association and test_balanced removes it, so a shortcut shows as a drop from test_id to "
        "the other two. Worst-group values are the lowest subgroup value over all factors. ECE: lower is better.",
        "",
    ]
    lines += _table(header, rows) if rows else ["No split in the metrics file."]
    summary = metrics.get("summary")
    if isinstance(summary, Mapping) and summary:
        lines += ["", "Headline numbers:", ""]
        for key, v in summary.items():
            if isinstance(v, Mapping):
                lines += [f"- `{key}`: " + ", ".join(f"{k} {_fmt_ci(x)}" for k, x in v.items())]
            else:
                lines += [f"- `{key}`: {_fmt_ci(v)}"]
    if roc is not None:
        _image(
            lines,
            "ROC curves",
            roc,
            "One ROC curve of the causal head per split (AUROC [95% CI] in the legend); the dashed diagonal is "
            "chance, and a curve that drops from test_id to test_inverted means the model relied on a shortcut.",
        )
    return lines


def _factor_section(metrics: Mapping, auroc_fig: Path | None, acc_fig: Path | None) -> list[str]:
    factors = _factor_names(metrics)
    if not factors:
        return []
    splits = _ordered_splits(metrics)
    partitions = list(metrics.get("partitions") or [])
    lines = ["", "## Per-factor results", ""]
    lines += [
        "For each spurious factor: the causal head's metrics within each subgroup and each target x factor cell, "
        "the factor's own head AUROC, and the switched AUROC (the causal head scored against the factor's label: "
        "ideal 0.5, far from 0.5 means the causal head encodes the factor). Gap = best minus worst subgroup."
    ]
    for f in factors:
        lines += ["", f"### Factor: {f}", ""]
        if partitions and f not in partitions:
            lines += [f"The network has no `{f}` partition, so its head AUROC is n/a.", ""]
        rows = []
        for split in splits:
            d = _factor(metrics, split, f)
            if d:
                rows.append(
                    [
                        split,
                        _fmt(d.get("head_auroc")),
                        _fmt_ci(d.get("switched_auroc")),
                        _fmt(d.get("worst_group_auroc")),
                        _fmt(d.get("auroc_gap")),
                        _fmt(d.get("worst_group_accuracy")),
                        _fmt(d.get("accuracy_gap")),
                    ]
                )
        if not rows:
            lines += [f"No split has metrics for `{f}`."]
            continue
        lines += _table(
            [
                "split",
                f"{f} head AUROC",
                "switched AUROC [95% CI] (ideal 0.5)",
                "worst-group AUROC",
                "AUROC gap",
                "worst-group accuracy",
                "accuracy gap",
            ],
            rows,
        )
        sub = [
            [split, e.get("value"), _fmt_int(e.get("n")), _fmt_ci(e.get("auroc")), _fmt_ci(e.get("accuracy"))]
            for split in splits
            for e in _factor(metrics, split, f).get("subgroups") or []
            if isinstance(e, Mapping)
        ]
        if sub:
            lines += ["", f"Subgroups of {f}:", ""]
            lines += _table(["split", f, "n", "AUROC [95% CI]", "accuracy [95% CI]"], sub)
        cells = [
            [split, e.get("target"), e.get("value"), _fmt_int(e.get("n")), _fmt_ci(e.get("accuracy"))]
            for split in splits
            for e in _factor(metrics, split, f).get("cells") or []
            if isinstance(e, Mapping)
        ]
        if cells:
            lines += ["", f"Target x {f} cells:", ""]
            lines += _table(["split", "target", f, "n", "accuracy [95% CI]"], cells)
    if auroc_fig is not None:
        _image(
            lines,
            "Subgroup AUROC",
            auroc_fig,
            "Each panel is one factor; bars are the causal head's AUROC within each factor value, coloured by split, "
            "with 95% CI error bars; even bars across values and splits mean no reliance on that factor "
            "(dashed line: chance).",
        )
    if acc_fig is not None:
        _image(
            lines,
            "Cell accuracy",
            acc_fig,
            "Accuracy of the causal head in each target x factor cell (x labels: target over factor value), coloured "
            "by split with 95% CI; a shortcut shows as cells that collapse on test_inverted while their counterparts "
            "stay high.",
        )
    return lines


def _leakage_section(metrics: Mapping, fig: Path | None) -> list[str]:
    probes = metrics.get("probes")
    if not isinstance(probes, Mapping) or not _probe_kinds(probes):
        return []
    where = ", ".join(
        x
        for x in (
            f"split {probes['split']}" if probes.get("split") else "",
            f"{probes['folds']}-fold cross-validation" if probes.get("folds") else "",
            f"n = {_fmt_int(probes['n'])}" if probes.get("n") is not None else "",
        )
        if x
    )
    lines = ["", "## Leakage probes", ""]
    lines += [
        "AUROC of a probe trained on one partition's features (rows) to predict one label (columns)"
        + (f"; {where}. " if where else ". ")
        + "Reading guide: ideally the causal partition predicts the target (column `causal`) and sits at ~0.5 for "
        "every factor, and each factor partition predicts its own factor; a high value elsewhere is leakage."
    ]
    for kind in _probe_kinds(probes):
        rows, cols = _probe_axes(metrics, probes[kind])
        lines += ["", f"### Probe: {_PROBE_TITLES.get(kind, kind)}", ""]
        lines += _table(
            ["partition \\ label", *cols],
            [[r, *(_fmt((probes[kind].get(r) or {}).get(c)) for c in cols)] for r in rows],
        )
    if fig is not None:
        _image(
            lines,
            "Leakage heatmaps",
            fig,
            "Probe AUROC per partition (rows) and label (columns), colour fixed from 0.5 (no information) to 1; "
            "red boxes mark the cells that should be high, every other cell should be dark.",
        )
    return lines


def _posthoc_section(metrics: Mapping) -> list[str]:
    mi = metrics.get("posthoc_mi")
    if not isinstance(mi, Mapping) or not isinstance(mi.get("pairs"), Mapping) or not mi["pairs"]:
        return []
    fit, ev = mi.get("fit_split"), mi.get("eval_split")
    lines = ["", "## Post-hoc mutual information", ""]
    lines += [
        "Mutual information between partition pairs, estimated after training by a fresh estimator"
        + (f" fit on {fit}" if fit else "")
        + (f" and evaluated on {ev}" if ev else "")
        + "; near 0 means the two partitions share no information.",
        "",
    ]
    lines += _table(["pair", "MI"], [[pair.replace("|", " / "), _fmt(v, 4)] for pair, v in mi["pairs"].items()])
    return lines


def _training_section(history: Sequence[Mapping], fig: Path | None) -> list[str]:
    lines = ["", "## Training history", ""]
    seconds = [_value(row.get("epoch_seconds")) for row in history]
    seconds = [s for s in seconds if s is not None]
    text = f"{len(history)} epochs"
    if seconds:
        text += f", {np.mean(seconds):.1f} s per epoch on average ({np.sum(seconds) / 60:.1f} min in all)"
    val = [(_value(row.get("val_auc")), row.get("epoch", i + 1)) for i, row in enumerate(history)]
    val = [(v, e) for v, e in val if v is not None]
    if val:
        best = max(val, key=lambda t: t[0])
        text += f"; best validation AUROC {best[0]:.3f} at epoch {best[1]}"
    lines += [text + "."]
    if fig is not None:
        _image(
            lines,
            "Training curves",
            fig,
            "Per-epoch curves (x: epoch): losses should fall, the MI estimate of each partition pair should shrink "
            "towards 0 as the partitions separate, and validation AUROC shows where the model peaked.",
        )
    return lines


def _embedding_section(figs: Sequence[tuple[str, Path]], notes: Sequence[str], seed: int) -> list[str]:
    lines = ["", "## Feature embeddings", ""]
    lines += [f"2-D t-SNE of each partition's test features (seed {seed}), one panel per label."]
    lines += [f"- {note}" for note in notes]
    for partition, path in figs:
        _image(
            lines,
            f"t-SNE of the {partition} partition",
            path,
            f"Each panel colours the same {partition}-partition embedding by one label; clusters that follow a "
            "label mean the partition encodes it (wanted for its own label, unwanted for the others).",
        )
    return lines


def write_report(
    metrics_file: str,
    output_dir: str,
    history_file: str | None = None,
    features_file: str | None = None,
    title: str = "MIMM-X evaluation report",
    seed: int = 0,
) -> str:
    """Write ``output_dir/report.md`` and its PNG figures under ``output_dir/figures``; return the report path."""
    metrics = _read_json(metrics_file, "metrics")
    if not isinstance(metrics, Mapping):
        raise DataError(f"{metrics_file}: metrics must be a JSON object")
    if not isinstance(metrics.get("splits") or {}, Mapping):
        raise DataError(f"{metrics_file}: 'splits' must be an object keyed by split name")
    history = _read_history(history_file) if history_file else None

    out = Path(output_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in [*(figures / n for n in _OWNED_FIGURES), *figures.glob("embedding_*.png")]:
        stale.unlink(missing_ok=True)

    logging.getLogger("mimmx").info("report: figures and tables into %s ...", out)
    roc = _roc_figure(metrics, figures / "roc.png")
    auroc_fig = _group_figure(metrics, "subgroups", figures / "group_auroc.png")
    acc_fig = _group_figure(metrics, "cells", figures / "group_accuracy.png")
    leak_fig = _leakage_figure(metrics, figures / "leakage.png")

    lines = [f"# {title}", ""]
    meta = [
        ("spurious factors", ", ".join(map(str, _factor_names(metrics)))),
        ("network partitions", ", ".join(map(str, metrics.get("partitions") or []))),
        ("target classes", ", ".join(map(str, metrics.get("target_names") or []))),
    ]
    lines += [f"- {k}: {v}" for k, v in meta if v]
    lines += [f"- metrics: `{metrics_file}`"]
    lines += [""]
    lines += _summary_section(metrics, roc)
    lines += _factor_section(metrics, auroc_fig, acc_fig)
    lines += _leakage_section(metrics, leak_fig)
    lines += _posthoc_section(metrics)
    if history is not None:
        lines += _training_section(history, _training_figure(history, figures / "training.png"))
    if features_file:
        logging.getLogger("mimmx").info("report: t-SNE of every partition (about a minute per partition) ...")
        lines += _embedding_section(*_embedding_figures(features_file, metrics, figures, seed), seed)

    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return str(path)
