"""Spurious factors and the causal target as configuration.

A factor maps one raw column of a cohort table to a small integer class index. The mapping is
declared in the bundle config, so adding a factor never needs a code change:

    - name: sex                # partition and head name
      column: Sex              # column of the cohort table (default: name)
      classes: [Female, Male]  # raw value(s) of class 0, class 1, ...
      weight: 1.0
    - name: age
      column: Age
      bins: [[null, 50], [60, null]]   # continuous: inclusive intervals; values in the gap are dropped
    - name: support_devices
      column: Support Devices
      classes: [[null, 0, -1], [1]]    # several raw values per class; null is a blank cell

Raw values are compared after normalisation: surrounding blanks removed, numeric strings
compared as numbers, empty cells as ``None``. A value matching no class is reported as
``None`` by :meth:`ValueMap.encode` and the row is left out by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mimmx.errors import ConfigError
from mimmx.names import CAUSAL

__all__ = ["ValueMap", "FactorSpec", "normalise_value", "parse_factors", "factor_names", "label_keys"]


def normalise_value(value: Any) -> Any:
    """Canonical form of a raw table cell: None for blank/NaN, float for numbers, stripped str otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    try:
        return float(text)
    except ValueError:
        return text


@dataclass
class ValueMap:
    """Maps raw cell values to class indices, either by listed values or by numeric intervals."""

    classes: list[list[Any]] | None = None
    bins: list[tuple[float | None, float | None]] | None = None
    config_id: str = ""

    def __post_init__(self) -> None:
        if (self.classes is None) == (self.bins is None):
            raise ConfigError(f"{self.config_id}: give exactly one of 'classes' or 'bins'.")
        if self.classes is not None:
            norm = []
            for c in self.classes:
                values = list(c) if isinstance(c, (list, tuple)) else [c]
                norm.append([normalise_value(v) for v in values])
            self.classes = norm
            seen: dict[Any, int] = {}
            for i, values in enumerate(norm):
                for v in values:
                    if v in seen and seen[v] != i:
                        raise ConfigError(f"{self.config_id}: value {v!r} is listed in classes {seen[v]} and {i}.")
                    seen[v] = i
        else:
            bins = []
            for b in self.bins:
                if not isinstance(b, (list, tuple)) or len(b) != 2:
                    raise ConfigError(f"{self.config_id}: each bin must be [low, high] (null for open), got {b!r}.")
                lo, hi = (None if v is None else float(v) for v in b)
                if lo is not None and hi is not None and lo > hi:
                    raise ConfigError(f"{self.config_id}: bin {b!r} has low > high.")
                bins.append((lo, hi))
            self.bins = bins
        if self.num_classes < 2:
            raise ConfigError(f"{self.config_id}: needs at least two classes, got {self.num_classes}.")

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else len(self.bins)

    def encode(self, raw: Any) -> int | None:
        """Class index of a raw value, or None when the value belongs to no class (row to drop)."""
        v = normalise_value(raw)
        if self.classes is not None:
            for i, values in enumerate(self.classes):
                if v in values:
                    return i
            return None
        if not isinstance(v, float):
            return None
        for i, (lo, hi) in enumerate(self.bins):
            if (lo is None or v >= lo) and (hi is None or v <= hi):
                return i
        return None


@dataclass
class FactorSpec:
    """One spurious factor: its partition/head name, data-list key, source column, classes and loss weight."""

    name: str
    column: str
    values: ValueMap
    key: str = ""
    weight: float = 1.0
    class_names: list[str] = field(default_factory=list)
    valid_range: tuple[float, float] | None = None  # plausible numeric values; rows outside are dropped, counted

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.name
        if not self.class_names:
            if self.values.classes is not None:
                self.class_names = [str(v[0]) for v in self.values.classes]
            else:
                self.class_names = [_interval_name(lo, hi) for lo, hi in self.values.bins]

    @property
    def num_classes(self) -> int:
        return self.values.num_classes

    @property
    def kind(self) -> str:
        return "binary" if self.num_classes == 2 else "categorical"

    def encode(self, raw: Any) -> int | None:
        return self.values.encode(raw)


