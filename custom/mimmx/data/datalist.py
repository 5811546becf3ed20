"""The MONAI data-list JSON: ``{"metadata": {...}, "train": [...], "val": [...], ...}``.

Items keep their "image" relative to the cohort's image root; ``metadata.image_root`` records
that root, and :func:`datalist_base_dir` returns it for ``load_decathlon_datalist(..., base_dir=)``.
The file is written to a temporary name in the same folder and renamed, so a reader never sees
a half-written data list, and a failed build leaves the previous one untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mimmx.data.splits import SPLIT_NAMES
from mimmx.errors import DataError
from mimmx.io_utils import atomic_write_json

__all__ = ["write_datalist", "read_datalist", "datalist_base_dir"]


def write_datalist(path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping]], metadata: Mapping) -> None:
    """Write metadata and one list per split as JSON, atomically (:mod:`mimmx.io_utils`), readable by all."""
    path = Path(path)
    if "metadata" in splits:
        raise DataError(f"{path}: 'metadata' cannot be a split name.")
    content = {"metadata": dict(metadata), **{name: [dict(item) for item in items] for name, items in splits.items()}}
    atomic_write_json(path, content, indent=1, allow_nan=False)


def read_datalist(path: str | os.PathLike, splits: Sequence[str] = SPLIT_NAMES) -> dict:
    """The whole data list; DataError naming the file when it is missing, not JSON, or lacks a split."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{path}: data list not found; run the data preparation step first.") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON data list ({e}).") from e
    if not isinstance(content, dict):
        raise DataError(f"{path}: a data list must be a JSON object, got {type(content).__name__}.")
    missing = [s for s in splits if s not in content]
    if missing:
        raise DataError(f"{path}: missing split(s) {missing}; the file has keys {sorted(content)}.")
    for name in splits:
        if not isinstance(content[name], list) or not all(isinstance(i, dict) and "image" in i for i in content[name]):
            raise DataError(f"{path}: split {name!r} must be a list of items with an 'image' key.")
    return content


def datalist_base_dir(datalist_file: str | os.PathLike) -> str:
    """Folder the items' image paths are relative to, for ``load_decathlon_datalist(..., base_dir=...)``.

    Uses ``metadata.image_root`` (absolute); if that folder no longer exists (the data set was
    moved together with its data list) falls back to ``metadata.image_root_relative``, which is
    relative to the data list's own folder.
    """
    path = Path(datalist_file)
    meta = read_datalist(path, splits=()).get("metadata")
    if not isinstance(meta, dict) or not meta.get("image_root"):
        raise DataError(f"{path}: metadata.image_root is missing; rebuild the data list with prepare_datalist.")
    root = Path(meta["image_root"])
    if not root.is_dir() and meta.get("image_root_relative") is not None:
        moved = (path.resolve().parent / meta["image_root_relative"]).resolve()
        if moved.is_dir():
            return str(moved)
    return str(root)
