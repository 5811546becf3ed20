"""Batch inference over what a hospital really sends: every file screened, bad ones reported, never scored.

- :func:`image_items`: a glob pattern or a list of files -> MONAI data items;
- :class:`ScreenedDataset`: runs the bundle's preprocessing on every item once, up front; an item that fails (a CT
  in a chest X-ray folder, a truncated file, a 4D volume) is listed with its reason in ``errors.csv`` and left out,
  so one bad file never costs the predictions for the good ones. When no item can be scored it raises, and the run
  exits non-zero;
- :func:`clear_outputs`: removes the previous run's outputs before a run starts, so a run that fails leaves no file
  that looks like its result.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monai.data import Dataset
from monai.transforms import apply_transform

from mimmx.errors import DataError, MimmxError
from mimmx.io_utils import atomic_write_csv

__all__ = ["image_items", "ScreenedDataset", "clear_outputs", "error_reason"]

logger = logging.getLogger("mimmx")


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


def error_reason(error: BaseException) -> str:
    """The message a person needs: the named mimmx error in the chain, else the innermost exception."""
    seen, e = [], error
    while e is not None and e not in seen:
        seen.append(e)
        if isinstance(e, MimmxError):
            return " ".join(str(e).split())
        e = e.__cause__ or e.__context__
    inner = seen[-1]
    return " ".join(f"{type(inner).__name__}: {inner}".split())


class ScreenedDataset(Dataset):
    """A dataset of the items ``transform`` can prepare; the others go to ``errors_file`` with their reason.

    Every item is transformed once, when the dataset is built (the results are kept, as MONAI's CacheDataset
    does), so a failure is known before the first prediction.

    Args:
        data: items such as :func:`image_items` returns.
        transform: the bundle's deterministic preprocessing.
        errors_file: CSV (``image,reason``) of the items left out; written, atomically, even when empty.
        image_key: the key naming the file in an item.
    """

    def __init__(
        self, data: Sequence[dict], transform: Callable, errors_file: str | os.PathLike, image_key: str = "image"
    ) -> None:
        kept: list[Any] = []
        self.errors: list[tuple[str, str]] = []
        for item in data:
            try:
                kept.append(apply_transform(transform, item))
            except Exception as e:  # noqa: BLE001 - every failure is reported by name, none stops the batch
                self.errors.append((str(item.get(image_key, item)), error_reason(e)))
        self.errors_file = Path(errors_file)
        atomic_write_csv(self.errors_file, ["image", "reason"], self.errors)
        for path, reason in self.errors:
            logger.warning("not scored: %s", reason if path in reason else f"{path}: {reason}")
        if not kept:
            first = self.errors[0][1] if self.errors else "no input"
            raise DataError(
                f"none of the {len(data)} input(s) could be scored; each is listed with its reason in "
                f"{self.errors_file} (first: {first})"
            )
        logger.info(
            "%d of %d input(s) will be scored; %d left out (%s)",
            len(kept),
            len(data),
            len(self.errors),
            self.errors_file,
        )
        super().__init__(data=kept, transform=None)


def clear_outputs(paths: Sequence[str | os.PathLike]) -> None:
    """Remove earlier outputs before a run, naming each: a failed run must not leave them looking current."""
    for path in paths:
        path = Path(path)
        if path.is_file():
            path.unlink()
            logger.info("removed the previous %s (a new one is written when this run succeeds)", path)
