"""Both bundles end to end through their own configs: train, evaluate, infer, verify, export, resume, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run, verify_net_in_out

from mimmx.checkpoints import hash_file, sha256_file
from mimmx.errors import CheckpointError, ConfigError, DataError
from mimmx.export import export_torchscript
from mimmx.methods import method_overrides

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def _smoke_test(name: str) -> dict:
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_file(str(BUNDLES / f"mimmx_{name}" / "configs" / "smoke_test.yaml"))


# the shipped configs, only smaller: a small cohort, small images, one epoch (each bundle's configs/smoke_test.yaml)
SMALL = {name: _smoke_test(name) for name in ("cxr", "mri")}
# what the inference config needs to match the small training run, and the images it predicts on by default
INFERENCE_SMALL = {"cxr": {"image_size": [32, 32]}, "mri": {"pixdim": [8.0, 8.0, 8.0], "spatial_size": [16, 16, 16]}}
DEFAULT_INPUTS = {
    "cxr": "CheXpert-v1.0-small/train/patient000*/study1/*frontal.png",
    "mri": "mri_cohort/sub-000*/anat/*_T1w.nii.gz",
}
CLASSES = {"cxr": ("no_effusion", "effusion"), "mri": ("healthy", "atrophy")}
FACTORS = {"cxr": {"sex", "age", "devices"}, "mri": {"field_strength", "site", "sex"}}
EXPORT_INPUT = {"cxr": (2, 1, 64, 64), "mri": (2, 1, 32, 32, 32)}


def _configs(name: str) -> dict[str, str]:
    root = BUNDLES / f"mimmx_{name}" / "configs"
    return {
        k: str(root / f"{k}.{'json' if k == 'metadata' else 'yaml'}")
        for k in ("train", "evaluate", "inference", "metadata")
    }


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@pytest.fixture(scope="module", params=["cxr", "mri"])
def trained(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    root = tmp_path_factory.mktemp(f"{name}_bundle")
    run("training", bundle_root=str(root), config_file=_configs(name)["train"], **SMALL[name])
    return name, root


def test_training_writes_checkpoints_history_and_datalist(trained):
    name, root = trained
    assert (root / "models" / "model.pt").is_file()
    assert list((root / "models").glob("training_checkpoint_epoch=1.pt"))
    history = json.loads((root / "eval" / "history.json").read_text())
    assert history[0]["epoch"] == 1 and "val_auc" in history[0]
    assert any(k.startswith("mi_causal|") for k in history[0])
    datalist = json.loads((root / "data" / "datalist.json").read_text())
    sizes = SMALL[name]["splits#sizes"]
    assert {s: len(datalist[s]) for s in sizes} == sizes
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("heads.causal") for k in state), "model.pt must be a flat state dict"


def test_evaluate_writes_metrics_and_report_for_every_test_split_and_factor(trained):
    name, root = trained
    cfg = _configs(name)
    quick = {"bootstrap_samples": 50, "posthoc_mi_steps": 20}
    # the t-SNE switch, one way per bundle: the CXR bundle as shipped (off), the MRI bundle turned on
    embeddings = {"report_embeddings": True} if name == "mimmx_mri" else {}
    run(
        "evaluating",
        bundle_root=str(root),
        config_file=[cfg["train"], cfg["evaluate"]],
        **SMALL[name],
        **quick,
        **embeddings,
    )
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"test_id", "test_inverted", "test_balanced"}
    for split, result in metrics["splits"].items():
        assert result["n"] == SMALL[name]["splits#sizes"][split]
        auroc = result["causal"]["auroc"]
        assert 0.0 <= auroc["value"] <= 1.0 and auroc["ci"][0] <= auroc["value"] <= auroc["ci"][1]
        assert set(result["factors"]) == FACTORS[name]
        for factor in result["factors"].values():
            assert 0.0 <= factor["head_auroc"] <= 1.0
            assert sum(c["n"] for c in factor["cells"]) == result["n"]
    partitions = {"causal"} | FACTORS[name]
    assert set(metrics["probes"]["logistic"]) == partitions
    assert all(set(row) == partitions for row in metrics["probes"]["knn"].values())
    assert len(metrics["posthoc_mi"]["pairs"]) == len(partitions) * (len(partitions) - 1) // 2
    for key in ("test_id_auroc", "test_inverted_auroc", "test_balanced_auroc", "worst_group_auroc"):
        assert key in metrics["summary"]
    assert set(metrics["summary"]["leakage_auc"]) == FACTORS[name]
    leakage, ci = metrics["summary"]["decision_leakage"], metrics["summary"]["decision_leakage_ci"]
    assert set(ci) == set(metrics["summary"]["decision_leakage_null"]) == FACTORS[name]
    for factor, (lo, hi) in ci.items():  # a folded AUROC: every bound is 0.5 or more, and so is the null's quantile
        assert 0.5 <= lo < hi <= 1.0 and 0.5 <= leakage[factor] <= 1.0
        assert 0.5 <= metrics["summary"]["decision_leakage_null"][factor] <= 1.0
    report = (root / "eval" / "report.md").read_text()
    assert "test_inverted" in report and "figures/leakage.png" in report
    assert (root / "eval" / "figures" / "roc.png").is_file()
    drawn = sorted(p.name for p in (root / "eval" / "figures").glob("embedding_*.png"))
    if embeddings:
        assert drawn == sorted(f"embedding_{p}.png" for p in partitions) and "## Feature embeddings" in report
        assert "`report_embeddings: true`" not in report
    else:
        assert drawn == [] and "`report_embeddings: true`" in report


@pytest.mark.parametrize(
    "method",
    [
        "resample",
        "subsample",
        "dfr",
        "groupdro",
        "adversarial",
        "cond_adversarial",
        "dcor",
        "mimm_single",
        "mimmx_pairwise",
        "mimmx_decision_gap",
        "mimmx_resampled",
        "mimmx_resampled_held_out",
        "mimmx_resampled_held_out_bn",
        "oracle",
    ],
)
def test_every_baseline_trains_through_the_bundle(method, tmp_path):
    overrides = method_overrides(method)
    run("training", bundle_root=str(tmp_path), config_file=_configs("cxr")["train"], **SMALL["cxr"], **overrides)
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    heads = {k.split(".")[1] for k in state if k.startswith("heads.")}
    assert heads == ({"causal", "sex"} if method == "mimm_single" else {"causal"} | FACTORS["cxr"])
    checkpoint = next((tmp_path / "models").glob("training_checkpoint_epoch=1.pt"))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["objective"]
    if method == "groupdro":
        assert "group_dro.dro.q" in saved and not any(k.startswith("head_ce") for k in saved)
    if method in ("adversarial", "cond_adversarial"):
        first_layer = saved["adversary.adversary.heads.sex.0.weight"]
        assert first_layer.shape[1] == (32 + 2 if method == "cond_adversarial" else 32)
    if method == "cond_adversarial":
        assert saved["adversary._extra_state"]["optimizer"]["state"], "the extra adversary steps ran"
    if method == "dfr":  # the causal head of model.pt was refit after training; the encoder was not touched
        trained = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
        assert not torch.allclose(state["heads.causal.weight"], trained["heads.causal.weight"])
        assert all(torch.equal(state[k], trained[k]) for k in trained if k.startswith("backbone."))


def _inference_overrides(name: str) -> dict:
    """The small run's sizes, and the training config the inference config reads its factors from."""
    return {**INFERENCE_SMALL[name], "train_config": _configs(name)["train"]}


