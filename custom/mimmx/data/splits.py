"""Bucket subsampling: splits with a chosen correlation between the target and each spurious factor.

The published protocol trains and validates at a strong correlation rho between the label y and
each binary factor z_k (rho = P(z_k == y)), and tests on three splits: one at the training
correlation (``test_id``), one with the correlation inverted (``test_inverted``, P(z_k == y) =
1 - rho) and one balanced (``test_balanced``: prevalence 0.5, P(z_k == y) = 0.5). A model that
uses a shortcut scores well on the first and badly on the second.

A bucket is a tuple (y, z_1, ..., z_K). A split of size n asks each bucket for
n * p(y) * prod_k p_k(z_k | y) images, rounded by largest remainder so the counts sum to n
exactly; images are then drawn per bucket, at random (seeded), by patient, so that no patient
appears in two splits. Within a bucket a split takes one image from each patient no split holds
yet before it takes a second image of any patient: on a cohort with several images per patient
(CheXpert) a test split of 400 images then holds close to 400 patients, not a few dozen patients'
series, and its metrics and confidence intervals are about patients.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mimmx.data.association import cramers_v, phi
from mimmx.errors import ConfigError, DataError, SplitError
from mimmx.names import SPLIT_NAMES, TEST_BALANCED, TEST_ID, TEST_INVERTED, TRAIN, VAL

__all__ = ["SPLIT_NAMES", "SplitResult", "build_splits", "format_report", "bucket_counts"]

logger = logging.getLogger("mimmx.data")

# Small test splits first within each bucket: they reserve few patients, and the big train split
# is the one best able to absorb what is left.
_FILL_ORDER = (TEST_BALANCED, TEST_INVERTED, TEST_ID, VAL, TRAIN)
_AT_RHO = (TRAIN, VAL, TEST_ID)


@dataclass
class SplitResult:
    """The items of each split (copies of the input dicts) and a JSON-serialisable report."""

    splits: dict[str, list[dict]] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


@dataclass
class _Cohort:
    labels: np.ndarray  # (N,) 0/1
    codes: np.ndarray  # (N, K) factor class indices
    groups: np.ndarray  # (N,) patient index
    n_groups: int
    values: list[list[int]]  # per factor, the values present in the cohort
    binary: list[bool]  # per factor: values == [0, 1], so correlation-controlled


def build_splits(
    items: Sequence[Mapping],
    factor_keys: Sequence[str],
    sizes: Mapping[str, int],
    rho: float | Mapping[str, float],
    prevalence: float = 0.5,
    seed: int = 0,
    target_key: str = "label",
    group_key: str = "patient_id",
    train_rho: float | Mapping[str, float] | None = None,
) -> SplitResult:
    """Draw the five splits of :data:`SPLIT_NAMES` from ``items`` by bucket, without patient overlap.

    Binary factors (values exactly {0, 1} in the cohort) are correlation-controlled as described
    in the module docstring. Factors with more than two values (categorical) are not: they are
    spread evenly over their values, independently of the target, in every split. ``rho`` is
    one number for all binary factors or a mapping factor key -> rho. ``train_rho``, when given, replaces it
    for train and val only (an oracle trains at 0.5 and is tested on the same kinds of test split). Raises
    ConfigError on bad arguments, DataError on malformed items and SplitError when the cohort cannot supply a bucket.
    """
    factor_keys = list(factor_keys)
    sizes = _check_sizes(sizes)
    prevalence = _check_probability("prevalence", prevalence, open_interval=True)
    cohort = _extract(items, factor_keys, target_key, group_key)
    rhos = _check_rho(rho, factor_keys, cohort.binary)
    train_rhos = rhos if train_rho is None else _check_rho(train_rho, factor_keys, cohort.binary)
    wanted = {name: {k: _wanted_rho(name, k, rhos, train_rhos) for k in rhos} for name in SPLIT_NAMES}

    requests = {
        name: bucket_counts(_bucket_probabilities(name, prevalence, wanted[name], cohort), sizes[name])
        for name in SPLIT_NAMES
    }
    assignment = _select(cohort, requests, seed, factor_keys, target_key, rhos)
    _check_factor_spread(cohort, assignment, factor_keys)

    splits = {name: [dict(items[i]) for i in np.flatnonzero(assignment == s)] for s, name in enumerate(SPLIT_NAMES)}
    report = _report(cohort, assignment, requests, factor_keys, target_key, rhos, wanted, prevalence, sizes, seed)
    if train_rho is not None:
        report["train_rho"] = dict(train_rhos)
    return SplitResult(splits=splits, report=report)


def bucket_counts(probabilities: Mapping[tuple, float], n: int) -> dict[tuple, int]:
    """Integer counts proportional to ``probabilities`` that sum exactly to ``n`` (largest remainder)."""
    keys = list(probabilities)
    raw = [probabilities[k] * n for k in keys]
    counts = [math.floor(r + 1e-9) for r in raw]
    short = n - sum(counts)
    order = sorted(range(len(keys)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: max(short, 0)]:
        counts[i] += 1
    return dict(zip(keys, counts, strict=True))


# --- argument checks ---------------------------------------------------------------------------


def _check_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(sizes, Mapping):
        raise ConfigError(f"splits#sizes: expected a mapping of {list(SPLIT_NAMES)} to sizes, got {sizes!r}.")
    missing = [s for s in SPLIT_NAMES if s not in sizes]
    unknown = [s for s in sizes if s not in SPLIT_NAMES]
    if missing or unknown:
        raise ConfigError(
            f"splits#sizes: needs exactly the splits {list(SPLIT_NAMES)}; missing {missing}, unknown {unknown}."
        )
    out = {}
    for name in SPLIT_NAMES:
        value = sizes[name]
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()
        if not ok or value <= 0:
            raise ConfigError(f"splits#sizes#{name}: expected a positive integer, got {value!r}.")
        out[name] = int(value)
    return out


def _check_probability(name: str, value, open_interval: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        value = float(value)
        ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ConfigError(f"{name}: expected a number in {interval}, got {value!r}.")
    return value


def _check_rho(rho, factor_keys: list[str], binary: list[bool]) -> dict[str, float]:
    """rho per binary factor; categorical factors have none (they are spread evenly)."""
    binary_keys = [k for k, b in zip(factor_keys, binary, strict=True) if b]
    if isinstance(rho, Mapping):
        unknown = [k for k in rho if k not in factor_keys]
        missing = [k for k in binary_keys if k not in rho]
        if unknown or missing:
            raise ConfigError(
                f"splits#rho: needs a value for each binary factor {binary_keys}; missing {missing}, unknown {unknown}."
            )
        values = {k: _check_probability(f"splits#rho#{k}", v) for k, v in rho.items()}
        ignored = [k for k, b in zip(factor_keys, binary, strict=True) if not b and k in values]
        if ignored:
            logger.warning("splits#rho: factor(s) %s are categorical and spread evenly; their rho is ignored.", ignored)
    else:
        value = _check_probability("splits#rho", rho)
        values = dict.fromkeys(factor_keys, value)
    return {k: values[k] for k in binary_keys}


def _extract(items: Sequence[Mapping], factor_keys: list[str], target_key: str, group_key: str) -> _Cohort:
    """Arrays of labels, factor codes and patient indices; DataError names the first bad item."""
    n, k = len(items), len(factor_keys)
    labels = np.empty(n, dtype=np.int64)
    codes = np.empty((n, k), dtype=np.int64)
    group_index: dict = {}
    groups = np.empty(n, dtype=np.int64)
    for i, item in enumerate(items):
        labels[i] = _int_field(item, i, target_key)
        if labels[i] not in (0, 1):
            raise DataError(f"item {i} ({_name(item)}): {target_key!r} is {item[target_key]!r}; expected 0 or 1.")
        for j, key in enumerate(factor_keys):
            codes[i, j] = _int_field(item, i, key)
        if group_key not in item:
            raise DataError(f"item {i} ({_name(item)}) has no {group_key!r}; present keys: {sorted(item)}.")
        groups[i] = group_index.setdefault(item[group_key], len(group_index))
    values = [sorted(set(codes[:, j].tolist())) for j in range(k)]
    for key, vals in zip(factor_keys, values, strict=True):
        if len(vals) < 2:
            raise SplitError(
                f"factor {key!r} has a single value {vals} in the whole cohort ({n} items): it cannot be "
                "decorrelated from the target nor learned. Remove the factor or use a cohort where it varies."
            )
    binary = [vals == [0, 1] for vals in values]
    return _Cohort(labels, codes, groups, len(group_index), values, binary)


def _int_field(item: Mapping, i: int, key: str) -> int:
    if key not in item:
        raise DataError(f"item {i} ({_name(item)}) has no {key!r}; present keys: {sorted(item)}.")
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"item {i} ({_name(item)}): {key!r} is {value!r}; expected an integer class index.")
    return int(value)


def _name(item: Mapping) -> str:
    return f"image {item['image']!r}" if "image" in item else "no image"


# --- requested bucket counts ---------------------------------------------------------------------


def _wanted_rho(split: str, key: str, rhos: dict[str, float], train_rhos: dict[str, float]) -> float:
    """P(z == y) asked of ``split`` for binary factor ``key``."""
    if split in (TRAIN, VAL):
        return train_rhos[key]
    return rhos[key] if split in _AT_RHO else 1.0 - rhos[key] if split == TEST_INVERTED else 0.5


def _bucket_probabilities(split: str, prevalence: float, wanted: dict[str, float], cohort: _Cohort) -> dict:
    """p(y) * prod_k p_k(z_k | y) for every bucket (y, z_1, ..., z_K) of ``split``; ``wanted``: P(z_k == y)."""
    rho_iter = iter(list(wanted))  # binary factor keys, in factor order
    p_y1 = 0.5 if split == TEST_BALANCED else prevalence
    factor_rho = []
    for is_binary in cohort.binary:
        if not is_binary:
            factor_rho.append(None)
            continue
        factor_rho.append(wanted[next(rho_iter)])
    probs = {}
    for bucket in itertools.product((0, 1), *cohort.values):
        y, zs = bucket[0], bucket[1:]
        p = p_y1 if y == 1 else 1.0 - p_y1
        for z, vals, r in zip(zs, cohort.values, factor_rho, strict=True):
            p *= 1.0 / len(vals) if r is None else (r if z == y else 1.0 - r)
        probs[bucket] = p
    return probs


# --- selection -----------------------------------------------------------------------------------


def _select(
    cohort: _Cohort, requests: dict[str, dict], seed: int, factor_keys: list[str], target_key: str, rhos: dict
) -> np.ndarray:
    """Split index per item (-1 unused). Scarce buckets are filled first; a patient belongs to one split."""
    rng = np.random.default_rng(seed)
    keys = np.concatenate([cohort.labels[:, None], cohort.codes], axis=1)
    supply: dict[tuple, np.ndarray] = {}
    for bucket in requests[TRAIN]:
        members = np.flatnonzero(np.all(keys == np.asarray(bucket), axis=1))
        supply[bucket] = rng.permutation(members)
    demand = {b: sum(requests[s][b] for s in SPLIT_NAMES) for b in supply}
    order = sorted(supply, key=lambda b: len(supply[b]) / demand[b] if demand[b] else math.inf)

    assignment = np.full(len(cohort.labels), -1, dtype=np.int64)
    owner = np.full(cohort.n_groups, -1, dtype=np.int64)
    for bucket in order:
        for split in _FILL_ORDER:
            need = requests[split][bucket]
            if need == 0:
                continue
            s = SPLIT_NAMES.index(split)
            cand = supply[bucket]
            cand_owner = owner[cohort.groups[cand]]
            free = assignment[cand] == -1
            held = cand[free & (cand_owner == s)]
            open_ = cand[free & (cand_owner == -1)]
            if len(held) + len(open_) < need:
                raise SplitError(
                    _shortage_message(
                        split, bucket, need, cand, assignment, cand_owner, requests, factor_keys, target_key, rhos
                    )
                )
            take = _patients_first(open_, held, cohort.groups)[:need]
            assignment[take] = s
            owner[cohort.groups[take]] = s
    return assignment


def _patients_first(open_: np.ndarray, held: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Candidates in the order a split takes them: one image of each new patient (in the seeded order), then images
    of patients the split already holds, then the further images of the new patients."""
    _, first = np.unique(groups[open_], return_index=True)
    is_first = np.zeros(len(open_), dtype=bool)
    is_first[first] = True
    return np.concatenate([open_[is_first], held, open_[~is_first]])


