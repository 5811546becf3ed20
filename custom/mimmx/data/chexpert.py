"""Read a cohort table in CheXpert's own CSV format into data-list items.

The real CheXpert ``train.csv``/``valid.csv`` and the synthetic chest X-ray cohort share this
format, so both enter the pipeline through this one reader. Columns are looked up by name,
never by position, because CheXpert releases and derived tables reorder and add columns.

Each kept row becomes ``{"image": <Path cell>, "label": 0|1, "patient_id": "patient00001",
<factor key>: <class index>, ...}``; image paths stay relative to ``image_root`` (returned in
the report) so the data list can move with the data set.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mimmx.config import as_bool
from mimmx.data.table import (
    MAX_UNRECOGNISED,
    cell_getter,
    check_drops,
    check_images,
    column_index,
    encode_factors,
    read_table,
    reader_report,
)
from mimmx.errors import ConfigError, DataError
from mimmx.factors import FactorSpec, normalise_value, parse_factors

__all__ = ["read_chexpert", "UNCERTAIN_POLICIES", "BLANK_POLICIES", "default_image_root"]

UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")
BLANK_POLICIES = ("zeros", "ignore")

PATH_COLUMN = "Path"
VIEW_COLUMN = "Frontal/Lateral"
PROJECTION_COLUMN = "AP/PA"

_PATIENT_RE = re.compile(r"patient\d+")


def read_chexpert(
    csv_path: str | os.PathLike,
    target: str = "Pleural Effusion",
    factors: Sequence[FactorSpec] | None = None,
    uncertain: str = "ignore",
    blank: str = "zeros",
    frontal_only: bool = True,
    views: Sequence[str] | str | None = ("AP", "PA"),
    image_root: str | os.PathLike | None = None,
    check_files: bool = True,
    max_unrecognised: float = MAX_UNRECOGNISED,
) -> tuple[list[dict], dict]:
    """Items and a report (rows read/kept, drops per reason, label counts, absolute image_root).

    ``uncertain`` maps a -1.0 target to a dropped row ("ignore"), 0 ("zeros") or 1 ("ones");
    ``blank`` maps a blank target to 0 ("zeros", CheXpert's convention) or a dropped row. Each
    dropped row is counted once, under the first reason that applies, in the order lateral,
    view, target, factors (in config order), so the drop counts add up to rows_read - rows_kept.
    All drops are logged in one warning; more than ``max_unrecognised`` of the rows with a value
    a factor does not declare is an error naming the column and the values
    (:func:`mimmx.data.table.check_drops`).
    """
    csv_path = Path(csv_path)
    frontal_only = as_bool(frontal_only, "cohort#frontal_only")
    check_files = as_bool(check_files, "cohort#check_files")
    _check_choice("uncertain", uncertain, UNCERTAIN_POLICIES)
    _check_choice("blank", blank, BLANK_POLICIES)
    specs = parse_factors(factors) if factors else []
    allowed_views = _normalise_views(views)

    header, rows = read_table(csv_path)
    required = [PATH_COLUMN, target]
    if frontal_only:
        required.append(VIEW_COLUMN)
    if allowed_views is not None:
        required.append(PROJECTION_COLUMN)
    required += [s.column for s in specs]
    col = column_index(csv_path, header, required)

    root = Path(image_root).resolve() if image_root is not None else None
    items: list[dict] = []
    lines: list[int] = []
    dropped: Counter = Counter()
    unmapped: dict[str, Counter] = {s.key: Counter() for s in specs}
    for line, row in rows:
        cell = cell_getter(csv_path, line, row, col)
        path = cell(PATH_COLUMN)
        if not path:
            raise DataError(f"{csv_path}, line {line}: the {PATH_COLUMN!r} cell is blank.")
        if root is None:
            root = default_image_root(csv_path, path)
        if frontal_only and cell(VIEW_COLUMN).lower() != "frontal":
            dropped["lateral"] += 1
            continue
        if allowed_views is not None and cell(PROJECTION_COLUMN).upper() not in allowed_views:
            dropped["view"] += 1
            continue
        label, reason = _encode_target(csv_path, line, target, cell(target), uncertain, blank)
        if label is None:
            dropped[reason] += 1
            continue
        item = {"image": path, "label": label, "patient_id": _patient_id(csv_path, line, path)}
        if not encode_factors(item, specs, cell, dropped, unmapped):
            continue
        items.append(item)
        lines.append(line)

    if root is None:
        root = csv_path.resolve().parent
    if check_files:
        check_images(csv_path, root, items, lines, column=PATH_COLUMN)
    drop_keys = ["lateral", "view", "uncertain_target", "blank_target"]
    drop_keys += [
        f"{reason}:{s.key}"
        for s in specs
        for reason in ("implausible", "factor")
        if s.valid_range or reason == "factor"
    ]
    report = reader_report(csv_path, root, len(rows), items, dropped, unmapped, drop_keys)
    check_drops(csv_path, report, unmapped, {s.key: (s.column, s.values) for s in specs}, max_unrecognised)
    return items, report


def default_image_root(csv_path: str | os.PathLike, first_path: str) -> Path:
    """Folder the Path cells are relative to, guessed from the first Path cell.

    CheXpert's paths start with the release folder (``CheXpert-v1.0-small/train/...``) that also
    holds the CSV, so when the first component equals the CSV's folder name the root is the folder
    above it; otherwise paths are taken as relative to the CSV's own folder.
    """
    folder = Path(csv_path).resolve().parent
    first = _components(first_path)[0] if first_path else ""
    return folder.parent if first == folder.name else folder


def _check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {list(allowed)}, got {value!r}.")


def _normalise_views(views: Sequence[str] | str | None) -> frozenset[str] | None:
    if views is None:
        return None
    if isinstance(views, str):
        views = [views]
    allowed = frozenset(str(v).strip().upper() for v in views)
    if not allowed:
        raise ConfigError("views: an empty list keeps no image; give the AP/PA values to keep, or null for all.")
    return allowed


def _encode_target(
    csv_path: Path, line: int, target: str, raw: str, uncertain: str, blank: str
) -> tuple[int | None, str]:
    """(label, "") or (None, drop reason) for a CheXpert observation cell."""
    value = normalise_value(raw)
    if value is None:
        return (0, "") if blank == "zeros" else (None, "blank_target")
    if value == -1.0:
        if uncertain == "ignore":
            return None, "uncertain_target"
        return (1 if uncertain == "ones" else 0), ""
    if value in (0.0, 1.0):
        return int(value), ""
    raise DataError(f"{csv_path}, line {line}: target {target!r} is {raw!r}; expected 1.0, 0.0, -1.0 or blank.")


def _components(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]


def _patient_id(csv_path: Path, line: int, path: str) -> str:
    for part in _components(path):
        if _PATIENT_RE.fullmatch(part):
            return part
    raise DataError(
        f"{csv_path}, line {line}: no patient id in path {path!r}; expected a folder named like 'patient00001'."
    )
