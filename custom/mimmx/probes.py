"""Post-hoc checks of a trained encoder's partitions: what each one still reveals, and how much they share.

The MI terms minimised during training are estimated by critics that trained alongside the encoder, on the same
batches; a low training estimate may mean the critic lost the race rather than that the information is gone.
These checks start from frozen features and fresh models:

* ``leakage_probes`` - cross-validated logistic-regression and kNN probes from every partition to every label. The
  causal partition should predict the target and sit at chance for each factor; a factor's partition should predict
  its factor. A linear probe misses non-linear leakage, hence the kNN probe beside it.
* ``posthoc_mi`` - a fresh MINE critic per pair of partitions, trained on one set of features and evaluated on
  another, so that the estimate is not inflated by a critic that memorised its own samples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mimmx.mi import MINE, PAIR_SEP

__all__ = ["leakage_probes", "posthoc_mi"]


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"features {name!r} must be (n, d), got shape {x.shape}")
    return x


def _rows(arrays: Mapping[str, np.ndarray], what: str) -> int:
    sizes = {k: int(np.shape(v)[0]) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"all {what} must hold the same rows, got {sizes}")
    return next(iter(sizes.values())) if sizes else 0


def _oof_auroc(
    make_model, x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], n_classes: int
) -> float:
    """One AUROC over all rows from out-of-fold class probabilities (one-vs-rest macro for more than two classes)."""
    oof = np.zeros((y.shape[0], n_classes))
    for train, test in splits:
        model = make_model(len(train)).fit(x[train], y[train])
        oof[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    if n_classes == 2:
        return float(roc_auc_score(y, oof[:, 1]))
    return float(np.mean([roc_auc_score(y == c, oof[:, c]) for c in range(n_classes)]))


def leakage_probes(
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    folds: int = 5,
    knn_k: int = 15,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict:
    """Cross-validated AUROC of a logistic and a kNN probe from every partition to every label.

    With ``groups`` (patient ids) where a patient has several images, the folds keep each patient's images together
    (a probe that saw one image of a patient would recognise the patient, not the label), when every fold can
    still hold every class.

    Labels with a single class, or with a class of fewer than two members, get None; otherwise the number of folds
    drops to the smallest class count where that is below ``folds``, so that every fold holds every class. The folds
    of a label are shared by all partitions and both probes.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if knn_k < 1:
        raise ValueError(f"knn_k must be positive, got {knn_k}")
    feats = {name: _as_2d(x, name) for name, x in features.items()}
    n = _rows({**feats, **{k: np.asarray(v).reshape(-1) for k, v in labels.items()}}, "features and labels")

    def logistic(_: int) -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    def knn(n_train: int) -> Pipeline:
        return make_pipeline(StandardScaler(), KNeighborsClassifier(min(knn_k, n_train)))

    out: dict = {"folds": int(folds), "n": int(n), "logistic": {p: {} for p in feats}, "knn": {p: {} for p in feats}}
    for label_name, raw in labels.items():
        classes, y = np.unique(np.asarray(raw).reshape(-1), return_inverse=True)
        counts = np.bincount(y, minlength=classes.size) if classes.size else np.zeros(0, dtype=np.int64)
        if classes.size < 2 or counts.min() < 2:
            for p in feats:
                out["logistic"][p][label_name] = None
                out["knn"][p][label_name] = None
            continue
        k = int(min(folds, counts.min()))
        splits = _folds(y, k, seed, groups)
        for p, x in feats.items():
            out["logistic"][p][label_name] = _oof_auroc(logistic, x, y, splits, classes.size)
            out["knn"][p][label_name] = _oof_auroc(knn, x, y, splits, classes.size)
    return out


def _folds(y: np.ndarray, k: int, seed: int, groups: np.ndarray | None) -> list:
    """Stratified folds, grouped by patient where patients have several rows and every fold keeps every class."""
    n = len(y)
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if len(np.unique(groups)) < n:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            try:
                grouped = list(splitter.split(np.zeros(n), y, groups))
            except ValueError:
                grouped = []
            classes = np.unique(y)
            if grouped and all(np.array_equal(np.unique(y[test]), classes) for _, test in grouped):
                return grouped
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), y))


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    return torch.as_tensor((x - mean) / std, dtype=torch.float32)


