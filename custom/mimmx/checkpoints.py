"""Model weights and training checkpoints that are written atomically, hashed, and loaded only when intact.

- :func:`save_weights` writes any ``torch.save``-able object through :mod:`mimmx.io_utils` and records its SHA-256
  beside it (``model.pt.sha256``, the ``sha256sum`` format), so a copied, truncated or swapped file is caught;
- :func:`load_weights` checks that hash and loads with ``weights_only=True`` (no pickled code runs);
- :func:`load_strict` puts a state dict into a network only when every key and every shape match, and otherwise
  names the missing, unexpected and mismatched keys (MONAI's ``copy_model_state`` skips them without a word);
- :class:`TrainingCheckpoint` saves the resumable training state at every epoch end (never removing the previous
  checkpoint before the new one is on disk) and, with ``resume_from="latest"``, restores the newest one.

Together with :class:`mimmx.reproducibility.EpochSeed` a run killed at any moment and resumed ends where an
uninterrupted run with the same seed ends (``scripts/fault_check.py`` checks this).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from mimmx.distributed import rank
from mimmx.errors import CheckpointError
from mimmx.io_utils import atomic_path, atomic_write_text, sha256_file

__all__ = [
    "sha256_file",
    "save_weights",
    "verify_hash",
    "load_weights",
    "load_strict",
    "latest_checkpoint",
    "TrainingCheckpoint",
    "WeightsLoader",
]

logger = logging.getLogger("mimmx")

HASH_SUFFIX = ".sha256"
_EPOCH_RE = re.compile(r"_epoch=(\d+)\.pt$")


def hash_file(path: str | os.PathLike) -> Path:
    """Where the SHA-256 of ``path`` is recorded: ``<path>.sha256``."""
    return Path(f"{path}{HASH_SUFFIX}")


def save_weights(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` atomically, then record the file's SHA-256 beside it; returns the hash."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # through memory: torch names the archive after the file, a temporary name would change
    data = buffer.getvalue()  # the bytes, and equal weights must give equal files and hashes
    digest = hashlib.sha256(data).hexdigest()
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)
    atomic_write_text(hash_file(path), f"{digest}  {path.name}\n")
    return digest


def verify_hash(path: str | os.PathLike, required: bool = False) -> str | None:
    """Compare a file with its recorded SHA-256; CheckpointError on a mismatch (or, if ``required``, no record).

    Returns the recorded hash, or None when there is none (logged: the file cannot be checked).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found.")
    record = hash_file(path)
    if not record.is_file():
        if required:
            raise CheckpointError(f"{path}: no SHA-256 recorded beside it ({record.name}); cannot check the file.")
        logger.warning("%s: no SHA-256 recorded beside it (%s); loading it unchecked.", path, record.name)
        return None
    expected = record.read_text(encoding="utf-8").split()[0].lower() if record.stat().st_size else ""
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(
            f"{path}: SHA-256 {actual} does not match the one recorded in {record.name} ({expected or 'empty'}); "
            "the file was changed, truncated or replaced after it was written. Retrain or restore the file."
        )
    return expected


def load_weights(path: str | os.PathLike, map_location: Any = "cpu", required_hash: bool = False) -> Any:
    """Check the recorded SHA-256, then ``torch.load(..., weights_only=True)``; CheckpointError naming the file."""
    verify_hash(path, required=required_hash)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load the weights ({type(e).__name__}: {e}).") from e


