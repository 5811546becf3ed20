"""Reading the report's input files (metrics and history JSON, the test features ``.npz``), failing by file name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from mimmx.errors import DataError

__all__ = ["read_json", "read_history", "read_features"]


def read_json(path: str, what: str) -> Any:
    """The parsed JSON of ``path``; ``what`` names the file in the error."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{what} file not found: {path}") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what} JSON: {e}") from e


def read_history(path: str) -> list[dict]:
    data = read_json(path, "history")
    if isinstance(data, Mapping):
        data = data.get("history", data.get("epochs"))
    if not isinstance(data, list) or not all(isinstance(row, Mapping) for row in data):
        raise DataError(f"{path}: history must be a list of per-epoch objects")
    return [dict(row) for row in data]


def read_features(path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]]:
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
