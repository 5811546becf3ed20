"""Averaged weights (mimmx.averaging): the exponential average itself, that 0 changes nothing, and that a bundle
validates, selects and saves the average while its training checkpoint keeps both the last step and the average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run

from mimmx.averaging import WeightAverage, ema_decay
from mimmx.checkpoints import latest_checkpoint, load_weights
from mimmx.methods import METHODS, method_overrides

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def test_without_epochs_the_network_itself_is_used():
    net = torch.nn.Linear(3, 2)
    average = WeightAverage(net, epochs=0)
    assert average.network is net and average.state_dict() == {}
    average.update()
    with pytest.raises(ValueError, match="average_epochs is 0"):
        average.load_state_dict({"n_averaged": torch.tensor(1)})


def test_the_average_is_the_exponential_average_of_the_steps():
    net = torch.nn.Linear(2, 1, bias=False)
    average = WeightAverage(net, epochs=2, steps_per_epoch=2)  # span 4 steps: decay 0.75
    assert ema_decay(2, 2) == pytest.approx(0.75)
    expected = None
    for value in (1.0, 5.0, -3.0):
        with torch.no_grad():
            net.weight.fill_(value)
        average.update()
        expected = value if expected is None else 0.75 * expected + 0.25 * value  # the first step is copied
    assert average.network is not net
    assert torch.allclose(average.network.weight, torch.full_like(net.weight, expected))
    restored = WeightAverage(torch.nn.Linear(2, 1, bias=False), epochs=2, steps_per_epoch=2)
    with pytest.raises(ValueError, match="no averaged weights"):
        restored.load_state_dict({})
    restored.load_state_dict(average.state_dict())
    assert torch.equal(restored.network.weight, average.network.weight)
    with pytest.raises(ValueError, match="average_epochs must be > 0"):
        ema_decay(0, 10)


def test_a_bundle_selects_and_saves_the_averaged_weights(tmp_path):
    small = ConfigParser.load_config_file(str(BUNDLES / "mimmx_cxr" / "configs" / "smoke_test.yaml"))
    overrides = {**small, **method_overrides("mimmx")}
    config = BUNDLES / "mimmx_cxr" / "configs" / "train.yaml"
    run("training", bundle_root=str(tmp_path), config_file=str(config), **overrides)
    state = load_weights(latest_checkpoint(tmp_path / "models"))
    averaged = {k.removeprefix("module."): v for k, v in state["weight_average"].items() if k.startswith("module.")}
    last = load_weights(tmp_path / "models" / "model_last.pt")
    assert int(state["weight_average"]["n_averaged"]) > 1
    assert set(last) == set(state["model"]) == set(averaged)
    assert all(torch.equal(last[k], averaged[k]) for k in last)  # what is saved is the average ...
    assert any(not torch.equal(last[k], state["model"][k]) for k in last)  # ... not the last step's weights


def test_only_mimmx_averages_by_default_and_every_other_method_says_what_it_does():
    config = ConfigParser.load_config_file(str(BUNDLES / "mimmx_cxr" / "configs" / "train.yaml"))
    assert config["average_epochs"] > 0 and "average_epochs" not in method_overrides("mimmx")
    averaged = {name for name in METHODS if method_overrides(name).get("average_epochs", config["average_epochs"]) > 0}
    assert averaged == {
        "mimmx",
        "mimmx_decision_mi_avg",
        "mimmx_fast_ramp",
        "mimmx_learn_first",
        "mimmx_balanced_start",
        "mimmx_decision_start",
        "mimmx_decision_early",
        "mimmx_decision_early_raw",
        "mimmx_adjusted",
        "adjusted_ce_avg",
        "mimmx_held_out_avg",
        "erm_avg",
        "balanced_ce_avg",
        "resample_avg",
        "resample_avg_held_out",
        "mimmx_resampled",
        "mimmx_resampled_held_out",
    }
