"""Cohort tables to MONAI data lists: readers, the bucket split builder and the one entry for bundle configs."""

from mimmx.data.chexpert import read_chexpert
from mimmx.data.cohort import read_cohort
from mimmx.data.datalist import datalist_base_dir, read_datalist, write_datalist
from mimmx.data.prepare import FORMATS, GENERATORS, prepare_datalist
from mimmx.data.splits import SPLIT_NAMES, SplitResult, build_splits, format_report

__all__ = [
    "FORMATS",
    "GENERATORS",
    "SPLIT_NAMES",
    "SplitResult",
    "build_splits",
    "datalist_base_dir",
    "format_report",
    "prepare_datalist",
    "read_chexpert",
    "read_cohort",
    "read_datalist",
    "write_datalist",
]