@torch.no_grad()
def _dv_bound(critic: MINE, a: torch.Tensor, b: torch.Tensor, max_elements: int = 1 << 22) -> float:
    """Plain Donsker-Varadhan bound mean_i T(a_i, b_i) - log mean_{i != j} exp T(a_i, b_j) over all pairs.

    Rows of the n x n score grid are computed in chunks so that the (rows, n, hidden) activations stay small.
    """
    n = a.shape[0]
    hidden = critic.proj_a.out_features
    chunk = max(1, max_elements // (n * hidden))
    joint = torch.zeros((), dtype=torch.float64)
    log_marg = torch.tensor(-math.inf, dtype=torch.float64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        t = critic.scores(a[start:stop], b).double()  # (rows, n)
        rows = torch.arange(stop - start)
        diag = t[rows, rows + start]
        joint = joint + diag.sum()
        t[rows, rows + start] = -math.inf
        log_marg = torch.logaddexp(log_marg, torch.logsumexp(t.reshape(-1), dim=0))
    return float(joint / n - (log_marg - math.log(n * (n - 1))))


def posthoc_mi(
    fit_features: Mapping[str, np.ndarray],
    eval_features: Mapping[str, np.ndarray],
    steps: int = 500,
    hidden: int = 32,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """MI in nats between every pair of partitions ("a|b"), from fresh MINE critics on frozen features.

    Each critic is trained on ``fit_features`` and the DV bound is evaluated on ``eval_features``, both standardised
    with the fit set's statistics. A held-out bound can dip below zero when the critic overfits; it is clipped at 0.
    The caller's torch RNG state is left untouched.
    """
    names = list(fit_features)
    if len(names) < 2:
        raise ValueError(f"posthoc MI needs at least two partitions, got {names}")
    missing = [k for k in names if k not in eval_features]
    if missing:
        raise KeyError(f"partitions {missing} missing from eval_features; got {list(eval_features)}")
    fit = {k: _as_2d(fit_features[k], k) for k in names}
    ev = {k: _as_2d(eval_features[k], k) for k in names}
    n_fit, n_eval = _rows(fit, "fit features"), _rows(ev, "eval features")
    if n_fit < 2 or n_eval < 2:
        raise ValueError(f"posthoc MI needs at least 2 rows to fit and to evaluate, got {n_fit} and {n_eval}")
    for k in names:
        if fit[k].shape[1] != ev[k].shape[1]:
            raise ValueError(f"partition {k!r}: fit has {fit[k].shape[1]} dims, eval {ev[k].shape[1]}")

    fit_t, ev_t = {}, {}
    for k in names:
        mean, std = fit[k].mean(0), fit[k].std(0)
        std = np.where(std > 1e-8, std, 1.0)
        fit_t[k], ev_t[k] = _standardise(fit[k], mean, std), _standardise(ev[k], mean, std)

    batch = max(2, min(batch_size, n_fit))
    out: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for a_name, b_name in itertools.combinations(names, 2):
            a_fit, b_fit = fit_t[a_name], fit_t[b_name]
            critic = MINE(a_fit.shape[1], b_fit.shape[1], hidden=hidden)
            opt = torch.optim.Adam(critic.parameters(), lr=lr)
            critic.train()
            order = torch.randperm(n_fit)
            cursor = 0
            for _ in range(steps):
                if cursor + batch > n_fit:
                    order, cursor = torch.randperm(n_fit), 0
                idx = order[cursor : cursor + batch]
                cursor += batch
                loss = critic.critic_loss(a_fit[idx], b_fit[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            critic.eval()
            estimate = _dv_bound(critic, ev_t[a_name], ev_t[b_name])
            out[f"{a_name}{PAIR_SEP}{b_name}"] = max(0.0, estimate) if math.isfinite(estimate) else math.nan
    return out