def _interval_name(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"<={hi:g}"
    if hi is None:
        return f">={lo:g}"
    return f"{lo:g}-{hi:g}"


def _valid_range(value: Any, config_id: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{config_id}#valid_range: expected [low, high], got {value!r}.")
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{config_id}#valid_range: expected two numbers, got {value!r}.") from e
    if lo > hi:
        raise ConfigError(f"{config_id}#valid_range: low {lo:g} > high {hi:g}.")
    return lo, hi


_RESERVED = {CAUSAL, "image", "label", "patient_id"}


def parse_factors(config: Sequence[Mapping[str, Any]] | None, config_id: str = "factors") -> list[FactorSpec]:
    """Validate the ``factors`` list of a bundle config; K = 0 is an error because MIMM-X needs a factor."""
    if isinstance(config, Mapping) or isinstance(config, str):
        raise ConfigError(f"{config_id}: expected a list of factors, got {type(config).__name__}.")
    if not config:
        raise ConfigError(
            f"{config_id}: no spurious factor configured (K = 0). MIMM-X needs at least one; "
            "to train a plain classifier keep one factor and pass --loss_terms '$[@loss#head_ce]'."
        )
    specs, names, keys = [], set(), set()
    for i, item in enumerate(config):
        cid = f"{config_id}#{i}"
        if isinstance(item, FactorSpec):
            spec = item
        else:
            if not isinstance(item, Mapping) or "name" not in item:
                raise ConfigError(f"{cid}: each factor needs at least a 'name', got {item!r}.")
            unknown = set(item) - {
                "name",
                "column",
                "key",
                "classes",
                "bins",
                "weight",
                "class_names",
                "type",
                "valid_range",
            }
            if unknown:
                raise ConfigError(f"{cid}: unknown field(s) {sorted(unknown)}.")
            values = ValueMap(classes=item.get("classes"), bins=item.get("bins"), config_id=cid)
            weight = float(item.get("weight", 1.0))
            if not weight > 0:
                raise ConfigError(f"{cid}: weight must be > 0, got {weight}.")
            spec = FactorSpec(
                name=str(item["name"]),
                column=str(item.get("column", item["name"])),
                values=values,
                key=str(item.get("key", "")),
                weight=weight,
                class_names=[str(c) for c in item.get("class_names", [])],
                valid_range=_valid_range(item.get("valid_range"), cid),
            )
            declared = item.get("type")
            if declared not in (None, "binary", "categorical", "continuous"):
                raise ConfigError(f"{cid}: type must be binary, categorical or continuous, got {declared!r}.")
            if declared == "binary" and spec.num_classes != 2:
                raise ConfigError(f"{cid}: type binary but {spec.num_classes} classes.")
            if declared == "continuous" and values.bins is None:
                raise ConfigError(f"{cid}: a continuous factor needs 'bins' (for example [[null, 50], [60, null]]).")
        if spec.name in _RESERVED or spec.key in _RESERVED:
            raise ConfigError(f"{cid}: name/key {spec.name!r} is reserved ({sorted(_RESERVED)}).")
        if spec.name in names or spec.key in keys:
            raise ConfigError(f"{cid}: factor {spec.name!r} is configured twice.")
        names.add(spec.name)
        keys.add(spec.key)
        specs.append(spec)
    return specs


def factor_names(config: Sequence[Mapping[str, Any] | FactorSpec] | None, config_id: str = "factors") -> list[str]:
    """The names of a ``factors`` list in config order, validated like every other reader of it (one parser)."""
    return [spec.name for spec in parse_factors(config, config_id=config_id)]


def label_keys(factors: Sequence[FactorSpec], target_key: str = "label") -> dict[str, str]:
    """``{head name: data-list key}``: the target under the causal head's name, then each factor's key."""
    return {CAUSAL: target_key, **{spec.name: spec.key for spec in factors}}
