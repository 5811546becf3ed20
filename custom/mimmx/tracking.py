"""What ``--tracking mlflow`` adds to an MLflow run beyond MONAI's defaults: the bundle's settings and its models.

``python -m monai.bundle run training ... --tracking mlflow`` appends MONAI's MLFlowHandler to ``train#handlers`` and
``validate#handlers`` (``monai.bundle.utils.DEFAULT_MLFLOW_SETTINGS``). That records the per-iteration loss, every
epoch's ``engine.state.metrics`` (the trainer's losses and MI per factor from
:class:`mimmx.handlers.TrainingHistory`, the validator's metrics) and the executed config, but of the parameters
only ``max_epochs`` and ``epoch_length``, and no model. :class:`TrackedRunExtras`, listed in ``train#handlers``
before it, finds that handler on the trainer and adds the settings that tell runs apart as MLflow parameters and the
trained model files as artifacts of the same run. Without ``--tracking`` it does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events
from monai.utils import optional_import

MLFlowHandler, _has_handler = optional_import("monai.handlers", name="MLFlowHandler")

__all__ = ["TrackedRunExtras", "mlflow_handler"]


def mlflow_handler(engine: Engine) -> Any | None:
    """The MLFlowHandler attached to ``engine`` (found through its STARTED handlers), or None."""
    if not _has_handler:
        return None
    for handler, *_ in engine._event_handlers.get(Events.STARTED, []):
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, MLFlowHandler):
            return owner
    return None


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: 'a.b' keys, values as text (MLflow keeps at most 6000 characters)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


class TrackedRunExtras:
    """Adds ``params`` (MLflow parameters) and ``artifacts`` (files) to the run of the trainer's MLFlowHandler.

    Args:
        params: the settings to record, nested mappings flattened to ``a.b`` names.
        artifacts: files to record when training completes (the model files, history.json); absent ones are skipped.
        artifact_path: folder of the artifacts inside the run.
    """

    def __init__(
        self, params: Mapping[str, Any] | None = None, artifacts: Sequence[str] = (), artifact_path: str = "models"
    ) -> None:
        self.params = _flat(params or {})
        self.artifacts = [str(a) for a in artifacts]
        self.artifact_path = artifact_path
        self._params_logged = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._log_params)  # after MLFlowHandler opened its run
        engine.add_event_handler(Events.COMPLETED, self._log_artifacts)  # before MLFlowHandler closes it

    def _run(self, engine: Engine) -> tuple[Any, str] | None:
        tracker = mlflow_handler(engine)
        if tracker is None or tracker.cur_run is None:
            return None
        return tracker.client, tracker.cur_run.info.run_id

    def _log_params(self, engine: Engine) -> None:
        run = None if self._params_logged else self._run(engine)
        if run is None:
            return
        from mlflow.entities import Param

        client, run_id = run
        logged = client.get_run(run_id).data.params  # a resumed run keeps its parameters; MLflow refuses changes
        params = [Param(k, v) for k, v in self.params.items() if k not in logged]
        if params:
            client.log_batch(run_id, params=params)
        self._params_logged = True

    def _log_artifacts(self, engine: Engine) -> None:
        run = self._run(engine)
        if run is None:
            return
        client, run_id = run
        for path in self.artifacts:
            if os.path.isfile(path):
                client.log_artifact(run_id, path, artifact_path=self.artifact_path)
            else:
                logging.getLogger("mimmx").warning(f"tracking: {path} does not exist; not recorded in the MLflow run.")
