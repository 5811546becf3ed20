"""Names that one part of the package writes and another reads: the causal head, the splits, the partition-pair
separator and the prefixes of the per-step statistics.

The split builder writes the split names into the data list and the evaluation and report read them back; the loss
terms name their statistics (``ce_causal``, ``mi_causal|sex``, ...) and the logging handler, the training history
and the report pick them out again by prefix. Each name lives here once so a reader cannot drift from its writer.
They are on-disk keys (data lists, ``history.json``, ``metrics.json``): renaming one breaks files written before.
"""

from __future__ import annotations

__all__ = [
    "CAUSAL",
    "TRAIN",
    "VAL",
    "TEST_ID",
    "TEST_INVERTED",
    "TEST_BALANCED",
    "SPLIT_NAMES",
    "TEST_SPLITS",
    "PAIR_SEP",
    "CE_PREFIX",
    "MI_PREFIX",
    "WEIGHT_PREFIX",
    "ADV_PREFIX",
    "DRO_PREFIX",
    "MI_TOTAL",
    "MI_SCALE",
    "CRITIC_LOSS",
    "STAT_PREFIXES",
    "pair_name",
    "split_pair",
    "is_pair_mi",
]

CAUSAL = "causal"  # the target's partition, head and label name

TRAIN = "train"
VAL = "val"
TEST_ID = "test_id"  # the training correlation
TEST_INVERTED = "test_inverted"  # the factor-target association reversed
TEST_BALANCED = "test_balanced"  # factors independent of the target
SPLIT_NAMES = (TRAIN, VAL, TEST_ID, TEST_INVERTED, TEST_BALANCED)
TEST_SPLITS = (TEST_ID, TEST_INVERTED, TEST_BALANCED)

PAIR_SEP = "|"  # "causal|sex": a pair of partitions; partition names may not contain it

CE_PREFIX = "ce_"  # cross-entropy of one head: ce_<head>
MI_PREFIX = "mi_"  # MI estimate of one pair: mi_<a>|<b>
WEIGHT_PREFIX = "weight_"  # weight of one pair in the MI term: weight_<a>|<b>
ADV_PREFIX = "adv_"  # adversary loss per factor: adv_<factor>
DRO_PREFIX = "dro_"  # GroupDRO-weighted loss: dro_causal
MI_TOTAL = "mi_total"
MI_SCALE = "mi_scale"
CRITIC_LOSS = "critic_loss"
STAT_PREFIXES = (CE_PREFIX, MI_PREFIX, WEIGHT_PREFIX, CRITIC_LOSS, ADV_PREFIX, DRO_PREFIX)


def pair_name(a: str, b: str) -> str:
    """The key of a partition pair, ``"a|b"``."""
    return f"{a}{PAIR_SEP}{b}"


def split_pair(pair: str) -> tuple[str, str]:
    """The two partition names of a pair key; raises ValueError naming the key when it is not ``"a|b"``."""
    parts = pair.split(PAIR_SEP)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"partition pair {pair!r}: expected '<a>{PAIR_SEP}<b>'.")
    return parts[0], parts[1]


def is_pair_mi(key: str) -> bool:
    """Whether a statistic is the MI estimate of a partition pair (``mi_<a>|<b>``), not ``mi_total``/``mi_scale``."""
    return key.startswith(MI_PREFIX) and PAIR_SEP in key
