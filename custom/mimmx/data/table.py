"""Reading cohort tables: helpers shared by the format readers (CheXpert, cohort CSV).

Every error names the file and, where there is one, the line; nothing here knows a particular format.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mimmx.errors import DataError
from mimmx.factors import FactorSpec

__all__ = ["read_table", "column_index", "cell_getter", "encode_factors", "check_images", "reader_report"]

MAX_NAMED = 5  # missing files / unmapped values named in one message
MAX_VALUES = 10  # distinct unmapped values kept per factor in the report


def read_table(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) of each non-empty row; one DataError for any unreadable file."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except FileNotFoundError as e:
        raise DataError(f"{csv_path}: cohort table not found.") from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot read the cohort table ({e}).") from e
    if not header or not any(c.strip() for c in header):
        raise DataError(f"{csv_path}: the cohort table is empty (no header row).")
    header = [c.strip() for c in header]
    duplicates = sorted(c for c, n in Counter(header).items() if n > 1)
    if duplicates:
        raise DataError(f"{csv_path}: column(s) {duplicates} appear more than once in the header.")
    return header, rows


def column_index(csv_path: Path, header: list[str], required: list[str]) -> dict[str, int]:
    missing = [c for c in dict.fromkeys(required) if c not in header]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; the file has columns {header}.")
    return {c: header.index(c) for c in dict.fromkeys(required)}


def cell_getter(csv_path: Path, line: int, row: list[str], col: dict[str, int]):
    def cell(name: str) -> str:
        i = col[name]
        if i >= len(row):
            raise DataError(
                f"{csv_path}, line {line}: the row has {len(row)} cells, so column {name!r} (cell {i + 1}) is absent."
            )
        return row[i].strip()

    return cell


def encode_factors(
    item: dict, specs: Sequence[FactorSpec], cell, dropped: Counter, unmapped: dict[str, Counter]
) -> bool:
    """Add each factor's class index to ``item``; False (and a counted drop) when one has none."""
    for spec in specs:
        raw = cell(spec.column)
        code = spec.encode(raw)
        if code is None:
            dropped[f"factor:{spec.key}"] += 1
            unmapped[spec.key][raw] += 1
            return False
        item[spec.key] = code
    return True


def check_images(csv_path: Path, root: Path, items: list[dict], lines: list[int], column: str) -> None:
    """Name up to five missing images (with their CSV lines) in one error rather than stopping at the first.

    An image is a file, or a folder holding one DICOM series.
    """
    missing = [
        (line, item["image"]) for item, line in zip(items, lines, strict=True) if not (root / item["image"]).exists()
    ]
    if not missing:
        return
    named = "; ".join(f"line {line}: {path}" for line, path in missing[:MAX_NAMED])
    more = f" (and {len(missing) - MAX_NAMED} more)" if len(missing) > MAX_NAMED else ""
    raise DataError(
        f"{csv_path}: {len(missing)} image(s) not found under image root {root}: {named}{more}. "
        f"Set cohort image_root to the folder the {column} cells are relative to, or fix the table."
    )


def reader_report(
    csv_path: Path,
    root: Path,
    rows_read: int,
    items: list[dict],
    dropped: Counter,
    unmapped: dict[str, Counter],
    drop_keys: Sequence[str],
) -> dict:
    """What a reader kept and dropped (and why), for the data list's metadata and the training log."""
    labels = Counter(item["label"] for item in items)
    return {
        "csv": str(csv_path.resolve()),
        "rows_read": rows_read,
        "rows_kept": len(items),
        "dropped": {k: dropped.get(k, 0) for k in drop_keys},
        "unmapped_values": {
            k: {("<blank>" if v == "" else v): n for v, n in c.most_common(MAX_VALUES)} for k, c in unmapped.items()
        },
        "label_counts": {"0": labels.get(0, 0), "1": labels.get(1, 0)},
        "n_patients": len({item["patient_id"] for item in items}),
        "image_root": str(root),
    }
