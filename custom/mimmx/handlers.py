"""Ignite handlers: per-epoch MI/loss history and per-image prediction files."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from mimmx.io_utils import atomic_write_csv, atomic_write_json
from mimmx.names import CE_PREFIX, MI_PREFIX, MI_SCALE, PAIR_SEP, STAT_PREFIXES

__all__ = ["TrainingHistory", "PredictionWriter", "SelectionCheckpoints"]


def _first(output: Any) -> dict:
    """The iteration's stats: after decollation the output is a list of per-sample dicts with replicated scalars."""
    if isinstance(output, Sequence) and output and isinstance(output[0], dict):
        return output[0]
    return output if isinstance(output, dict) else {}


class TrainingHistory:
    """Averages every CE, MI-per-pair and weight statistic over each epoch, logs it and keeps a JSON history.

    The epoch means are also put into ``engine.state.metrics`` (prefixed ``train_``, pairs as ``a/b`` instead of
    ``a|b``, the loss as ``train_epoch_loss`` beside the per-iteration ``train_loss``), where MONAI's StatsHandler,
    TensorBoardStatsHandler and MLFlowHandler pick them up. ``validator``'s metrics, when given, join each epoch's
    record. The history is part of the resumable training checkpoint (``state_dict``), so a resumed run keeps the
    epochs before the interruption in ``history.json``.
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

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(record) for record in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(record) for record in state.get("history", [])]
        self._write()

    def _epoch_started(self, engine: Engine) -> None:
        self._sums.clear()
        self._count = 0
        self._start = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        out = _first(engine.state.output)
        for key, value in out.items():
            if isinstance(key, str) and key.startswith(STAT_PREFIXES) or key == Keys.LOSS:
                self._sums[str.__str__(key)] += float(value)  # a plain str: CommonKeys members do not unpickle safely
        self._count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        record: dict[str, float] = {"epoch": engine.state.epoch, "epoch_seconds": time.perf_counter() - self._start}
        record.update({k: v / max(self._count, 1) for k, v in sorted(self._sums.items())})
        for key, value in record.items():
            if key not in ("epoch",):
                name = "epoch_loss" if key == Keys.LOSS else key.replace(PAIR_SEP, "/")  # MLflow refuses '|'
                engine.state.metrics[f"train_{name}"] = value
        record.update(self._validation.pop(engine.state.epoch, {}))
        self.history.append(record)
        mi = "  ".join(
            f"{k[len(MI_PREFIX) :]}={v:.3f}" for k, v in record.items() if k.startswith(MI_PREFIX) and k != MI_SCALE
        )
        ce = "  ".join(f"{k[len(CE_PREFIX) :]}={v:.3f}" for k, v in record.items() if k.startswith(CE_PREFIX))
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


class SelectionCheckpoints:
    """Model selection beside the key metric's ``model.pt``, the same for every method: two more flat checkpoints.

    On each validation run it computes the *group-balanced* val AUROC of the causal output (every target x factor
    group weighted equally, :func:`mimmx.metrics.group_balanced_auroc`: the val split as if the factors were
    independent of the target), puts it into the validator's metrics as ``metric_name`` (so TrainingHistory records
    it per epoch) beside ``val_decision_leakage_<factor>`` (:func:`mimmx.metrics.decision_leakage` on val), saves
    ``balanced_file`` when it is the best so far and ``last_file`` every time, and ``key_file`` (``model.pt``) when
    ``key_metric`` (the validator's key metric, val AUROC) is the best so far. Every file is written atomically with
    its SHA-256 beside it (:func:`mimmx.checkpoints.save_weights`). Attach to the validator after its metric
    handlers; factor labels are read from the batch (they are in the data list). The running bests are part of the
    resumable training checkpoint (``state_dict``), so a resumed run selects what an uninterrupted one selects.

    Args:
        network: the trained network (its state dict is saved flat, like ``model.pt``).
        save_dir: the checkpoint folder.
        factors: the factors whose target x factor groups are balanced (all the bundle's factors).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str,
        factors: Sequence[Any],
        target_key: str = "label",
        balanced_file: str | None = "model_balanced_val.pt",
        last_file: str | None = "model_last.pt",
        metric_name: str = "val_balanced_auc",
        key_metric: str | None = None,
        key_file: str = "model.pt",
    ) -> None:
        from mimmx.factors import parse_factors

        self.network = network
        self.save_dir = Path(save_dir)
        self.specs = parse_factors(factors)
        self.target_key = target_key
        self.balanced_file = balanced_file
        self.last_file = last_file
        self.metric_name = metric_name
        self.key_metric = key_metric
        self.key_file = key_file
        self.best = -float("inf")
        self.best_key = -float("inf")
        self._scores: list[float] = []
        self._rows: list[list[int]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "best_key": self.best_key}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best = float(state.get("best", -float("inf")))
        self.best_key = float(state.get("best_key", -float("inf")))

    def _reset(self, engine: Engine) -> None:
        self._scores, self._rows = [], []

    def _collect(self, engine: Engine) -> None:
        keys = [self.target_key] + [f.key for f in self.specs]
        batch, output = engine.state.batch, engine.state.output
        samples = batch if isinstance(batch, list) else [dict(zip(batch, v)) for v in zip(*batch.values())]
        preds = output if isinstance(output, list) else [{Keys.PRED: p} for p in output[Keys.PRED]]
        for sample, out in zip(samples, preds, strict=True):
            missing = [k for k in keys if k not in sample]
            if missing:
                raise KeyError(f"SelectionCheckpoints: validation sample has no {missing} (keys: {sorted(sample)}).")
            self._rows.append([int(torch.as_tensor(sample[k]).reshape(-1)[0]) for k in keys])
            self._scores.append(float(torch.as_tensor(out[Keys.PRED]).detach().float().reshape(-1)[-1]))

    def _completed(self, engine: Engine) -> None:
        from mimmx.baselines import group_index
        from mimmx.checkpoints import save_weights
        from mimmx.distributed import gather_objects, rank
        from mimmx.metrics import decision_leakage, group_balanced_auroc

        # several processes: each validated its shard of val; every rank scores all of val, rank 0 saves
        self._rows = [row for part in gather_objects(self._rows) for row in part]
        self._scores = [score for part in gather_objects(self._scores) for score in part]
        rows = torch.as_tensor(self._rows).numpy().reshape(-1, 1 + len(self.specs))
        groups = group_index(rows[:, 0], [rows[:, j + 1] for j in range(len(self.specs))], self.specs)
        value = group_balanced_auroc(rows[:, 0], self._scores, groups)
        engine.state.metrics[self.metric_name] = float("nan") if value is None else value
        # dependence of the decisions on each factor inside each target class, on held-out images: a penalty met on
        # the training images alone (memorisation) shows here and not in the training losses
        for j, spec in enumerate(self.specs):
            leak = decision_leakage(rows[:, 0], np.asarray(self._scores), rows[:, j + 1])
            engine.state.metrics[f"val_decision_leakage_{spec.name}"] = float("nan") if leak is None else leak
        targets = [self.last_file] if self.last_file else []
        if self.balanced_file and value is not None and value > self.best:
            self.best = value
            targets.append(self.balanced_file)
        key = engine.state.metrics.get(self.key_metric) if self.key_metric else None
        if key is not None and float(key) > self.best_key:  # strictly better, as MONAI's CheckpointSaver
            self.best_key = float(key)
            targets.append(self.key_file)
        state = self.network.state_dict()
        for name in targets if rank() == 0 else []:
            save_weights(state, self.save_dir / name)
        logging.getLogger("mimmx").info(
            f"epoch {engine.state.epoch}: group-balanced val AUROC {engine.state.metrics[self.metric_name]:.4f} "
            f"(best {self.best:.4f})"
        )
