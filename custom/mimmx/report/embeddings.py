"""t-SNE embeddings of each partition's test features, one panel per label: optional, because t-SNE takes about a
minute per partition and dominates the report's time; the numbers (leakage probes) do not depend on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from mimmx.names import CAUSAL
from mimmx.report.figures import panel_grid, safe_name, save_figure
from mimmx.report.files import read_features
from mimmx.report.values import factor_names

__all__ = ["embedding_figures", "MAX_EMBEDDING_POINTS"]

MAX_EMBEDDING_POINTS = 1000


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
    nrows, ncols = panel_grid(len(labels))
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
        ax.set_title("target (causal)" if name == CAUSAL else name, fontsize=11)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    shown = f"{len(coords)} of {n_total} points" if len(coords) < n_total else f"{n_total} points"
    fig.suptitle(f"t-SNE of the '{partition}' partition ({shown}), coloured by each label", fontsize=12)
    return save_figure(fig, path)


def embedding_figures(
    features_file: str, metrics: Mapping, figures: Path, seed: int
) -> tuple[list[tuple[str, Path]], list[str]]:
    """One t-SNE figure per partition of the features file; also the notes on partitions that were skipped."""
    parts, labels, class_names = read_features(features_file)
    if CAUSAL not in class_names and metrics.get("target_names"):
        class_names[CAUSAL] = [str(v) for v in metrics["target_names"]]
    order = [CAUSAL, *factor_names(metrics)]
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
        path = figures / f"embedding_{safe_name(p)}.png"
        out.append((p, _embedding_figure(p, coords, sub_labels, class_names, n, path)))
    return out, notes
