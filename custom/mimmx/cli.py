"""``mimmx`` command line: generate a synthetic cohort, show a data list's split report, score a checkpoint.

mimmx generate cxr --out_dir data/                       # CheXpert-format synthetic cohort
mimmx splits bundles/mimmx_cxr/data/datalist.json        # buckets and achieved rho per split
"""

from __future__ import annotations

import importlib
from typing import Any

import fire

from mimmx.audit import audit_datalist, format_audit
from mimmx.data import GENERATORS, format_report, read_datalist
from mimmx.errors import ConfigError


class Commands:
    """Tools around the bundles; training and evaluation run through ``python -m monai.bundle``."""

    def generate(self, kind: str, out_dir: str, seed: int = 0, **kwargs: Any) -> str:
        """Write a synthetic cohort (images + table in the real cohort's format); returns the table's path."""
        if kind not in GENERATORS:
            raise ConfigError(f"generate: kind must be one of {sorted(GENERATORS)}, got {kind!r}.")
        module_name, _, attr = GENERATORS[kind].partition(":")
        generator = getattr(importlib.import_module(module_name), attr)
        return generator(out_dir=out_dir, seed=seed, **kwargs)

    def splits(self, datalist: str) -> None:
        """Print the split report stored in a data list written by the bundles."""
        meta = read_datalist(datalist, splits=()).get("metadata", {})
        if "split_report" not in meta:
            raise ConfigError(f"{datalist}: no split report in its metadata; was it written by prepare_datalist?")
        print(format_report(meta["split_report"]))

    def audit(self, datalist: str, min_group: int = 10) -> None:
        """Print how strongly each factor goes with the target in every split, and empty or tiny groups."""
        print(format_audit(audit_datalist(datalist, min_group=min_group)))


def main() -> None:
    fire.Fire(Commands, name="mimmx")


if __name__ == "__main__":
    main()
