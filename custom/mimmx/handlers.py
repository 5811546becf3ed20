"""Ignite handlers: per-epoch MI/loss history and per-image prediction files."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from mimmx.io_utils import atomic_write_csv, atomic_write_json

__all__ = ["TrainingHistory", "PredictionWriter"]

_STAT_PREFIXES = ("ce_", "mi_", "weight_", "critic_loss", "adv_", "dro_")


def _first(output: Any) -> dict:
    """The iteration's stats: after decollation the output is a list of per-sample dicts with replicated scalars."""
    if isinstance(output, Sequence) and output and isinstance(output[0], dict):
        return output[0]
    return output if isinstance(output, dict) else {}


class TrainingHistory:
    """Averages every CE, MI-per-pair and weight statistic over each epoch, logs it and keeps a JSON history.

    The epoch means are also put into ``engine.state.metrics`` (prefixed ``train_``), where MONAI's StatsHandler
    and TensorBoardStatsHandler pick them up. ``validator``'s metrics, when given, join each epoch's record.
    """

    def __init__(self, output_file: str | None = None, validator: Engine | None = None, name: str = "mimmx") -> None:
        self.output_file = output_file
        self.validator = validator
        self.logger = logging.getLogger(name)
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._start = 0.0
        self._validation: dict[int, dict[str, float]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validation_completed)

    def _epoch_started(self, engine: Engine) -> None:
        self._sums.clear()
        self._count = 0
        self._start = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        out = _first(engine.state.output)
        for key, value in out.items():
            if isinstance(key, str) and key.startswith(_STAT_PREFIXES) or key == Keys.LOSS:
                self._sums[key] += float(value)
        self._count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        record: dict[str, float] = {"epoch": engine.state.epoch, "epoch_seconds": time.perf_counter() - self._start}
        record.update({k: v / max(self._count, 1) for k, v in sorted(self._sums.items())})
        for key, value in record.items():
            if key not in ("epoch",):
                engine.state.metrics[f"train_{key}"] = value
        record.update(self._validation.pop(engine.state.epoch, {}))
        self.history.append(record)
        mi = "  ".join(f"{k[3:]}={v:.3f}" for k, v in record.items() if k.startswith("mi_") and k != "mi_scale")
        ce = "  ".join(f"{k[3:]}={v:.3f}" for k, v in record.items() if k.startswith("ce_"))
        self.logger.info(f"epoch {engine.state.epoch}: CE per head {ce}")
        if mi:
            self.logger.info(f"epoch {engine.state.epoch}: MI per pair {mi}")
        self._write()

    def _validation_completed(self, validator: Engine) -> None:
        """Validation of epoch e joins record e, whichever of the two handlers runs first."""
        metrics = {k if k.startswith("val_") else f"val_{k}": float(v) for k, v in validator.state.metrics.items()}
        epoch = validator.state.epoch
        if self.history and self.history[-1]["epoch"] == epoch:
            self.history[-1].update(metrics)
            self._write()
        else:
            self._validation[epoch] = metrics

    def _write(self) -> None:
        if self.output_file:
            atomic_write_json(self.output_file, self.history)


class PredictionWriter:
    """Writes one row per image: its path, the probability of each class and the predicted class.

    MONAI's ClassificationSaver writes the probabilities only; people reading predictions want the class too.
    The file is written once, atomically, when the evaluator completes.
    """

    def __init__(self, output_file: str, class_names: Sequence[str] | None = None, image_key: str = Keys.IMAGE) -> None:
        self.output_file = Path(output_file)
        self.class_names = list(class_names) if class_names else None
        self.image_key = image_key
        self.rows: list[list[Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        items = output if isinstance(output, list) else [output]
        samples = batch if isinstance(batch, list) else [batch]
        for sample, item in zip(samples, items):
            probs = torch.as_tensor(item[Keys.PRED]).detach().float().flatten().cpu()
            image = sample.get(self.image_key)
            path = getattr(image, "meta", {}).get("filename_or_obj", "") if image is not None else ""
            self.rows.append([str(path), *[f"{p:.6f}" for p in probs.tolist()], int(probs.argmax())])

    def _write(self, engine: Engine) -> None:
        n = len(self.rows[0]) - 2 if self.rows else len(self.class_names or [])
        names = self.class_names or [str(i) for i in range(n)]
        header = ["image", *[f"prob_{c}" for c in names], "pred_class"]
        rows = [[*r[:-1], names[r[-1]]] for r in self.rows]
        atomic_write_csv(self.output_file, header, rows)
        logging.getLogger("mimmx").info(f"wrote {len(rows)} predictions to {self.output_file}")