def _shortage_message(
    split: str,
    bucket: tuple,
    need: int,
    cand: np.ndarray,
    assignment: np.ndarray,
    cand_owner: np.ndarray,
    requests: dict,
    factor_keys: list[str],
    target_key: str,
    rhos: dict,
) -> str:
    s = SPLIT_NAMES.index(split)
    taken = assignment[cand] != -1
    held_elsewhere = ~taken & (cand_owner != -1) & (cand_owner != s)
    available = len(cand) - int(taken.sum()) - int(held_elsewhere.sum())
    asked = ", ".join(f"{name} {requests[name][bucket]}" for name in SPLIT_NAMES if requests[name][bucket])
    rho_text = ", ".join(f"{k}={v:g}" for k, v in rhos.items()) or "none (no binary factor)"
    how = {"test_inverted": " (this split uses 1 - rho)", "test_balanced": " (this split is balanced: 0.5)"}
    return (
        f"split {split!r}: bucket ({_bucket_name(bucket, factor_keys, target_key)}) needs {need} images at requested "
        f"rho {rho_text}{how.get(split, '')}, but only {available} are available: the cohort has {len(cand)} images "
        f"in this bucket, {int(taken.sum())} already drawn for other splits and {int(held_elsewhere.sum())} held by "
        f"patients of other splits. All splits together ask this bucket for: {asked}. "
        "Lower rho or the split sizes, or add data to this bucket."
    )


