"""One owner per shared name: factor names and label keys come from the factor parser, split names and statistic
prefixes from :mod:`mimmx.names`, and every reader uses them."""

from __future__ import annotations

import pytest

from mimmx import names
from mimmx.data import SPLIT_NAMES
from mimmx.errors import ConfigError
from mimmx.evaluation import TEST_SPLITS
from mimmx.factors import factor_names, label_keys, parse_factors
from mimmx.report import SPLIT_ORDER

FACTORS = [
    {"name": "sex", "column": "Sex", "classes": ["Female", "Male"]},
    {"name": "age", "column": "Age", "key": "age_group", "bins": [[None, 50], [60, None]]},
]


def test_factor_names_and_label_keys_come_from_the_parser() -> None:
    assert factor_names(FACTORS) == ["sex", "age"]
    assert label_keys(parse_factors(FACTORS), "effusion") == {"causal": "effusion", "sex": "sex", "age": "age_group"}
    # the same validation as every other reader, naming the config id
    with pytest.raises(ConfigError, match=r"train\.yaml#factors#0: each factor needs at least a 'name'"):
        factor_names([{"column": "Sex"}], config_id="train.yaml#factors")
    with pytest.raises(ConfigError, match=r"train\.yaml#factors: expected a list of factors"):
        factor_names("sex,age", config_id="train.yaml#factors")


def test_split_names_have_one_owner() -> None:
    assert names.SPLIT_NAMES == ("train", "val", "test_id", "test_inverted", "test_balanced")
    assert SPLIT_NAMES is names.SPLIT_NAMES
    assert TEST_SPLITS is names.TEST_SPLITS and SPLIT_ORDER is names.TEST_SPLITS
    assert names.TEST_SPLITS == names.SPLIT_NAMES[2:]


def test_pair_and_statistic_names() -> None:
    assert names.pair_name("causal", "sex") == "causal|sex"
    assert names.split_pair("causal|sex") == ("causal", "sex")
    for bad in ("causal", "causal|", "a|b|c"):
        with pytest.raises(ValueError, match="partition pair"):
            names.split_pair(bad)
    assert names.is_pair_mi("mi_causal|sex") and not names.is_pair_mi("mi_total") and not names.is_pair_mi("mi_scale")
    assert all(isinstance(p, str) and p for p in names.STAT_PREFIXES)
