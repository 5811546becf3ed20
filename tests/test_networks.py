"""MIMMXNet: partitions and heads, TorchScript, config errors."""

from __future__ import annotations

import pytest
import torch

from mimmx.errors import ConfigError
from mimmx.factors import parse_factors
from mimmx.networks import MIMMXNet

FACTORS = [
    {"name": "sex", "classes": ["Female", "Male"]},
    {"name": "age", "bins": [[None, 50], [60, None]]},
    {"name": "site", "classes": ["a", "b", "c"]},
]


@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 1, 32, 32)), (3, (2, 1, 16, 16, 16))])
def test_partitions_heads_and_forward(spatial_dims, shape):
    net = MIMMXNet(spatial_dims, 1, 2, FACTORS, partition_dim=8).eval()
    x = torch.randn(*shape)
    parts = net.partitions(x)
    assert list(parts) == ["causal", "sex", "age", "site"]
    assert all(p.shape == (shape[0], 8) for p in parts.values())
    logits = net.head_logits(parts)
    assert {k: v.shape[1] for k, v in logits.items()} == {"causal": 2, "sex": 2, "age": 2, "site": 3}
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (shape[0], 2)
    torch.testing.assert_close(out, logits["causal"])


def test_torchscript_matches_eager():
    net = MIMMXNet(2, 1, 2, FACTORS, partition_dim=8).eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_only_causal_partition_reaches_causal_head():
    net = MIMMXNet(2, 1, 2, FACTORS, partition_dim=8).eval()
    parts = net.partitions(torch.randn(2, 1, 32, 32))
    changed = dict(parts, sex=parts["sex"] + 100.0)
    torch.testing.assert_close(net.head_logits(changed)["causal"], net.head_logits(parts)["causal"])


def test_no_factor_is_a_config_error():
    with pytest.raises(ConfigError, match="K = 0"):
        MIMMXNet(2, 1, 2, [])
    with pytest.raises(ConfigError, match="K = 0"):
        parse_factors([])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "vgg"}, "network_def#backbone"),
        ({"spatial_dims": 4}, "network_def#spatial_dims"),
        ({"num_classes": 1}, "network_def#num_classes"),
    ],
)
def test_bad_network_config_names_the_id(kwargs, message):
    args = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "factors": FACTORS, **kwargs}
    with pytest.raises(ConfigError, match=message):
        MIMMXNet(**args)


@pytest.mark.parametrize(
    "factors, message",
    [
        ([{"name": "sex", "classes": ["F"]}], "at least two classes"),
        ([{"name": "sex"}], "exactly one of 'classes' or 'bins'"),
        ([{"name": "sex", "classes": ["F", "M"]}, {"name": "sex", "classes": [0, 1]}], "configured twice"),
        ([{"name": "causal", "classes": ["F", "M"]}], "reserved"),
        ([{"name": "age", "bins": [[60, 50], [70, None]]}], "low > high"),
        ([{"name": "sex", "classes": ["F", "M"], "wieght": 2}], "unknown field"),
        ({"name": "sex"}, "expected a list"),
    ],
)
def test_bad_factor_config(factors, message):
    with pytest.raises(ConfigError, match=message):
        parse_factors(factors)


def test_factor_encoding_with_gap_and_blanks():
    sex, age, devices = parse_factors(
        [
            {"name": "sex", "column": "Sex", "classes": ["Female", "Male"]},
            {"name": "age", "column": "Age", "bins": [[None, 50], [60, None]]},
            {"name": "devices", "column": "Support Devices", "classes": [[None, 0, -1], [1]]},
        ]
    )
    assert [sex.encode(v) for v in ("Female", " Male ", "Unknown")] == [0, 1, None]
    assert [age.encode(v) for v in ("50", 51, "59.5", "60", "", "abc")] == [0, None, None, 1, None, None]
    assert [devices.encode(v) for v in ("", "0.0", "-1.0", "1.0", "1")] == [0, 0, 0, 1, 1]
    assert age.class_names == ["<=50", ">=60"] and age.kind == "binary"
