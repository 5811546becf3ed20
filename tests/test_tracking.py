"""``monai.bundle run training --tracking mlflow``: the run read back from the local MLflow store has the bundle's
parameters, per-epoch losses, the MI per factor, the validation metrics and the trained models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import run
from monai.utils import path_to_sqlite_uri

mlflow = pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SMALL = {
    "cohort#synthetic": {"generator": "cxr", "num_patients": 1200, "image_size": 32, "rho": 0.5},
    "splits#sizes": {"train": 96, "val": 32, "test_id": 32, "test_inverted": 32, "test_balanced": 32},
    "image_size": [32, 32],
    "batch_size": 16,
    "max_epochs": 2,
}
FACTORS = ("sex", "age", "devices")


def test_training_run_is_recorded_in_mlflow(tmp_path):
    config = str(BUNDLES / "mimmx_cxr" / "configs" / "train.yaml")
    run("training", bundle_root=str(tmp_path), config_file=config, tracking="mlflow", **SMALL)

    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(str(tmp_path / "eval" / "mlruns.db")))
    experiment = client.get_experiment_by_name("monai_experiment")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    recorded = runs[0]
    run_id = recorded.info.run_id

    params = recorded.data.params
    assert params["max_epochs"] == "2" and params["batch_size"] == "16" and params["protocol"] == "all"
    assert params["loss_terms"] == "['head_ce', 'factor_mi']"  # the method: MIMM-X's terms
    assert params["factors"] == str(list(FACTORS)) and params["splits.sizes.train"] == "96"

    def per_epoch(name: str) -> list[float]:
        history = client.get_metric_history(run_id, name)
        assert [m.step for m in history] == [1, 2], name
        return [m.value for m in history]

    history = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert per_epoch("train_ce_causal") == pytest.approx([h["ce_causal"] for h in history])
    assert per_epoch("train_epoch_loss") == pytest.approx([h["loss"] for h in history])
    for factor in FACTORS:
        mi = per_epoch(f"train_mi_causal/{factor}/target")
        assert mi == pytest.approx([h[f"mi_causal|{factor}|target"] for h in history])
    assert per_epoch("val_auc") == pytest.approx([h["val_auc"] for h in history])
    per_epoch("val_balanced_auc")
    assert len(client.get_metric_history(run_id, "train_loss")) == 2 * 6  # every iteration: 96 / 16 per epoch

    models = {a.path for a in client.list_artifacts(run_id, "models")}
    assert {"models/model.pt", "models/model_last.pt", "models/history.json"} <= models
    assert any(a.path.endswith(".json") for a in client.list_artifacts(run_id)), "the executed config"


def test_without_tracking_nothing_is_recorded(tmp_path):
    config = str(BUNDLES / "mimmx_cxr" / "configs" / "train.yaml")
    run("training", bundle_root=str(tmp_path), config_file=config, **{**SMALL, "max_epochs": 1})
    assert (tmp_path / "models" / "model.pt").is_file()
    assert not (tmp_path / "eval" / "mlruns.db").exists()
