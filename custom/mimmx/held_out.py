"""Training images held out from the task loss, so that a penalty can see what the fitted images hide.

Where the training data tie a factor to the target, the causal head fits the training images, the rare groups
(weighed up to ~100x by the group-balanced CE) included. On those fitted images the decision no longer moves with
the factor inside a target class, so a dependence penalty estimated on them reads about zero, while on any image the
head has not fitted the same model's decision still moves with the factor (measured: docs/results.md). Holding a
fraction of the training split out of the task loss gives the penalty images whose decisions are not memorised; their
target labels are used only as the condition of the conditional MI, never fitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from mimmx.errors import ConfigError

__all__ = ["HELD_OUT_KEY", "mark_held_out"]

HELD_OUT_KEY = "held_out"


def _uniform(identity: str, seed: int) -> float:
    """A number in [0, 1) fixed by the image and the seed (not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _identity(image: Any, base_dir: str | None) -> str:
    """The image's path below ``base_dir`` (the same wherever the data live); CheXpert-like layouts repeat the file
    name in every study folder, so the name alone does not identify an image."""
    path = PurePath(str(image))
    if base_dir:
        try:
            return path.relative_to(base_dir).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def mark_held_out(
    items: Sequence[Mapping[str, Any]],
    fraction: float,
    seed: int = 0,
    base_dir: str | None = None,
    key: str = HELD_OUT_KEY,
) -> list[dict[str, Any]]:
    """The training items, each with ``key`` = 1 for a ``fraction`` of them (chosen by the image's path below
    ``base_dir`` and the seed, so the same images are held out wherever the data live and after a resume) and 0 for
    the rest; unchanged when ``fraction`` is 0."""
    if not 0.0 <= float(fraction) < 1.0:
        raise ConfigError(f"held_out_fraction must be in [0, 1), got {fraction}.")
    if float(fraction) == 0.0:
        return [dict(item) for item in items]
    out = []
    for index, item in enumerate(items):
        identity = _identity(item.get("image", index), base_dir)
        out.append({**item, key: int(_uniform(identity, seed) < fraction)})
    return out
