"""Scores of one test split with percentile-bootstrap confidence intervals.

A single number per split hides how much of it is sampling noise: test splits built to invert or balance a shortcut
are often small, and their subgroups smaller still. Every metric is therefore reported as ``{"value", "ci"}`` with a
percentile bootstrap interval over the split's rows. Besides the overall scores, ``group_metrics`` breaks the split
down by one spurious factor (subgroups, and target x factor cells as in SubpopBench), because a shortcut shows up as
a gap between groups long before it moves the average.

Each metric is written once, for a whole set of resamples (:class:`mimmx.resampling.Resamples`): AUROC as the
Mann-Whitney statistic over the counts of each distinct score (ties count one half, as scikit-learn's trapezoid
does), AUPRC as scikit-learn's step-wise average precision over the same counts, the rest as per-resample sums. The
plain value is the same code on the identity resample, so a value and its interval can never disagree in definition.

All returned numbers are plain Python floats/ints (or None where a metric is undefined), so results go straight
into JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mimmx.resampling import Resamples

__all__ = [
    "accuracy",
    "auprc",
    "auroc",
    "balanced_accuracy",
    "bootstrap_ci",
    "classification_metrics",
    "decision_leakage",
    "decision_leakage_null",
    "ece",
    "group_balanced_auroc",
    "group_metrics",
    "roc_curve_points",
    "switched_auroc",
]

# rows x distinct scores held at once while the resamples are scored (about 32 MB of float64 per array)
_MAX_ENTRIES = 1 << 22

Vectorised = Callable[[np.ndarray, np.ndarray, Resamples], np.ndarray]


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as a 1-D int array and probabilities as (n, C) floats over the same rows."""
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (n, classes), got shape {probs.shape}")
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"labels and probs must hold the same rows, got {labels.shape[0]} and {probs.shape[0]}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("labels must be integer class indices")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got range [{labels.min()}, {labels.max()}]")
    return labels, probs


def _metric(value: float | None, ci: list[float] | None) -> dict:
    return {"value": None if value is None else float(value), "ci": ci}


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN (undefined) where den is 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _score_counts(positive: np.ndarray, scores: np.ndarray, rs: Resamples) -> tuple[np.ndarray, np.ndarray]:
    """Per resample, positives and negatives at each distinct score (ascending): two (count, distinct) arrays."""
    _, code = np.unique(scores, return_inverse=True)
    n_codes = int(code.max()) + 1 if code.size else 0
    total = rs.sums_by(code, n_codes)
    pos = rs.sums_by(code, n_codes, positive)
    return pos, total - pos


def _roc_auc(positive: np.ndarray, scores: np.ndarray, rs: Resamples) -> np.ndarray:
    """Probability that a positive outscores a negative, ties counting one half (Mann-Whitney U / (P N))."""
    pos, neg = _score_counts(positive, scores, rs)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    return _divide(wins, pos.sum(axis=1) * neg.sum(axis=1))


def _average_precision(positive: np.ndarray, scores: np.ndarray, rs: Resamples) -> np.ndarray:
    """sum_k (R_k - R_k-1) P_k over the distinct scores from the highest down (scikit-learn's definition)."""
    pos, neg = _score_counts(positive, scores, rs)
    tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]  # positives scoring >= each distinct score
    predicted = tp + np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    return _divide((pos * precision).sum(axis=1), pos.sum(axis=1))


def _ovr_macro(labels: np.ndarray, probs: np.ndarray, rs: Resamples, score: Vectorised) -> np.ndarray:
    """Binary score of probs[:, 1], or the one-vs-rest macro mean over the classes present for C > 2.

    Classes absent from a resample have no one-vs-rest score and are left out of its mean (a resample or a small
    split may miss a rare class); with all classes present this is sklearn's ``average="macro"``. NaN where fewer
    than two classes are present.
    """
    n_classes = probs.shape[1]
    present = rs.sums_by(labels, n_classes) > 0
    n_present = present.sum(axis=1)
    if n_classes == 2:
        out = score(labels == 1, probs[:, 1], rs)
    else:
        out = np.zeros(rs.count)
        for c in range(n_classes):
            out += np.where(present[:, c], score(labels == c, probs[:, c], rs), 0.0)
        out = out / np.maximum(n_present, 1)
    return np.where(n_present >= 2, out, np.nan)


