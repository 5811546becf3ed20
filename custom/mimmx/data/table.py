"""Reading cohort tables: helpers shared by the format readers (CheXpert, cohort CSV).

Every error names the file and, where there is one, the line; nothing here knows a particular format.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from mimmx.errors import ConfigError, DataError
from mimmx.factors import FactorSpec, normalise_value

__all__ = [
    "read_table",
    "column_index",
    "cell_getter",
    "encode_factors",
    "check_images",
    "reader_report",
    "check_drops",
    "MAX_UNRECOGNISED",
]

logger = logging.getLogger("mimmx.data")

MAX_NAMED = 5  # missing files / unmapped values named in one message
MAX_VALUES = 10  # distinct unmapped values kept per factor in the report
# rows whose value in one column no class lists, as a fraction of the rows read, above which the table is refused:
# a few odd cells ("Unknown" sex) are dropped and counted; many mean the declaration does not fit the table ("3T"
# where 3.0 was declared) and the remaining rows would be a biased subset
MAX_UNRECOGNISED = 0.02
TOLERATED_UNRECOGNISED = 10  # so many rows per column are always only dropped and counted (tiny tables)


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
    if not rows:
        raise DataError(f"{csv_path}: the cohort table has a header but no data rows; expected one row per image.")
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
    """Add each factor's class index to ``item``; False (and a counted drop) when one has none.

    A numeric value outside the factor's ``valid_range`` (an age of 0 or 150) is dropped as "implausible:<key>"
    before it could land in a bin.
    """
    for spec in specs:
        raw = cell(spec.column)
        if spec.valid_range is not None:
            value = normalise_value(raw)
            lo, hi = spec.valid_range
            if isinstance(value, float) and not lo <= value <= hi:
                dropped[f"implausible:{spec.key}"] += 1
                return False
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


def check_drops(
    csv_path: Path,
    report: Mapping,
    unmapped: Mapping[str, Counter],
    value_maps: Mapping[str, tuple[str, object]],
    max_unrecognised: float = MAX_UNRECOGNISED,
) -> None:
    """Log every drop of a reader in one warning, counted by reason; refuse the table when too many rows of one
    column hold values the declaration does not know.

    ``unmapped`` holds, per report key, the count of every raw value that matched no class; ``value_maps`` maps a
    report key (factor key, or "target") to (column, ValueMap). A value is *unrecognised*
    when no class lists it, or, for binned columns, when it is not a number (a number between bins is an expected
    drop). Blank cells count as unrecognised unless a class lists null. Up to ``TOLERATED_UNRECOGNISED`` rows
    per column are always tolerated.
    """
    if not 0.0 <= float(max_unrecognised) <= 1.0:
        raise ConfigError(f"cohort#max_unrecognised: expected a fraction in [0, 1], got {max_unrecognised!r}.")
    rows = max(int(report["rows_read"]), 1)
    dropped = {k: n for k, n in report["dropped"].items() if n}
    if dropped:
        parts = ", ".join(f"{k} {n}" for k, n in dropped.items())
        logger.warning(
            "%s: kept %d of %d rows; dropped %d: %s (see the data list's metadata.reader_report)",
            csv_path,
            report["rows_kept"],
            report["rows_read"],
            sum(dropped.values()),
            parts,
        )
    for key, counts in unmapped.items():
        column, values = value_maps[key]
        bad = {
            v: n for v, n in counts.items() if not (values.bins is not None and isinstance(normalise_value(v), float))
        }
        total = sum(bad.values())
        if total > TOLERATED_UNRECOGNISED and total / rows > max_unrecognised:
            shown = ", ".join(
                f"{('<blank>' if v == '' else v)!r} ({n})" for v, n in Counter(bad).most_common(MAX_NAMED)
            )
            expected = values.classes if values.classes is not None else f"numbers in the bins {values.bins}"
            raise DataError(
                f"{csv_path}: column {column!r} has {total} of {report['rows_read']} rows ({100 * total / rows:.1f}%) "
                f"with values no class of {key!r} lists: {shown}. Expected {expected}. Fix the table or declare these "
                f"values in the config (more than {100 * max_unrecognised:g}% of the rows would be dropped silently "
                "otherwise; cohort#max_unrecognised sets this limit)."
            )
