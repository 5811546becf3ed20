"""Epochs whose randomness depends on (seed, epoch) only, so a resumed run repeats an uninterrupted one exactly.

A run seeded once at start draws its shuffling, augmentation, dropout and critic batches from generators whose
state after epoch e depends on every draw before it; a run resumed from the epoch-e checkpoint would start epoch e+1
from fresh generators and diverge. :class:`EpochSeed` reseeds Python, NumPy, torch (MONAI's ``set_determinism``) and
the random transforms at the start of every epoch from ``seed`` and the epoch number, before the data loader draws
its order, which makes epoch e+1 the same whether or not the process was killed in between.
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from monai.transforms import Randomizable
from monai.utils import set_determinism

__all__ = ["EpochSeed", "epoch_seed"]

_STRIDE = 100_003  # a prime: (seed, epoch) pairs map to distinct seeds for any practical epoch count


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch (below 2**32, as NumPy requires)."""
    return (int(seed) * _STRIDE + int(epoch)) % (2**32)


class EpochSeed:
    """Reseed every generator a training epoch uses from ``(seed, epoch)`` when the epoch starts.

    Args:
        seed: the run's seed (the config's ``seed``).
        transforms: random transforms to reseed as well (MONAI transforms keep their own generators), e.g. the
            training ``Compose``.
    """

    def __init__(self, seed: int, transforms: Any = None) -> None:
        self.seed = int(seed)
        self.transforms = transforms

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = epoch_seed(self.seed, engine.state.epoch)
        set_determinism(seed=seed)
        if isinstance(self.transforms, Randomizable):
            self.transforms.set_random_state(seed=seed)