def _auroc(labels: np.ndarray, probs: np.ndarray, rs: Resamples) -> np.ndarray:
    return _ovr_macro(labels, probs, rs, _roc_auc)


def _auprc(labels: np.ndarray, probs: np.ndarray, rs: Resamples) -> np.ndarray:
    return _ovr_macro(labels, probs, rs, _average_precision)


def _accuracy(labels: np.ndarray, probs: np.ndarray, rs: Resamples) -> np.ndarray:
    return _divide(rs.sums(probs.argmax(1) == labels), rs.sizes())


def _balanced_accuracy(labels: np.ndarray, probs: np.ndarray, rs: Resamples) -> np.ndarray:
    n_classes = probs.shape[1]
    counts = rs.sums_by(labels, n_classes)
    hits = rs.sums_by(labels, n_classes, probs.argmax(1) == labels)
    present = counts > 0
    recall = np.divide(hits, counts, out=np.zeros_like(hits), where=present)
    n_present = present.sum(axis=1)
    return np.where(n_present >= 2, recall.sum(axis=1) / np.maximum(n_present, 1), np.nan)


def _ece(labels: np.ndarray, probs: np.ndarray, rs: Resamples, n_bins: int = 10) -> np.ndarray:
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    bins = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    gap = rs.sums_by(bins, n_bins, correct - conf)  # n_k (acc_k - conf_k)
    return _divide(np.abs(gap).sum(axis=1), rs.sizes())


def _value(metric: Vectorised, labels: np.ndarray, probs: np.ndarray) -> float | None:
    """The metric on the rows themselves (the identity resample); None where undefined."""
    labels, probs = _check(labels, probs)
    value = metric(labels, probs, Resamples.identity(labels.size))[0] if labels.size else np.nan
    return None if np.isnan(value) else float(value)


def auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC (one-vs-rest macro for C > 2); None with one class only."""
    return _value(_auroc, labels, probs)


def auprc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Average precision, the step-wise area under the precision-recall curve (macro for C > 2); None with one class."""
    return _value(_auprc, labels, probs)


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Top-1 accuracy; None for an empty split."""
    return _value(_accuracy, labels, probs)


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean per-class recall over the classes present (sklearn's definition); None with one class only."""
    return _value(_balanced_accuracy, labels, probs)


def ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float | None:
    """Expected calibration error of the top-class confidence; None for an empty split.

    Bins are equal-width, [k/B, (k+1)/B) with the last one closed at 1; ECE = sum_k (n_k / n) |acc_k - conf_k|.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    return _value(lambda y, p, rs: _ece(y, p, rs, n_bins), labels, probs)


# the vectorised form of each public metric, used by the bootstrap
_VECTORISED: dict[Callable, Vectorised] = {
    auroc: _auroc,
    auprc: _auprc,
    accuracy: _accuracy,
    balanced_accuracy: _balanced_accuracy,
    ece: _ece,
}


def _resampled_values(
    statistic: Callable[..., float | None], arrays: Sequence[np.ndarray], rs: Resamples
) -> np.ndarray:
    """The statistic of every resample (NaN where undefined): vectorised for this module's metrics, one call per
    resample for any other callable."""
    vectorised = _VECTORISED.get(statistic)
    if vectorised is not None:
        labels, probs = _check(*arrays)
        return np.concatenate([vectorised(labels, probs, chunk) for chunk in rs.chunks(_MAX_ENTRIES)])
    values = (statistic(*(a[idx] for a in arrays)) for idx in rs.indices())
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _percentile_interval(values: np.ndarray, n_boot: int, level: float) -> list[float] | None:
    """The percentile interval of the defined values; None when fewer than half of the resamples are defined."""
    values = values[np.isfinite(values)]
    if values.size < n_boot / 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def bootstrap_ci(
    statistic: Callable[..., float | None],
    arrays: Sequence[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    clusters: np.ndarray | None = None,
) -> list[float] | None:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling rows jointly across the arrays.

    With ``clusters`` (a patient id per row) whole patients are resampled (a cluster bootstrap, see
    :meth:`mimmx.resampling.Resamples.draw`). This module's metrics are computed for all resamples at once; any
    other statistic is called once per resample. Resamples where the statistic is undefined (None, e.g. one class
    drawn only) are skipped; if fewer than half are defined the interval is None rather than one drawn from a biased
    remainder. None too for n_boot 0 or no rows.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"all arrays must hold the same rows, got {[a.shape[0] for a in arrays]}")
    if n_boot <= 0 or n == 0:
        return None
    rs = Resamples.draw(n, n_boot, seed, clusters)
    return _percentile_interval(_resampled_values(statistic, arrays, rs), n_boot, level)


def _with_ci(
    statistic: Callable[..., float | None],
    arrays: Sequence[np.ndarray],
    n_boot: int,
    seed: int,
    clusters: np.ndarray | None = None,
) -> dict:
    value = statistic(*arrays)
    ci = bootstrap_ci(statistic, arrays, n_boot=n_boot, seed=seed, clusters=clusters) if value is not None else None
    return _metric(value, ci)


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0, clusters: np.ndarray | None = None
) -> dict:
    """AUROC, AUPRC, accuracy, balanced accuracy and ECE of softmax outputs, each with a bootstrap CI.

    All metrics share the seed, hence the same resamples: their intervals are paired. ``clusters`` (patient ids)
    makes the bootstrap resample patients (:func:`bootstrap_ci`).
    """
    labels, probs = _check(labels, probs)
    arrays = (labels, probs)
    out: dict = {"n": int(labels.size)}
    for name, fn in (
        ("auroc", auroc),
        ("auprc", auprc),
        ("accuracy", accuracy),
        ("balanced_accuracy", balanced_accuracy),
        ("ece", ece),
    ):
        out[name] = _with_ci(fn, arrays, n_boot, seed, clusters)
    return out


def _worst_and_gap(values: list[float | None]) -> tuple[float | None, float | None]:
    """Minimum over the defined values, and max - min where at least two groups are defined."""
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    worst = float(min(defined))
    return worst, (float(max(defined) - worst) if len(defined) >= 2 else None)


def group_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    target_names: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> dict:
    """Per-subgroup AUROC/accuracy and per target x factor cell accuracy for one spurious factor.

    A model that relies on the factor scores well where factor and target agree and badly where they disagree; the
    worst group and the gap between groups expose that even when the split's average looks fine. Each group's CI
    resamples within the group. Empty groups are listed with n 0 and None metrics.
    """
    labels, probs = _check(labels, probs)
    groups = np.asarray(groups).reshape(-1).astype(np.int64)
    if groups.shape[0] != labels.shape[0]:
        raise ValueError(f"groups and labels must hold the same rows, got {groups.shape[0]} and {labels.shape[0]}")
    if groups.size and (groups.min() < 0 or groups.max() >= len(group_names)):
        raise ValueError(f"group values must lie in [0, {len(group_names)}), got [{groups.min()}, {groups.max()}]")
    if len(target_names) != probs.shape[1]:
        raise ValueError(f"{len(target_names)} target names for {probs.shape[1]} classes")

    subgroups = []
    for v, name in enumerate(group_names):
        mask = groups == v
        arrays = (labels[mask], probs[mask])
        within = None if clusters is None else np.asarray(clusters).reshape(-1)[mask]
        subgroups.append(
            {
                "value": str(name),
                "n": int(mask.sum()),
                "auroc": _with_ci(auroc, arrays, n_boot, seed, within),
                "accuracy": _with_ci(accuracy, arrays, n_boot, seed, within),
            }
        )
    cells = []
    for t, target in enumerate(target_names):
        for v, name in enumerate(group_names):
            mask = (labels == t) & (groups == v)
            cells.append(
                {
                    "target": str(target),
                    "value": str(name),
                    "n": int(mask.sum()),
                    "accuracy": _with_ci(accuracy, (labels[mask], probs[mask]), n_boot, seed),
                }
            )
    worst_auroc, auroc_gap = _worst_and_gap([s["auroc"]["value"] for s in subgroups])
    worst_acc, acc_gap = _worst_and_gap([c["accuracy"]["value"] for c in cells])
    return {
        "subgroups": subgroups,
        "cells": cells,
        "worst_group_auroc": worst_auroc,
        "auroc_gap": auroc_gap,
        "worst_group_accuracy": worst_acc,
        "accuracy_gap": acc_gap,
    }


def switched_auroc(
    groups: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0, clusters: np.ndarray | None = None
) -> dict:
    """The causal head's probs[:, 1] scored against a binary factor's label.

    A model that learned the shortcut predicts the factor, so this sits far from 0.5; a shortcut-free one is at
    chance. Undefined (value None) when the causal task is not binary, the factor has values other than 0/1, or only
    one factor value is present.
    """
    groups = np.asarray(groups).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != groups.shape[0]:
        raise ValueError(f"probs must be (n, classes) over the groups' rows, got {probs.shape} for {groups.shape[0]}")
    if probs.shape[1] != 2 or not np.isin(groups, (0, 1)).all():
        return _metric(None, None)
    return _with_ci(auroc, (groups.astype(np.int64), probs), n_boot, seed, clusters)


def roc_curve_points(labels: np.ndarray, probs: np.ndarray, max_points: int = 200) -> dict | None:
    """ROC curve of a binary task for plotting, thinned to at most ``max_points`` with both endpoints kept."""
    labels, probs = _check(labels, probs)
    if probs.shape[1] != 2 or np.unique(labels).size < 2:
        return None
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    fpr, tpr, _ = roc_curve(labels, probs[:, 1])
    if fpr.size > max_points:
        keep = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]}


def group_balanced_auroc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float | None:
    """AUROC of ``scores`` (the causal output, P(class 1)) where every group carries the same total weight.

    With groups = target x factor values, the weighted split has every factor independent of the target, as a
    balanced test set has, so a model that leans on a shortcut loses here what it gains from it on the correlated
    split. Used for model selection on val. Empty groups carry nothing; a group of one image weighs as much as a
    large one, so the value is noisy when some groups are tiny. None with one target class only.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if not labels.shape == scores.shape == groups.shape:
        raise ValueError(
            f"labels, scores and groups must hold the same rows: {labels.shape}, {scores.shape}, {groups.shape}"
        )
    if np.unique(labels).size < 2:
        return None
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return float(roc_auc_score(labels, scores, sample_weight=1.0 / counts[inverse]))


