"""Shortcut audit: association per split and factor, warnings for empty and tiny groups."""

from __future__ import annotations

import pytest

from mimmx.audit import audit_datalist, audit_splits, format_audit
from mimmx.data import write_datalist
from mimmx.errors import DataError


def _items(n: int, agree: float, key: str = "sex") -> list[dict]:
    """n images, half positive; the factor equals the label for a fraction ``agree`` of each class."""
    items = []
    for y in (0, 1):
        for i in range(n // 2):
            z = y if i < agree * (n // 2) else 1 - y
            items.append({"image": f"{y}_{i}.png", "label": y, key: z, "patient_id": f"p{y}{i}"})
    return items


def test_association_follows_the_planted_correlation():
    audit = audit_splits(
        {"train": _items(200, 0.9), "test_inverted": _items(200, 0.1), "test_balanced": _items(200, 0.5)}, ["sex"]
    )
    train = audit["splits"]["train"]["factors"]["sex"]
    # hand-computed: 2x2 table [[90, 10], [10, 90]] -> phi = (90*90 - 10*10) / (100*100) = 0.8
    assert train["phi"] == pytest.approx(0.8) and train["cramers_v"] == pytest.approx(0.8)
    assert train["agreement"] == pytest.approx(0.9)
    assert audit["splits"]["test_inverted"]["factors"]["sex"]["phi"] == pytest.approx(-0.8)
    assert audit["splits"]["test_balanced"]["factors"]["sex"]["phi"] == pytest.approx(0.0, abs=1e-9)
    assert train["groups"] == {"label=0,sex=0": 90, "label=0,sex=1": 10, "label=1,sex=0": 10, "label=1,sex=1": 90}
    assert audit["warnings"] == []


def test_empty_and_tiny_groups_are_warned():
    audit = audit_splits({"train": _items(40, 1.0), "val": _items(40, 0.9)}, ["sex"], min_group=5)
    warnings = audit["warnings"]
    assert "split 'train': group label=0,sex=1 is empty" in warnings
    assert "split 'val': group label=1,sex=0 has only 2 image(s) (< 5)" in warnings
    assert all("WARNING: " + w in format_audit(audit) for w in warnings)


def test_categorical_factor_uses_cramers_v():
    items = [{"label": i % 2, "site": i % 3} for i in range(60)]
    rep = audit_splits({"train": items}, ["site"])["splits"]["train"]["factors"]["site"]
    assert rep["phi"] is None and rep["cramers_v"] == pytest.approx(0.0, abs=1e-9)


def test_missing_factor_key_names_the_item():
    with pytest.raises(DataError, match="item 0 has no factor key 'age'"):
        audit_splits({"train": _items(10, 0.5)}, ["age"])


def test_audit_reads_factor_keys_from_the_datalist(tmp_path):
    path = tmp_path / "datalist.json"
    write_datalist(path, {"train": _items(20, 0.8)}, {"factors": [{"name": "sex", "key": "sex"}]})
    assert audit_datalist(str(path))["splits"]["train"]["factors"]["sex"]["agreement"] == pytest.approx(0.8)
    write_datalist(path, {"train": _items(20, 0.8)}, {})
    with pytest.raises(DataError, match="names no factors"):
        audit_datalist(str(path))
