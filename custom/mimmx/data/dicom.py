"""Check that a folder holds exactly one complete DICOM series before it is loaded as a volume.

ITK (MONAI's reader for series folders) silently picks one series when a folder mixes several
and stacks whatever slices it finds, so a missing slice becomes a volume with a jump in it and a
wrong slice spacing. Reading the headers first (no pixels) lets a cohort fail by folder name, with
what is wrong, before a model trains on it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from mimmx.errors import DataError

__all__ = ["check_dicom_series"]

_MAX_NAMED = 5  # files, values or positions named in one message
_ORIENTATION_TOL = 1e-3  # direction cosines
_SPACING_RTOL = 0.05  # a slice gap may differ from the nominal spacing by this fraction


@dataclass
class _Slice:
    path: Path
    series_uid: str | None
    rows: int
    columns: int
    instance: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None


def check_dicom_series(folder: str | os.PathLike) -> list[Path]:
    """The folder's DICOM files sorted along the slice normal; DataError when they are not one complete series.

    Reads headers only. Checks: the folder has DICOM image files; one SeriesInstanceUID; equal
    Rows/Columns; one ImageOrientationPatient; slice positions along the normal evenly spaced without
    duplicates; InstanceNumbers without gaps. Files that are not DICOM (JSON sidecars, notes) are skipped.
    Without ImagePositionPatient the files are ordered by InstanceNumber, then by name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder holding one DICOM series, but it is not a folder.")
    slices, skipped = _read_headers(folder)
    if not slices:
        found = f"it holds {len(skipped)} other file(s), e.g. {_names(skipped)}" if skipped else "it is empty"
        raise DataError(f"{folder}: expected a DICOM series, but found no DICOM image file ({found}).")
    _check_one_series(folder, slices)
    _check_matrix_size(folder, slices)
    ordered = _order(folder, slices)
    _check_instance_numbers(folder, slices)
    return [s.path for s in ordered]


