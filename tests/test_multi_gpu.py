"""configs/multi_gpu_train.yaml: torchrun with 2 CPU processes (gloo) trains what 1 process with the same global
batch trains.

The comparison is exact up to floating point (tolerance 1e-4 on every number in history.json and on the outputs of
model.pt) when the network has no BatchNorm: every loss term sees the gathered global batch and the gradient of the
own rows is scaled so that DDP's mean is the one-process gradient. The bundles' default small_cnn uses BatchNorm,
whose batch statistics are per process (SyncBatchNorm needs GPUs), so the test sets ``norm: INSTANCE``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from mimmx import distributed
from mimmx.errors import ConfigError

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TOLERANCE = 1e-4

SMALL = {
    "cxr": {
        "cohort#synthetic": {"generator": "cxr", "num_patients": 1200, "image_size": 32, "rho": 0.5},
        "splits#sizes": {"train": 96, "val": 32, "test_id": 32, "test_inverted": 32, "test_balanced": 32},
        "image_size": [32, 32],
        "batch_size": 16,
    },
}


def _torchrun(nproc: int, name: str, root: Path, overrides: Path) -> subprocess.CompletedProcess:
    configs = BUNDLES / f"mimmx_{name}" / "configs"
    files = [str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml"), str(overrides)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += ["-m", "monai.bundle", "run", "training", "--bundle_root", str(root), "--config_file", str(files)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_two_gloo_processes_train_what_one_process_trains(tmp_path):
    name = "cxr"  # the MRI bundle's multi_gpu_train.yaml has the same ids and values (tests/test_config_parity.py)
    overrides = tmp_path / "small.yaml"
    small = {
        **SMALL[name],
        "max_epochs": 2,
        "dataset_dir": str(tmp_path / "data"),  # shared: the first run writes it, the second reuses it
        "cohort#synthetic#into_dataset_dir": True,  # a folder outside the bundle, generated on purpose
        "augmentation_transforms": [],
        "network_def#backbone_kwargs": {"norm": "INSTANCE"},
    }
    overrides.write_text(yaml.safe_dump(small))
    results = {}
    for nproc in (1, 2):
        done = _torchrun(nproc, name, tmp_path / f"run{nproc}", overrides)
        assert done.returncode == 0, (
            f"torchrun with {nproc} process(es) failed:\n{done.stdout[-3000:]}{done.stderr[-6000:]}"
        )
        root = tmp_path / f"run{nproc}"
        history = json.loads((root / "eval" / "history.json").read_text())
        weights = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
        results[nproc] = history, weights
    (one, one_weights), (two, two_weights) = results[1], results[2]
    assert [h["epoch"] for h in one] == [h["epoch"] for h in two] == [1, 2]
    for a, b in zip(one, two):
        keys = {k for k in a if k != "epoch_seconds"}
        assert keys == set(b) - {"epoch_seconds"}
        assert any(k.startswith("mi_causal|") for k in keys) and "val_auc" in keys
        for key in sorted(keys):
            assert b[key] == pytest.approx(a[key], abs=TOLERANCE), f"epoch {a['epoch']} {key}"
    # the two models compute the same function (weights that no loss reaches, such as a convolution's bias before
    # InstanceNorm, take Adam steps on rounding noise, so the outputs are compared rather than every weight)
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / f"mimmx_{name}" / "configs" / "train.yaml"), str(overrides)])
    images = torch.rand(
        4, 1, *small.get("image_size", small.get("spatial_size")), generator=torch.Generator().manual_seed(0)
    )
    outputs = []
    for weights in (one_weights, two_weights):
        network = parser.get_parsed_content("network_def", lazy=False).eval()
        network.load_state_dict(weights)
        with torch.no_grad():
            outputs.append(torch.cat([network(images), network(images, features=True)], dim=1))
    assert torch.allclose(outputs[0], outputs[1], atol=TOLERANCE), (outputs[0] - outputs[1]).abs().max()
    for nproc in (1, 2):  # rank 0 alone writes the checkpoints
        models = tmp_path / f"run{nproc}" / "models"
        written = ["model.pt", "model_balanced_val.pt", "model_last.pt", "training_checkpoint_epoch=2.pt"]
        # each with its SHA-256 beside it
        assert sorted(p.name for p in models.iterdir()) == sorted(written + [f"{n}.sha256" for n in written])


def test_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.per_rank_batch_size(12) == 4
    with pytest.raises(ConfigError, match=r"batch_size: the global batch of 16 images does not split evenly over 3"):
        distributed.per_rank_batch_size(16)


def test_sync_batchnorm_keeps_the_checkpoint_layout():
    """On GPUs multi_gpu_train.yaml converts BatchNorm to SyncBatchNorm in place: model.pt must still load into the
    plain network of inference.yaml, and evaluation (no synchronisation) must compute the same."""
    from mimmx.networks import MIMMXNet

    factors = [{"name": "sex", "classes": [0, 1]}]
    plain = MIMMXNet(2, 1, 2, factors, partition_dim=4).eval()
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(MIMMXNet(2, 1, 2, factors, partition_dim=4)).eval()
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    plain.load_state_dict(converted.state_dict(), strict=True)
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(images), converted(images))