def load_strict(network: torch.nn.Module, state: Mapping[str, Any], source: str = "state dict") -> None:
    """Load ``state`` into ``network`` only when every key and every shape match; otherwise name them all."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors, got {type(state).__name__}.")
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {values[:6]}{' ...' if len(values) > 6 else ''}"
            for label, values in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes))
            if values
        ]
        raise CheckpointError(
            f"{source}: the weights do not fit the configured network ({'; '.join(parts)}). Check that the "
            "config's factors, backbone, partition_dim and num_classes are those the model was trained with."
        )
    network.load_state_dict(state, strict=True)


def latest_checkpoint(folder: str | os.PathLike, prefix: str = "training_checkpoint") -> Path | None:
    """The training checkpoint with the highest epoch in ``folder``, or None."""
    found = []
    for path in Path(folder).glob(f"{prefix}_epoch=*.pt"):
        match = _EPOCH_RE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class TrainingCheckpoint:
    """Save the resumable state of training at every epoch end; restore it at start when asked.

    The file ``<prefix>_epoch=<e>.pt`` holds ``{name: obj.state_dict()}`` for every entry of ``save_dict`` (the
    network, optimiser, loss terms, trainer, history, model selection). It is written atomically with its SHA-256;
    older checkpoints are removed only afterwards, so a SIGKILL at any moment leaves a complete one.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: objects with ``state_dict()``/``load_state_dict()``; an ignite Engine restores epoch and
            iteration (its ``max_epochs`` stays the configured one, so a run can be extended).
        resume_from: None (start afresh), ``"latest"`` (the newest checkpoint in ``save_dir``, or a fresh start when
            there is none), or the path of a checkpoint.
        n_saved: how many recent checkpoints to keep.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume_from: str | os.PathLike | None = None,
        n_saved: int = 1,
        prefix: str = "training_checkpoint",
    ) -> None:
        from mimmx.config import as_optional

        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.resume_from = as_optional(resume_from, "train#resume_from")
        self.n_saved = max(1, int(n_saved))
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.restore)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def checkpoint_path(self, epoch: int) -> Path:
        return self.save_dir / f"{self.prefix}_epoch={epoch}.pt"

    def save(self, engine: Engine) -> None:
        if rank() != 0:  # several processes hold the same state; one writes it
            return
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        save_weights(state, self.checkpoint_path(engine.state.epoch))
        kept = sorted(
            (int(m.group(1)), p)
            for p in self.save_dir.glob(f"{self.prefix}_epoch=*.pt")
            if (m := _EPOCH_RE.search(p.name))
        )
        for _, old in kept[: -self.n_saved]:
            old.unlink(missing_ok=True)
            hash_file(old).unlink(missing_ok=True)

    def restore(self, engine: Engine) -> None:
        if self.resume_from is None:
            return
        if str(self.resume_from) == "latest":
            path = latest_checkpoint(self.save_dir, self.prefix)
            if path is None:
                logger.info("resume_from latest: no checkpoint in %s yet; training from the start.", self.save_dir)
                return
        else:
            path = Path(self.resume_from)
        state = load_weights(path, map_location="cpu", required_hash=False)
        missing = [name for name in self.save_dict if name not in state]
        if missing:
            raise CheckpointError(f"{path}: the training checkpoint lacks {missing}; it has {sorted(state)}.")
        max_epochs = engine.state.max_epochs
        for name, obj in self.save_dict.items():
            if isinstance(obj, torch.nn.Module):
                load_strict(obj, state[name], f"{path} [{name}]")
            else:
                obj.load_state_dict(state[name])
        if engine in self.save_dict.values():
            if engine.state.epoch > max_epochs:
                raise CheckpointError(
                    f"{path}: the checkpoint is at epoch {engine.state.epoch}, beyond max_epochs {max_epochs}."
                )
            engine.state.max_epochs = max_epochs
        logger.info("resumed from %s at epoch %d", path, engine.state.epoch)


class WeightsLoader:
    """Load a flat ``model.pt`` into the network when an engine starts: hash checked, ``weights_only``, strict.

    The inference configs' replacement for MONAI's ``CheckpointLoader``, which neither checks the file's hash nor
    names what does not fit.
    """

    def __init__(self, load_path: str | os.PathLike, network: torch.nn.Module, map_location: Any = "cpu") -> None:
        self.load_path = load_path
        self.network = network
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.load())

    def load(self) -> torch.nn.Module:
        load_strict(self.network, load_weights(self.load_path, self.map_location), str(self.load_path))
        return self.network