def _read_headers(folder: Path) -> tuple[list[_Slice], list[Path]]:
    """Header of each DICOM image file in the folder (not recursive); other files are returned as skipped."""
    slices, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            skipped.append(path)
            continue
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, structured report, ...: no image
            skipped.append(path)
            continue
        slices.append(
            _Slice(
                path=path,
                series_uid=str(ds.SeriesInstanceUID) if "SeriesInstanceUID" in ds else None,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                instance=_int_or_none(ds.get("InstanceNumber")),
                position=_vector(ds.get("ImagePositionPatient"), 3),
                orientation=_vector(ds.get("ImageOrientationPatient"), 6),
            )
        )
    return slices, skipped


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _vector(value, size: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (size,) and np.isfinite(out).all() else None


def _names(paths: Sequence[Path]) -> str:
    more = f" (and {len(paths) - _MAX_NAMED} more)" if len(paths) > _MAX_NAMED else ""
    return ", ".join(p.name for p in paths[:_MAX_NAMED]) + more


def _check_one_series(folder: Path, slices: list[_Slice]) -> None:
    counts = Counter(s.series_uid or "<no SeriesInstanceUID>" for s in slices)
    if len(counts) > 1:
        listed = "; ".join(f"{uid}: {n} file(s)" for uid, n in counts.most_common())
        raise DataError(
            f"{folder}: expected one DICOM series per folder, found {len(counts)} SeriesInstanceUIDs ({listed}). "
            "Move each series to its own folder and list the one to use in the cohort table."
        )


def _check_matrix_size(folder: Path, slices: list[_Slice]) -> None:
    counts = Counter((s.rows, s.columns) for s in slices)
    if len(counts) > 1:
        listed = "; ".join(
            f"{r}x{c}: {n} file(s), e.g. {next(s.path.name for s in slices if (s.rows, s.columns) == (r, c))}"
            for (r, c), n in counts.most_common()
        )
        raise DataError(f"{folder}: expected every slice to have the same Rows x Columns, found {listed}.")


def _order(folder: Path, slices: list[_Slice]) -> list[_Slice]:
    """Slices sorted along the normal (checked for even spacing), else by InstanceNumber, else by file name."""
    if len(slices) > 1 and all(s.position is not None and s.orientation is not None for s in slices):
        return _order_by_position(folder, slices)
    if all(s.instance is not None for s in slices):
        return sorted(slices, key=lambda s: (s.instance, s.path.name))
    return sorted(slices, key=lambda s: s.path.name)


def _order_by_position(folder: Path, slices: list[_Slice]) -> list[_Slice]:
    reference = slices[0].orientation
    odd = [s.path for s in slices if not np.allclose(s.orientation, reference, atol=_ORIENTATION_TOL)]
    if odd:
        raise DataError(
            f"{folder}: expected one ImageOrientationPatient for the whole series ({_fmt(reference)} in "
            f"{slices[0].path.name}), but {len(odd)} file(s) differ: {_names(odd)}."
        )
    normal = np.cross(reference[:3], reference[3:])
    ordered = sorted(slices, key=lambda s: (float(s.position @ normal), s.path.name))
    depth = np.array([float(s.position @ normal) for s in ordered])
    _check_spacing(folder, ordered, depth)
    return ordered


def _check_spacing(folder: Path, ordered: list[_Slice], depth: np.ndarray) -> None:
    """Duplicate positions, gaps (named missing positions) and uneven spacing along the normal."""
    gaps = np.diff(depth)
    same = np.flatnonzero(gaps < 1e-3)
    if same.size:
        pairs = [f"{ordered[i].path.name} and {ordered[i + 1].path.name} at {depth[i]:.2f} mm" for i in same]
        raise DataError(
            f"{folder}: expected one slice per position along the slice normal, but {len(same)} position(s) repeat "
            f"({'; '.join(pairs[:_MAX_NAMED])}). Is this a multi-echo or multi-phase series?"
        )
    step = float(gaps.min())
    multiple = gaps / step
    if np.any(np.abs(multiple - np.round(multiple)) > _SPACING_RTOL * np.round(multiple)):
        raise DataError(
            f"{folder}: expected evenly spaced slices along the normal, got gaps of {_fmt(gaps)} mm between "
            f"consecutive slices (files in order: {_names([s.path for s in ordered])})."
        )
    missing = [
        depth[i] + k * step for i in np.flatnonzero(np.round(multiple) > 1) for k in range(1, round(multiple[i]))
    ]
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} slice(s) missing: the slices are {round(step, 3):g} mm apart, but none is at "
            f"position(s) {_fmt(missing)} mm along the slice normal (series spans {_fmt([depth[0], depth[-1]])} mm)."
        )


def _check_instance_numbers(folder: Path, slices: list[_Slice]) -> None:
    numbers = sorted(s.instance for s in slices if s.instance is not None)
    if len(numbers) != len(slices) or len(numbers) < 2:
        return
    repeated = sorted(n for n, c in Counter(numbers).items() if c > 1)
    if repeated:
        raise DataError(f"{folder}: InstanceNumber(s) {repeated[:_MAX_NAMED]} appear in more than one file.")
    step = min(np.diff(numbers))
    missing = [n for a, b in zip(numbers, numbers[1:]) if b - a > step for n in range(a + step, b, step)]
    if missing:
        more = f" (and {len(missing) - _MAX_NAMED} more)" if len(missing) > _MAX_NAMED else ""
        raise DataError(
            f"{folder}: slice(s) missing: InstanceNumber(s) {missing[:_MAX_NAMED]}{more} absent from the series "
            f"{numbers[0]}..{numbers[-1]}."
        )


def _fmt(values) -> str:
    values = list(np.asarray(values, dtype=float).ravel())
    more = f", ... ({len(values)} in all)" if len(values) > 2 * _MAX_NAMED else ""
    return "[" + ", ".join(f"{round(v, 3):g}" for v in values[: 2 * _MAX_NAMED]) + more + "]"