def _bucket_name(bucket: tuple, factor_keys: list[str], target_key: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip([target_key, *factor_keys], bucket, strict=True))


def _check_factor_spread(cohort: _Cohort, assignment: np.ndarray, factor_keys: list[str]) -> None:
    for s, name in enumerate(SPLIT_NAMES):
        rows = cohort.codes[assignment == s]
        for j, key in enumerate(factor_keys):
            present = sorted(set(rows[:, j].tolist()))
            if len(present) < 2:
                raise SplitError(
                    f"factor {key!r} has a single value {present} in split {name!r} ({len(rows)} items): its "
                    "correlation with the target cannot be measured there. Increase the split size or lower rho."
                )


# --- report --------------------------------------------------------------------------------------


def _report(
    cohort: _Cohort,
    assignment: np.ndarray,
    requests: dict,
    factor_keys: list[str],
    target_key: str,
    rhos: dict,
    wanted: dict,
    prevalence: float,
    sizes: dict,
    seed: int,
) -> dict:
    kinds = ["binary" if b else "categorical" for b in cohort.binary]
    report = {
        "seed": int(seed),
        "target_key": target_key,
        "prevalence": prevalence,
        "rho": dict(rhos),
        "sizes": dict(sizes),
        "factors": {
            k: {"kind": kind, "values": v} for k, kind, v in zip(factor_keys, kinds, cohort.values, strict=True)
        },
        "cohort": {
            "n": int(len(assignment)),
            "n_patients": int(cohort.n_groups),
            "unused": int((assignment < 0).sum()),
        },
        "splits": {},
    }
    for s, name in enumerate(SPLIT_NAMES):
        mask = assignment == s
        report["splits"][name] = _split_report(cohort, mask, requests[name], factor_keys, target_key, wanted[name])
    return report


