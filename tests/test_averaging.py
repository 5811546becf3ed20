"""Averaged weights (mimmx.averaging): the exponential average itself, that 0 changes nothing, that a bundle
validates, selects and saves the average while its training checkpoint keeps both the last step and the average, and
that recomputed BatchNorm statistics are those of the average's own activations and leave training untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser, run

from mimmx.averaging import WeightAverage, ema_decay, recompute_batchnorm
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


def test_recomputed_statistics_are_those_of_the_batches_fed_and_leave_the_random_state_alone():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5)).eval()
    net[0].running_mean.fill_(7.0)  # a stale average, as an EMA of moving weights leaves
    net[0].running_var.fill_(9.0)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([1.0, -2.0, 3.0])
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    recompute_batchnorm(net, [data[i : i + 16] for i in range(0, 64, 16)])  # dropout draws in train mode
    assert torch.equal(torch.rand(3), expected_draw)
    assert not net.training
    assert torch.allclose(net[0].running_mean, data.mean(0), atol=1e-5)
    per_batch = torch.stack([data[i : i + 16].var(0, unbiased=True) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(net[0].running_var, per_batch, atol=1e-5)
    with pytest.raises(ValueError, match="no BatchNorm"):
        recompute_batchnorm(torch.nn.Linear(3, 2), [data])


FACTORS = [{"name": "sex", "classes": [0, 1]}]


def _items(n: int = 40) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(3, generator=g), "label": i % 2, "sex": (i // 2) % 2} for i in range(n)]


def test_the_average_recomputes_its_statistics_at_every_epoch_end():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    items = _items()
    average = WeightAverage(
        net,
        epochs=1,
        steps_per_epoch=3,
        bn_images=32,
        bn_data=items,
        bn_transform=lambda d: d,
        factors=FACTORS,
        batch_size=8,
    )
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)

    def step(engine, batch):
        optimiser.zero_grad()
        net(batch).pow(2).sum().backward()
        optimiser.step()

    drawn = torch.stack([average.bn_images[i]["image"] for i in range(32)])
    checked = []
    engine = Engine(step)
    average.attach(engine)

    @engine.on(Events.ITERATION_COMPLETED(every=3))  # each epoch's end, where validation reads the average
    def check(engine):
        with torch.no_grad():
            own = average.network[0](drawn)  # the average's own activations before its BatchNorm
        assert torch.allclose(average.network[1].running_mean, own.mean(0), atol=1e-5)
        assert not torch.allclose(average.network[1].running_mean, net[1].running_mean, atol=1e-3)  # not the net's
        checked.append(engine.state.epoch)

    engine.run([torch.randn(8, 3) for _ in range(3)], max_epochs=2)
    assert checked == [1, 2]
    groups = {int(item["label"]) * 2 + int(item["sex"]) for item in average.bn_images.data}
    assert groups == {0, 1, 2, 3}  # drawn from every target x factor group


def test_recomputed_statistics_need_an_average_and_a_whole_batch():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    common = {"bn_data": _items(), "bn_transform": lambda d: d, "factors": FACTORS, "batch_size": 8}
    with pytest.raises(ValueError, match="average_epochs is 0"):
        WeightAverage(net, epochs=0, bn_images=32, **common)
    with pytest.raises(ValueError, match="at least one batch"):
        WeightAverage(net, epochs=1, bn_images=4, **common)
    with pytest.raises(ValueError, match="no BatchNorm"):
        WeightAverage(torch.nn.Linear(3, 3), epochs=1, bn_images=32, **common)


def test_a_bundle_with_recomputed_statistics_trains_exactly_as_without(tmp_path):
    small = ConfigParser.load_config_file(str(BUNDLES / "mimmx_cxr" / "configs" / "smoke_test.yaml"))
    config = BUNDLES / "mimmx_cxr" / "configs" / "train.yaml"
    states = {}
    for method in ("resample_avg", "resample_avg_bn"):
        root = tmp_path / method
        run("training", bundle_root=str(root), config_file=str(config), **{**small, **method_overrides(method)})
        states[method] = load_weights(latest_checkpoint(root / "models"))
    plain, fresh = states["resample_avg"], states["resample_avg_bn"]
    assert all(torch.equal(plain["model"][k], fresh["model"][k]) for k in plain["model"])  # the same training
    buffers = [k for k in plain["model"] if k.endswith("running_mean")]
    assert buffers
    for k in buffers:
        averaged = "module." + k
        assert not torch.equal(plain["weight_average"][averaged], fresh["weight_average"][averaged])
        assert not torch.equal(fresh["weight_average"][averaged], fresh["model"][k])


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
        "resample_avg_bn",
        "mimmx_resampled_bn",
        "mimmx_resampled_held_out_bn",
        "mimmx_bn",
    }
