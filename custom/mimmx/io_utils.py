"""Atomic writes, the package's one writer: a reader never sees a half-written file, and a crash leaves the old one.

Every file mimmx writes (data lists, checkpoints, model weights, histories, predictions, metrics, reports, figures,
synthetic tables) goes through :func:`atomic_path`: the content is written to a temporary name in the same folder,
flushed to disk and renamed over the target, so a process killed at any moment (SIGKILL included) leaves either the
previous file or the new one, never a torn one. Files get the umask's permissions (``mkstemp`` would give 0600).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_json", "atomic_write_csv", "atomic_write_text", "sha256_file"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary name next to ``path``; on success sync it and rename it over ``path``, on error
    remove it. The caller creates the temporary file (``open(tmp, "x")``, ``torch.save(obj, tmp)``, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """Flush the file's data to disk before the rename makes it visible (a power cut must not leave zeros)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2, allow_nan: bool = True) -> None:
    """Write JSON atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n")


def atomic_write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV atomically."""
    with atomic_path(path) as tmp, open(tmp, "x", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
