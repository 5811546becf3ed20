"""Training images held out from the task loss (mimmx.held_out): which images, that the causal CE never fits them,
that the MI terms read only them when asked, and a bundle training with them end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from torch.utils.data import WeightedRandomSampler

from mimmx.errors import ConfigError
from mimmx.factors import parse_factors
from mimmx.held_out import mark_held_out
from mimmx.losses import ConditionalFactorMI, HeadCrossEntropy, StepContext
from mimmx.methods import method_overrides
from mimmx.networks import CAUSAL

FACTORS = [{"name": "sex", "column": "Sex", "classes": ["F", "M"]}]
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def test_the_same_images_are_held_out_wherever_the_data_live():
    items = [{"image": f"/a/p{i}/study1/view1_frontal.png", "label": i % 2} for i in range(2000)]
    marked = mark_held_out(items, 0.2, seed=3, base_dir="/a")
    share = sum(m["held_out"] for m in marked) / len(marked)
    assert 0.17 < share < 0.23
    moved = [{**item, "image": item["image"].replace("/a/", "/b/c/")} for item in items]
    moved = mark_held_out(moved, 0.2, seed=3, base_dir="/b/c")
    assert [m["held_out"] for m in moved] == [m["held_out"] for m in marked]
    assert [m["held_out"] for m in mark_held_out(items, 0.2, seed=4, base_dir="/a")] != [m["held_out"] for m in marked]
    assert mark_held_out(items, 0.0) == items and "held_out" not in items[0]
    with pytest.raises(ConfigError, match="held_out_fraction"):
        mark_held_out(items, 1.0)


def _context(n: int, held_out: torch.Tensor | None, seed: int = 0) -> StepContext:
    g = torch.Generator().manual_seed(seed)
    causal = torch.randn(n, 4, generator=g, requires_grad=True)
    logits = {CAUSAL: torch.randn(n, 2, generator=g, requires_grad=True), "sex": torch.randn(n, 2, generator=g)}
    labels = {CAUSAL: torch.randint(0, 2, (n,), generator=g), "sex": torch.randint(0, 2, (n,), generator=g)}
    return StepContext(
        network=torch.nn.Identity(),
        features=causal,
        parts={CAUSAL: causal},
        logits=logits,
        labels=labels,
        factors=parse_factors(FACTORS),
        epoch=5,
        held_out=held_out,
    )


def test_the_causal_ce_never_fits_held_out_rows():
    held_out = torch.arange(32) % 4 == 0
    ctx = _context(32, held_out)
    loss, stats = HeadCrossEntropy(FACTORS)(ctx)
    loss.backward()
    grad = ctx.logits[CAUSAL].grad
    assert grad[held_out].abs().sum() == 0 and grad[~held_out].abs().sum() > 0
    expected = torch.nn.functional.cross_entropy(ctx.logits[CAUSAL][~held_out], ctx.labels[CAUSAL][~held_out])
    assert stats["ce_causal"] == pytest.approx(float(expected), rel=1e-5)
    plain = _context(32, None)
    full, _ = HeadCrossEntropy(FACTORS)(plain)
    expected = sum(torch.nn.functional.cross_entropy(plain.logits[k], plain.labels[k]) for k in (CAUSAL, "sex"))
    assert float(full) == pytest.approx(float(expected), rel=1e-5)


def test_the_mi_term_reads_only_held_out_rows_when_asked():
    held_out = torch.arange(64) % 4 == 0
    term = ConditionalFactorMI(4, FACTORS, queue_size=512, held_out_only=True)
    ctx = _context(64, held_out)
    term.critic_update(ctx)
    assert len(term.queue) == int(held_out.sum())
    loss, stats = term(ctx)
    loss.backward()
    grad = ctx.parts[CAUSAL].grad
    assert grad[~held_out].abs().sum() == 0 and grad[held_out].abs().sum() > 0 and stats
    with pytest.raises(ConfigError, match="held_out_fraction"):
        term.critic_update(_context(64, None))
    none_held = _context(64, torch.zeros(64, dtype=torch.bool))
    loss, stats = term(none_held)
    assert float(loss) == 0.0 and stats == {}


def test_a_bundle_trains_with_held_out_images(tmp_path):
    small = ConfigParser.load_config_file(str(BUNDLES / "mimmx_cxr" / "configs" / "smoke_test.yaml"))
    overrides = {**small, **method_overrides("mimmx_held_out")}
    root = BUNDLES / "mimmx_cxr" / "configs"
    parser = ConfigParser()
    parser.read_config(str(root / "train.yaml"))
    parser.update({**overrides, "bundle_root": str(tmp_path)})
    data = parser.get_parsed_content("train#dataset#data")
    assert {item["held_out"] for item in data} == {0, 1}
    run("training", bundle_root=str(tmp_path), config_file=str(root / "train.yaml"), **overrides)
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.parametrize("method", ["mimmx_resampled_held_out", "resample_avg_held_out"])
def test_group_balanced_batches_carry_the_held_out_flags(method, tmp_path):
    """The sampler draws indices into the marked data list, so the flags reach the loss terms with every batch."""
    small = ConfigParser.load_config_file(str(BUNDLES / "mimmx_cxr" / "configs" / "smoke_test.yaml"))
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "mimmx_cxr" / "configs" / "train.yaml"))
    parser.update({**small, **method_overrides(method), "bundle_root": str(tmp_path)})
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader.sampler, WeightedRandomSampler)
    data = loader.dataset.data
    flags = torch.tensor([item["held_out"] for item in data], dtype=torch.double)
    expected = float((loader.sampler.weights * flags).sum() / loader.sampler.weights.sum())
    drawn = torch.cat([torch.as_tensor(batch["held_out"]).view(-1) for _ in range(10) for batch in loader]).double()
    assert 0 < expected < 1 and set(drawn.tolist()) == {0.0, 1.0}
    assert float(drawn.mean()) == pytest.approx(expected, abs=0.05)