def _split_report(cohort, mask, request, factor_keys, target_key, wanted_rho) -> dict:
    y = cohort.labels[mask]
    z = cohort.codes[mask]
    factors = {}
    for j, key in enumerate(factor_keys):
        if cohort.binary[j]:
            factors[key] = {"requested_rho": wanted_rho[key], "rho": _mean(z[:, j] == y), "phi": phi(y, z[:, j])}
        else:
            factors[key] = {"requested_rho": None, "rho": None, "phi": None, "cramers_v": cramers_v(y, z[:, j])}
    keys = np.concatenate([y[:, None], z], axis=1)
    buckets = []
    for bucket, wanted in request.items():
        achieved = int(np.all(keys == np.asarray(bucket), axis=1).sum())
        buckets.append(
            {"bucket": _bucket_name(bucket, factor_keys, target_key), "requested": wanted, "achieved": achieved}
        )
    return {
        "n": int(mask.sum()),
        "n_patients": int(len(np.unique(cohort.groups[mask]))),
        "prevalence": _mean(y == 1),
        "factors": factors,
        "buckets": buckets,
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def format_report(report: Mapping) -> str:
    """A short table of the splits (size, patients, prevalence, per-factor rho/phi) and bucket counts for logs."""
    factor_keys = list(report.get("factors", {}))
    splits = report["splits"]
    widths = {k: max(20, len(k) + 10) for k in factor_keys}
    head = f"{'split':<14}{'n':>7}{'patients':>10}{'prev':>7}" + "".join(
        f"{k + ' rho/phi':>{widths[k]}}" for k in factor_keys
    )
    lines = [head]
    for name, rep in splits.items():
        cells = "".join(f"{_factor_cell(rep['factors'][k]):>{widths[k]}}" for k in factor_keys)
        lines.append(f"{name:<14}{rep['n']:>7}{rep['n_patients']:>10}{_fmt(rep['prevalence']):>7}{cells}")
    names = list(splits)
    if not names:
        return head
    lines.append("")
    lines.append(f"{'bucket':<32}" + "".join(f"{n:>15}" for n in names))
    for i, entry in enumerate(next(iter(splits.values()))["buckets"]):
        row = [splits[n]["buckets"][i] for n in names]
        cells = "".join(f"{_count_cell(b):>15}" for b in row)
        lines.append(f"{entry['bucket']:<32}{cells}")
    return "\n".join(lines)


def _factor_cell(rep: Mapping) -> str:
    if rep.get("rho") is None:
        v = rep.get("cramers_v")
        return f"V={_fmt(v)}" if v is not None else "-"
    phi = rep.get("phi")
    return f"{_fmt(rep['rho'])}/{'-' if phi is None else f'{phi:+.2f}'}"


def _count_cell(b: Mapping) -> str:
    return f"{b['achieved']}" if b["achieved"] == b["requested"] else f"{b['achieved']}/{b['requested']}!"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
