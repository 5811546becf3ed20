"""The chest X-ray bundle end to end through its own configs: train, evaluate, infer, verify, export, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mimmx.errors import ConfigError, DataError
from monai.bundle import ckpt_export, run, verify_net_in_out

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mimmx_cxr"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.yaml")
EVALUATE = str(CONFIGS / "evaluate.yaml")
INFERENCE = str(CONFIGS / "inference.yaml")
META = str(CONFIGS / "metadata.json")

# a small cohort and model size: the shipped configs, only smaller
SMALL = {
    "cohort#synthetic": {"generator": "cxr", "num_patients": 1200, "image_size": 32, "rho": 0.5},
    "splits#sizes": {"train": 96, "val": 32, "test_id": 32, "test_inverted": 32, "test_balanced": 32},
    "image_size": [32, 32],
    "batch_size": 16,
    "max_epochs": 1,
}


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cxr_bundle")
    run("training", bundle_root=str(root), config_file=TRAIN, **SMALL)
    return root


def test_training_writes_checkpoints_history_and_datalist(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert list((trained / "models").glob("training_checkpoint_epoch=1.pt"))
    history = json.loads((trained / "eval" / "history.json").read_text())
    assert history[0]["epoch"] == 1 and "mi_causal|sex" in history[0] and "val_auc" in history[0]
    datalist = json.loads((trained / "data" / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("train", "val", "test_id", "test_inverted", "test_balanced")] == [
        96,
        32,
        32,
        32,
        32,
    ]
    assert (trained / "data" / "CheXpert-v1.0-small" / "train.csv").is_file()
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("heads.causal") for k in state), "model.pt must be a flat state dict"


def test_evaluate_writes_metrics_for_every_test_split_and_factor(trained):
    run("evaluating", bundle_root=str(trained), config_file=[TRAIN, EVALUATE], **SMALL)
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"test_id", "test_inverted", "test_balanced"}
    for split in metrics["splits"].values():
        assert split["n"] == 32
        assert 0.0 <= split["causal"]["auc"] <= 1.0 and 0.0 <= split["causal"]["accuracy"] <= 1.0
        assert set(split["factors"]) == {"sex", "age", "devices"}
        assert all(0.0 <= f["head_auc"] <= 1.0 for f in split["factors"].values())
    for key in ("test_id_auc", "test_inverted_auc", "test_balanced_auc"):
        assert key in metrics["summary"]


def test_inference_writes_one_prediction_per_image(trained):
    images = sorted((trained / "data").glob("CheXpert-v1.0-small/train/patient000*/study1/*frontal.png"))
    run("run", bundle_root=str(trained), config_file=INFERENCE, image_size=[32, 32])
    with open(trained / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(images) > 0
    assert set(rows[0]) == {"image", "prob_no_effusion", "prob_effusion", "pred_class"}
    for row in rows:
        p0, p1 = float(row["prob_no_effusion"]), float(row["prob_effusion"])
        assert p0 + p1 == pytest.approx(1.0, abs=1e-4)
        assert row["pred_class"] == ("effusion" if p1 > p0 else "no_effusion")


def test_verify_net_in_out_and_torchscript_export(trained):
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=INFERENCE)
    ts = trained / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(trained / "models" / "model.pt"),
        meta_file=META,
        config_file=INFERENCE,
    )
    scripted = torch.jit.load(str(ts))
    x = torch.rand(2, 1, 64, 64)
    assert scripted(x).shape == (2, 2)


def test_resume_from_training_checkpoint(trained):
    ckpt = next((trained / "models").glob("training_checkpoint_epoch=1.pt"))
    run(
        "training",
        bundle_root=str(trained),
        config_file=TRAIN,
        **{**SMALL, "max_epochs": 2, "train#resume_from": str(ckpt)},
    )
    history = json.loads((trained / "eval" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [2], "a resumed run continues at epoch 2"


def test_no_factor_is_a_clear_config_error(tmp_path):
    with pytest.raises(Exception) as info:
        run("training", bundle_root=str(tmp_path), config_file=TRAIN, **{**SMALL, "factors": []})
    cause = _root_cause(info.value)
    assert isinstance(cause, ConfigError) and "K = 0" in str(cause)
    assert not (tmp_path / "data" / "datalist.json").exists()


def test_inference_without_images_names_the_pattern(tmp_path):
    with pytest.raises(Exception) as info:
        run("run", bundle_root=str(tmp_path), config_file=INFERENCE, input_glob=str(tmp_path / "*.png"))
    cause = _root_cause(info.value)
    assert isinstance(cause, DataError) and str(tmp_path) in str(cause)
