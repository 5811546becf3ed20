"""Read a UK Biobank/NAKO-style cohort table (one row per scan) into data-list items.

The table has a subject id, an image path (a NIfTI/NRRD/MHA file or a folder holding one DICOM
series, relative to ``image_root``), the target column and covariate columns (sex, age, site or
scanner, field strength, ...). The target is mapped to 0/1 by the same value map as a factor
(``classes`` or ``bins`` from the bundle's ``target`` block), so any coding of the target works
without code: ``target: {column: atrophy, classes: [[0, "no"], [1, "yes"]]}``. Continuous
covariates such as age become factor classes through the factor's ``bins``; values in a gap
between bins drop the row, as in MIMM's age factor (<= 50 vs >= 60).

Each kept row becomes ``{"image": <image cell>, "label": 0|1, "patient_id": <subject id>,
<factor key>: <class index>, ...}``. Several rows may share a subject (repeat scans): the split
builder keeps a subject in one split. The synthetic MRI cohort is written in this format.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
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
from mimmx.factors import FactorSpec, ValueMap, parse_factors

__all__ = ["read_cohort"]

_TARGET_KEY = "target"  # drop reason and unmapped-values key of the target column


def read_cohort(
    csv_path: str | os.PathLike,
    target: str,
    factors: Sequence[FactorSpec] | None = None,
    classes: Sequence[Any] | None = None,
    bins: Sequence[Sequence[float | None]] | None = None,
    subject_column: str = "subject_id",
    image_column: str = "image",
    image_root: str | os.PathLike | None = None,
    check_files: bool = True,
    max_unrecognised: float = MAX_UNRECOGNISED,
) -> tuple[list[dict], dict]:
    """Items and a report (rows read/kept, drops per reason, unmapped values, label counts, absolute image_root).

    ``classes`` (raw values of class 0 and class 1, each a value or a list of values) or ``bins``
    (two intervals) map the target cell to the label; with neither, the target must be coded 0/1.
    A row is dropped, and counted once under the first reason that applies, when its target
    (reason "target") or a factor (reason "factor:<key>", in config order) matches no class;
    the drop counts add up to rows_read - rows_kept. A blank subject id or image cell is an error
    naming the line, as is an image that does not exist (file, or folder for a DICOM series).
    All drops are logged in one warning; more than ``max_unrecognised`` of the rows with a value
    the target or a factor does not declare ("3T" where 3.0 was declared) is an error naming the
    column and the values (:func:`mimmx.data.table.check_drops`).
    """
    csv_path = Path(csv_path)
    check_files = as_bool(check_files, "cohort#check_files")
    target_map = _target_map(classes, bins)
    specs = parse_factors(factors) if factors else []

    header, rows = read_table(csv_path)
    col = column_index(csv_path, header, [subject_column, image_column, target] + [s.column for s in specs])
    root = Path(image_root).resolve() if image_root is not None else csv_path.resolve().parent

    items: list[dict] = []
    lines: list[int] = []
    dropped: Counter = Counter()
    unmapped: dict[str, Counter] = {_TARGET_KEY: Counter(), **{s.key: Counter() for s in specs}}
    for line, row in rows:
        cell = cell_getter(csv_path, line, row, col)
        subject = _required_cell(csv_path, line, cell, subject_column)
        image = _required_cell(csv_path, line, cell, image_column)
        label = target_map.encode(cell(target))
        if label is None:
            dropped[_TARGET_KEY] += 1
            unmapped[_TARGET_KEY][cell(target)] += 1
            continue
        item = {"image": image, "label": label, "patient_id": subject}
        if not encode_factors(item, specs, cell, dropped, unmapped):
            continue
        items.append(item)
        lines.append(line)

    if check_files:
        check_images(csv_path, root, items, lines, column=image_column)
    drop_keys = [_TARGET_KEY] + [
        f"{reason}:{s.key}"
        for s in specs
        for reason in ("implausible", "factor")
        if s.valid_range or reason == "factor"
    ]
    report = reader_report(csv_path, root, len(rows), items, dropped, unmapped, drop_keys)
    value_maps = {_TARGET_KEY: (target, target_map), **{s.key: (s.column, s.values) for s in specs}}
    check_drops(csv_path, report, unmapped, value_maps, max_unrecognised)
    report["n_dicom_folders"] = sum(1 for item in items if (root / item["image"]).is_dir())
    return items, report


def _target_map(classes: Sequence[Any] | None, bins: Sequence[Sequence[float | None]] | None) -> ValueMap:
    """The target's value map; a target is binary because the split builder balances label 0 against 1."""
    if classes is None and bins is None:
        classes = [0, 1]
    values = ValueMap(classes=classes, bins=bins, config_id=_TARGET_KEY)
    if values.num_classes != 2:
        raise ConfigError(
            f"target: expected two classes (label 0 and 1), got {values.num_classes}: "
            f"{values.classes if values.classes is not None else values.bins}."
        )
    return values


def _required_cell(csv_path: Path, line: int, cell, column: str) -> str:
    value = cell(column)
    if not value:
        raise DataError(f"{csv_path}, line {line}: the {column!r} cell is blank; every scan needs one.")
    return value
