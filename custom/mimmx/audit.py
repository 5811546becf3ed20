"""Shortcut audit of a data list, before any training: how strongly each factor goes with the target, per split.

A factor strongly associated with the target in train but not in a test split is a shortcut a model can
take; an empty or tiny target x factor group makes per-group metrics meaningless. The audit names both.

    mimmx audit bundles/mimmx_cxr/data/datalist.json
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mimmx.data.association import cramers_v, phi
from mimmx.data.datalist import read_datalist
from mimmx.errors import DataError

__all__ = ["audit_splits", "audit_datalist", "format_audit", "log_audit"]

logger = logging.getLogger("mimmx.audit")


def audit_splits(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    factor_keys: Sequence[str],
    target_key: str = "label",
    min_group: int = 10,
) -> dict:
    """Per split and factor: association with the target (phi for binary, Cramer's V), group counts, warnings."""
    result: dict[str, Any] = {"min_group": min_group, "splits": {}, "warnings": []}
    for split, items in splits.items():
        if not items:
            result["warnings"].append(f"split {split!r} is empty")
            continue
        y = np.array([item[target_key] for item in items])
        per_factor = {}
        for key in factor_keys:
            missing = [i for i, item in enumerate(items) if key not in item]
            if missing:
                raise DataError(f"split {split!r}: item {missing[0]} has no factor key {key!r}.")
            z = np.array([item[key] for item in items])
            values = sorted(set(z.tolist()) | {0, 1})
            groups = {f"{target_key}={a},{key}={b}": int(np.sum((y == a) & (z == b))) for a in (0, 1) for b in values}
            binary = set(z.tolist()) <= {0, 1}
            per_factor[key] = {
                "phi": phi(y, z) if binary else None,
                "cramers_v": cramers_v(y, z),
                "agreement": float(np.mean(z == y)) if binary else None,
                "groups": groups,
            }
            for group, n in groups.items():
                if n == 0:
                    result["warnings"].append(f"split {split!r}: group {group} is empty")
                elif n < min_group:
                    result["warnings"].append(f"split {split!r}: group {group} has only {n} image(s) (< {min_group})")
        result["splits"][split] = {"n": len(items), "prevalence": float(np.mean(y == 1)), "factors": per_factor}
    return result


def audit_datalist(datalist_file: str, min_group: int = 10) -> dict:
    """Audit every split of a data list written by ``prepare_datalist`` (factor keys from its metadata)."""
    content = read_datalist(datalist_file, splits=())
    meta = content.get("metadata", {})
    keys = [f["key"] for f in meta.get("factors", [])]
    if not keys:
        raise DataError(f"{datalist_file}: metadata names no factors; was it written by prepare_datalist?")
    splits = {k: v for k, v in content.items() if k != "metadata" and isinstance(v, list)}
    return audit_splits(splits, keys, min_group=min_group)


def format_audit(audit: Mapping) -> str:
    """One line per split and factor, then the warnings."""

    def num(v: float | None) -> str:
        return "  n/a" if v is None else f"{v:+.2f}"

    lines = [f"{'split':<14}{'factor':<16}{'phi':>7}{'V':>7}  groups (label x factor)"]
    for split, rep in audit["splits"].items():
        for key, f in rep["factors"].items():
            groups = " ".join(f"{n}" for n in f["groups"].values())
            lines.append(f"{split:<14}{key:<16}{num(f['phi']):>7}{num(f['cramers_v']):>7}  {groups}")
    lines += [f"WARNING: {w}" for w in audit["warnings"]]
    return "\n".join(lines)


def log_audit(datalist_file: str, min_group: int = 10) -> dict:
    """Audit and log it; the bundles call this at the start of training so the shortcut is visible up front."""
    audit = audit_datalist(datalist_file, min_group=min_group)
    logger.info("shortcut audit of %s:\n%s", datalist_file, format_audit(audit))
    return audit
