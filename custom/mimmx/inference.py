"""Inputs for the inference configs: a glob pattern or a list of files -> MONAI data items."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from mimmx.errors import DataError

__all__ = ["image_items"]


def image_items(source: str | Sequence[str]) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every file a glob pattern (recursive ``**``) or an explicit list names.

    A folder counts as one image: a DICOM series (checked when it is loaded).
    """
    if isinstance(source, str):
        paths = sorted(glob.glob(source, recursive=True))
        if not paths:
            raise DataError(f"input_glob {source!r} matches no image file; give a pattern such as '/data/**/*.png'.")
    else:
        paths = [str(p) for p in source]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise DataError(f"input image(s) not found: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if not paths:
            raise DataError("the list of input images is empty.")
    return [{"image": p} for p in paths]
