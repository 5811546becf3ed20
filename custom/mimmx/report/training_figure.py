"""The training-history figure: losses, MI per partition pair, pair weights, critic loss and validation AUROC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from mimmx.names import CE_PREFIX, CRITIC_LOSS, MI_PREFIX, MI_SCALE, MI_TOTAL, WEIGHT_PREFIX, is_pair_mi
from mimmx.report.figures import save_figure
from mimmx.report.values import metric_value

__all__ = ["training_figure"]


def _series(history: Sequence[Mapping], key: str) -> np.ndarray:
    return np.array([np.nan if metric_value(row.get(key)) is None else metric_value(row.get(key)) for row in history])


def training_figure(history: Sequence[Mapping], path: Path) -> Path | None:
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
            [k for k in keys if k == "loss" or k.startswith(CE_PREFIX) or (k.startswith("val_") and "loss" in k)],
        ),
        # MINE and CLUB estimate in nats; dCor (mi_estimator#estimator dcor) is a unitless dependence measure
        (
            "mutual information between partitions",
            "MI estimate (nats; dCor: no unit)",
            [k for k in keys if is_pair_mi(k)],
        ),
        ("pair weights and MI scale", "value", [k for k in keys if k.startswith(WEIGHT_PREFIX) or k == MI_SCALE]),
        ("MI critic loss", "critic loss", [k for k in keys if k == CRITIC_LOSS]),
        ("validation AUROC", "AUROC", is_val_auc),
    ]
    if MI_TOTAL in keys:
        panels[1] = (panels[1][0], panels[1][1], [*panels[1][2], MI_TOTAL])
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
            style = {"color": "black", "linestyle": "--", "linewidth": 2} if k in (MI_TOTAL, "loss") else {}
            label = k[len(MI_PREFIX) :] if is_pair_mi(k) else k
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
    return save_figure(fig, path)
