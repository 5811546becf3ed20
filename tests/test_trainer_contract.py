"""SupervisedTrainer's contract in MIMMXTrainer: prepare_batch, inferer, amp and compile honoured; what it cannot
honour (tiling inferers, gradient accumulation) refused by config id."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines.utils import default_prepare_batch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from mimmx.engines import MIMMXTrainer
from mimmx.errors import ConfigError
from mimmx.losses import ConditionalFactorMI, HeadCrossEntropy
from mimmx.networks import MIMMXNet

FACTORS = [{"name": "sex", "classes": [0, 1]}]


def _data(n: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 16, 16, generator=g) + i % 2 for i in range(n)]
    return [{"image": image, "label": i % 2, "sex": (i // 2) % 2} for i, image in enumerate(images)]


def _trainer(**kwargs) -> MIMMXTrainer:
    torch.manual_seed(0)
    net = MIMMXNet(2, 1, 2, FACTORS, partition_dim=4, backbone_kwargs={"channels": (4, 8), "strides": (2, 2)})
    terms = [HeadCrossEntropy(FACTORS), ConditionalFactorMI(4, FACTORS, queue_size=64, hidden=8)]
    return MIMMXTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(_data(), batch_size=8),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        factors=FACTORS,
        loss_terms=terms,
        **kwargs,
    )


def _losses(trainer: MIMMXTrainer) -> list[float]:
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    return losses


def test_prepare_batch_gives_the_image_and_the_target():
    calls = []

    def flipped(batch, device=None, non_blocking=False, **kwargs):
        calls.append(1)
        image, label = default_prepare_batch(batch, device, non_blocking, **kwargs)
        return -image, 1 - label

    trainer = _trainer(prepare_batch=flipped)
    trainer.run()
    assert len(calls) == 4
    assert float(trainer.state.output[0]["image"].max()) <= 0, "the trainer trains on the prepared image"
    last_labels = torch.tensor([int(o["label"]) for o in trainer.state.output])
    last_batch = torch.tensor([item["label"] for item in _data()[-8:]])  # no shuffling: the last 8 items
    assert torch.equal(last_labels, 1 - last_batch), "the causal target is prepare_batch's target"


def test_inferer_runs_the_feature_pass():
    class Counting(SimpleInferer):
        calls = 0

        def __call__(self, inputs, network, *args, **kwargs):
            Counting.calls += 1
            assert kwargs.get("features") is True
            return super().__call__(inputs, network, *args, **kwargs)

    _trainer(inferer=Counting()).run()
    assert Counting.calls == 4


def test_tiling_inferer_and_accumulation_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"train#trainer#inferer: .*SlidingWindowInferer"):
        _trainer(inferer=SlidingWindowInferer(roi_size=(8, 8)))
    with pytest.raises(ConfigError, match=r"train#trainer#accumulation_steps: expected 1, got 2"):
        _trainer(accumulation_steps=2)


@pytest.mark.parametrize("amp", [False, True])
def test_amp_on_cpu_autocasts_the_network_to_bfloat16(amp):
    trainer = _trainer(amp=amp)
    dtypes = set()
    trainer.model.backbone.fc.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    losses = _losses(trainer)
    assert dtypes == {torch.bfloat16 if amp else torch.float32}
    assert trainer.scaler is None, "no gradient scaler off CUDA"
    assert all(torch.isfinite(torch.tensor(losses)))
    mi = trainer.state.output[0]["mi_causal|sex|target"]
    assert isinstance(mi, float) and mi >= 0, "the MI critics ran (in float32)"


def test_compile_compiles_the_network_and_trains_the_same():
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    compiled = _trainer(compile=True, compile_kwargs={"backend": counter})
    compiled_losses = _losses(compiled)
    assert counter.frame_count >= 1, "the network's pass went through torch.compile"
    assert compiled_losses == pytest.approx(_losses(_trainer()), rel=1e-5)
