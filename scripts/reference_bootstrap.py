"""The reference bootstrap: one scikit-learn / numpy call per metric per resample, as evaluation computed it before
the metrics were vectorised (:mod:`mimmx.metrics`). Not product code.

Two uses: the tests check that the vectorised intervals equal these for the same seed, and ``scripts/scaling.py``
times an evaluation with them swapped in (:func:`reference_metrics`) to report the evaluation time before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["REFERENCE", "bootstrap_ci", "reference_metrics"]


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    return labels, np.asarray(probs, dtype=np.float64)


def _ovr_macro(labels: np.ndarray, probs: np.ndarray, score: Callable) -> float | None:
    present = np.unique(labels)
    if present.size < 2:
        return None
    if probs.shape[1] == 2:
        return float(score(labels == 1, probs[:, 1]))
    return float(np.mean([score(labels == c, probs[:, c]) for c in present]))


def auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    labels, probs = _check(labels, probs)
    return _ovr_macro(labels, probs, roc_auc_score)


def auprc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    labels, probs = _check(labels, probs)
    return _ovr_macro(labels, probs, average_precision_score)


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float | None:
    labels, probs = _check(labels, probs)
    return float(np.mean(probs.argmax(1) == labels)) if labels.size else None


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float | None:
    labels, probs = _check(labels, probs)
    present = np.unique(labels)
    if present.size < 2:
        return None
    n_classes = probs.shape[1]
    hits = np.bincount(labels, weights=(probs.argmax(1) == labels).astype(np.float64), minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes)
    return float(np.mean(hits[present] / counts[present]))


def ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float | None:
    labels, probs = _check(labels, probs)
    if labels.size == 0:
        return None
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    bins = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    gap = np.bincount(bins, weights=correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / labels.size)


def _resamples(rng: np.random.Generator, n: int, n_boot: int, clusters: np.ndarray | None) -> list[np.ndarray]:
    if clusters is not None:
        _, cluster_of = np.unique(np.asarray(clusters).reshape(-1), return_inverse=True)
        k = int(cluster_of.max()) + 1 if n else 0
        if k < n:
            order = np.argsort(cluster_of, kind="stable")
            members = np.split(order, np.cumsum(np.bincount(cluster_of, minlength=k))[:-1])
            return [np.concatenate([members[c] for c in rng.integers(0, k, size=k)]) for _ in range(n_boot)]
    return list(rng.integers(0, n, size=(n_boot, n)))


def bootstrap_ci(statistic: Callable, arrays: Sequence, n_boot=1000, seed=0, level=0.95, clusters=None) -> list | None:
    """Percentile interval with one ``statistic`` call per resample (same signature as the product's)."""
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0]
    if n_boot <= 0 or n == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for idx in _resamples(rng, n, n_boot, clusters):
        v = statistic(*(a[idx] for a in arrays))
        if v is not None and np.isfinite(v):
            values.append(float(v))
    if len(values) < n_boot / 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


REFERENCE = {
    "auroc": auroc,
    "auprc": auprc,
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "ece": ece,
    "bootstrap_ci": bootstrap_ci,
}


@contextmanager
def reference_metrics() -> Iterator[None]:
    """Inside the block, :mod:`mimmx.metrics` (and the evaluation that calls it) scores with the reference."""
    import mimmx.evaluation
    import mimmx.metrics

    saved = {name: getattr(mimmx.metrics, name) for name in REFERENCE}
    saved_eval_auroc = mimmx.evaluation.auroc
    try:
        for name, fn in REFERENCE.items():
            setattr(mimmx.metrics, name, fn)
        mimmx.evaluation.auroc = auroc
        yield
    finally:
        for name, fn in saved.items():
            setattr(mimmx.metrics, name, fn)
        mimmx.evaluation.auroc = saved_eval_auroc