def test_inference_writes_one_prediction_per_image(trained):
    name, root = trained
    images = sorted((root / "data").glob(DEFAULT_INPUTS[name]))
    run("run", bundle_root=str(root), config_file=_configs(name)["inference"], **_inference_overrides(name))
    with open(root / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    negative, positive = CLASSES[name]
    assert len(rows) == len(images) > 0
    assert set(rows[0]) == {"image", f"prob_{negative}", f"prob_{positive}", "pred_class"}
    for row in rows:
        p0, p1 = float(row[f"prob_{negative}"]), float(row[f"prob_{positive}"])
        assert p0 + p1 == pytest.approx(1.0, abs=1e-4)
        assert row["pred_class"] == (positive if p1 > p0 else negative)


def test_inference_over_a_mixed_folder_scores_the_good_files_and_lists_the_others(trained, tmp_path):
    from test_input_checks import mixed_mri_folder, mixed_xray_folder

    name, root = trained
    folder = tmp_path / "incoming"
    if name == "cxr":
        good, refused = mixed_xray_folder(folder)
    else:
        volumes = sorted((root / "data").glob(DEFAULT_INPUTS[name]))[:3]
        good, refused = [p.name for p in volumes], mixed_mri_folder(folder, volumes)
    out = tmp_path / "out"
    overrides = {**_inference_overrides(name), "output_dir": str(out)}
    run(
        "run", bundle_root=str(root), config_file=_configs(name)["inference"], input_glob=str(folder / "*"), **overrides
    )
    with open(out / "predictions.csv") as f:
        assert sorted(Path(r["image"]).name for r in csv.DictReader(f)) == sorted(good)
    with open(out / "errors.csv") as f:
        errors = {Path(r["image"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(errors) == set(refused)
    assert all(reason in errors[file] for file, reason in refused.items())
    # nothing scorable: a non-zero exit (an exception here), errors listed, and no predictions.csv left behind
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    for file in refused:
        (only_bad / file).write_bytes((folder / file).read_bytes())
    with pytest.raises(Exception) as info:
        run("run", bundle_root=str(root), config_file=_configs(name)["inference"], input_glob=str(only_bad / "*"),
            **overrides)  # fmt: skip
    assert "could be scored" in str(_root_cause(info.value))
    assert not (out / "predictions.csv").exists()
    assert len((out / "errors.csv").read_text().strip().splitlines()) == 1 + len(refused)


def test_verify_net_in_out_and_torchscript_export(trained):
    name, root = trained
    cfg = _configs(name)
    verify_net_in_out(
        net_id="network_def", meta_file=cfg["metadata"], config_file=cfg["inference"], train_config=cfg["train"]
    )
    ts = export_torchscript(root, config_file=cfg["inference"], meta_file=cfg["metadata"], train_config=cfg["train"])
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(ts, _extra_files=extra)
    assert json.loads(extra["metadata.json"])["model_sha256"] == sha256_file(root / "models" / "model.pt")
    x = torch.rand(*EXPORT_INPUT[name])
    assert scripted(x).shape == (2, 2)
    # the exported module carries the trained weights: it computes what model.pt computes
    from mimmx.networks import MIMMXNet

    net = MIMMXNet(
        spatial_dims=2 if name == "cxr" else 3,
        in_channels=1,
        num_classes=2,
        factors=_train_factors(name),
        backbone="small_cnn",
        partition_dim=32,
    ).eval()
    net.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    assert torch.allclose(scripted(x), net(x), atol=1e-5)


def _train_factors(name: str) -> list:
    from mimmx.config import config_value

    return config_value(_configs(name)["train"], "factors")


def test_export_with_a_factor_list_that_does_not_fit_fails_by_name(trained, tmp_path):
    name, root = trained
    cfg = _configs(name)
    fewer = _train_factors(name)[:1]
    with pytest.raises(CheckpointError, match=r"model\.pt: the weights do not fit.*unexpected keys"):
        export_torchscript(
            root, filepath=tmp_path / "m.ts", config_file=cfg["inference"], meta_file=cfg["metadata"], factors=fewer
        )
    assert not (tmp_path / "m.ts").exists()


def test_a_changed_model_file_is_refused_by_name(trained, tmp_path):
    name, root = trained
    model = root / "models" / "model.pt"
    assert hash_file(model).read_text().split()[0] == sha256_file(model)
    copy = tmp_path / "model.pt"
    copy.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)
    hash_file(copy).write_bytes(hash_file(model).read_bytes())
    with pytest.raises(Exception) as info:
        run(
            "run",
            bundle_root=str(root),
            config_file=_configs(name)["inference"],
            model_file=str(copy),
            **_inference_overrides(name),
        )
    cause = _root_cause(info.value)
    assert isinstance(cause, CheckpointError) and "does not match" in str(cause) and str(copy) in str(cause)
    assert not (root / "eval" / "predictions.csv").exists(), "a failed run leaves no predictions behind"


def test_workflows_pass_the_zoo_property_checks(trained):
    """What the model zoo's unit tests check: train, train + evaluate (as a train workflow), inference."""
    from monai.bundle import ConfigWorkflow

    name, root = trained
    cfg = _configs(name)
    for files, kind, overrides in (
        (cfg["train"], "train", SMALL[name]),
        ([cfg["train"], cfg["evaluate"]], "train", SMALL[name]),
        (cfg["inference"], "infer", _inference_overrides(name)),
    ):
        workflow = ConfigWorkflow(
            config_file=files, meta_file=cfg["metadata"], workflow_type=kind, bundle_root=str(root), **overrides
        )
        workflow.initialize()
        assert not workflow.check_properties(), f"{files}: missing required properties"
        if kind == "train":
            assert workflow.val_interval == 1, "ValidationHandler's interval is the val_interval id"


def test_resume_from_training_checkpoint(trained):
    name, root = trained
    ckpt = next((root / "models").glob("training_checkpoint_epoch=1.pt"))
    before = json.loads((root / "eval" / "history.json").read_text())
    overrides = {**SMALL[name], "max_epochs": 2, "train#resume_from": "latest"}
    run("training", bundle_root=str(root), config_file=_configs(name)["train"], **overrides)
    history = json.loads((root / "eval" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2], "a resumed run continues at epoch 2 and keeps epoch 1"
    assert history[0] == before[0]
    ckpt = next((root / "models").glob("training_checkpoint_epoch=2.pt"))
    assert not (root / "models" / "training_checkpoint_epoch=1.pt").exists(), "only the newest checkpoint is kept"
    objective = torch.load(ckpt, map_location="cpu", weights_only=True)["objective"]
    assert objective["factor_mi._extra_state"]["optimizer"]["state"], "critics' optimiser state is checkpointed"
    assert any(k.startswith("factor_mi.critics.") for k in objective)
    assert int(objective["factor_mi.queue.filled"]) > 0, "the feature queue is checkpointed"


@pytest.mark.parametrize("name", ["cxr", "mri"])
def test_no_factor_is_a_clear_config_error(tmp_path, name):
    with pytest.raises(Exception) as info:
        run(
            "training", bundle_root=str(tmp_path), config_file=_configs(name)["train"], **{**SMALL[name], "factors": []}
        )
    cause = _root_cause(info.value)
    assert isinstance(cause, ConfigError) and "K = 0" in str(cause)
    assert not (tmp_path / "data" / "datalist.json").exists()


@pytest.mark.parametrize("name", ["cxr", "mri"])
def test_inference_without_images_names_the_pattern(tmp_path, name):
    with pytest.raises(Exception) as info:
        run("run", bundle_root=str(tmp_path), config_file=_configs(name)["inference"], input_glob=str(tmp_path / "*.x"))
    cause = _root_cause(info.value)
    assert isinstance(cause, DataError) and str(tmp_path) in str(cause)