def decision_leakage(labels: np.ndarray, scores: np.ndarray, factor: np.ndarray) -> float | None:
    """How well the causal output separates a factor's values *within* each target class: 0.5 = not at all.

    Per target class, the AUROC of ``scores`` against each factor value (one-vs-rest; a binary factor gives one
    number), folded as ``|AUROC - 0.5| + 0.5`` so that using the factor in either direction counts, then averaged
    over values and classes. Unlike the switched test this is not fooled by the target itself going with the factor:
    on a split where they are independent both agree, elsewhere only this one isolates the factor's own effect.
    None where no class holds two factor values.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    factor = np.asarray(factor).reshape(-1)
    if not labels.shape == scores.shape == factor.shape:
        raise ValueError(
            f"labels, scores and factor must hold the same rows: {labels.shape}, {scores.shape}, {factor.shape}"
        )
    per_class = []
    for c in np.unique(labels):
        inside = labels == c
        values = np.unique(factor[inside])
        if values.size < 2:
            continue
        values = values[1:] if values.size == 2 else values  # binary: both one-vs-rest AUROCs fold to the same value
        folded = [abs(roc_auc_score(factor[inside] == v, scores[inside]) - 0.5) + 0.5 for v in values]
        per_class.append(float(np.mean(folded)))
    return float(np.mean(per_class)) if per_class else None


def decision_leakage_null(
    labels: np.ndarray, scores: np.ndarray, factor: np.ndarray, n_perm: int = 300, seed: int = 0, level: float = 0.95
) -> float | None:
    """What :func:`decision_leakage` reads on this split when the scores carry no factor at all: its ``level``
    quantile with the factor permuted inside each target class.

    The folded AUROC is at least 0.5 by construction, so even a model that ignores the factor reads above 0.5, the
    more so the smaller the classes; this quantile is that floor for the split's own sizes. A model reading above it
    uses the factor (for a reason the training correlation gave it, or because the factor changes the image the
    model reads). None where :func:`decision_leakage` is None or ``n_perm`` is 0.
    """
    labels = np.asarray(labels).reshape(-1)
    factor = np.asarray(factor).reshape(-1)
    if n_perm <= 0 or decision_leakage(labels, scores, factor) is None:
        return None
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    values = []
    for _ in range(n_perm):
        permuted = factor.copy()
        for rows in classes:
            permuted[rows] = factor[rng.permutation(rows)]
        values.append(decision_leakage(labels, scores, permuted))
    return float(np.quantile(values, level))
