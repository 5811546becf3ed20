"""The evaluation report: tables with "n/a" for missing values, figures that exist and open, optional sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from mimmx.report import format_summary, write_report

SPLITS = ("test_id", "test_inverted", "test_balanced")
FACTORS = {"sex": ("Female", "Male"), "devices": ("no_device", "device")}
TARGETS = ("no_effusion", "effusion")


def _m(value: float | None, half: float = 0.04) -> dict:
    if value is None:
        return {"value": None, "ci": None}
    return {"value": value, "ci": [max(0.0, value - half), min(1.0, value + half)]}


def _metrics() -> dict:
    rng = np.random.default_rng(0)
    splits = {}
    for s, split in enumerate(SPLITS):
        base = 0.9 - 0.08 * s
        factors = {}
        for f, values in FACTORS.items():
            subgroups = [
                {"value": v, "n": 100, "auroc": _m(base - 0.05 * i), "accuracy": _m(base - 0.1)}
                for i, v in enumerate(values)
            ]
            cells = [
                {"target": t, "value": v, "n": 50, "accuracy": _m(float(rng.uniform(0.5, 0.95)))}
                for t in TARGETS
                for v in values
            ]
            factors[f] = {
                "subgroups": subgroups,
                "cells": cells,
                "worst_group_auroc": base - 0.05,
                "auroc_gap": 0.05,
                "worst_group_accuracy": base - 0.1,
                "accuracy_gap": 0.02,
                "head_auroc": 0.95 if f == "sex" else None,  # no "devices" partition
                "switched_auroc": _m(0.5 + 0.1 * s),
            }
        fpr = np.linspace(0, 1, 21)
        splits[split] = {
            "n": 200,
            "causal": {
                "n": 200,
                "auroc": _m(base),
                "auprc": _m(base - 0.02),
                "accuracy": _m(base - 0.1),
                "balanced_accuracy": _m(base - 0.1),
                "ece": _m(0.05, 0.01),
            },
            "roc": {"fpr": fpr.tolist(), "tpr": (fpr ** (0.3 + s * 0.2)).tolist()},
            "factors": factors,
            "worst_group_auroc": base - 0.05,
            "worst_group_accuracy": base - 0.1,
        }
    # the one null: AUPRC on test_inverted
    splits["test_inverted"]["causal"]["auprc"] = {"value": None, "ci": None}
    splits["test_balanced"]["factors"]["sex"]["subgroups"][1]["auroc"] = _m(None)
    labels = ["causal", *FACTORS]
    probe = {p: {lab: (0.9 if p == lab else 0.55) for lab in labels} for p in ("causal", "sex")}
    probe["sex"]["devices"] = None
    return {
        "factors": list(FACTORS),
        "partitions": ["causal", "sex"],
        "target_names": list(TARGETS),
        "splits": splits,
        "probes": {"split": "test_balanced", "folds": 5, "n": 200, "logistic": probe, "knn": probe},
        "posthoc_mi": {"fit_split": "val", "eval_split": "test_balanced", "pairs": {"causal|sex": 0.0123}},
        "decision_leakage": {"sex": 0.628, "devices": 0.541},
        "decision_leakage_ci": {"sex": [0.601, 0.652], "devices": None},
        "decision_leakage_null": {"sex": 0.534, "devices": 0.533},
        "summary": {
            "test_id_auroc": 0.9,
            "test_inverted_auroc": 0.82,
            "test_balanced_auroc": 0.74,
            "worst_group_auroc": 0.69,
            "leakage_auc": {"sex": 0.55, "devices": 0.55},
        },
    }


def _history() -> list[dict]:
    return [
        {
            "epoch": e,
            "epoch_seconds": 1.5,
            "loss": 2.0 / e,
            "ce_causal": 0.7 / e,
            "ce_sex": 0.6 / e,
            "mi_causal|sex": 0.3 / e,
            "weight_causal|sex": 1.0,
            "mi_total": 0.3 / e,
            "mi_scale": 0.5,
            "critic_loss": -0.1 * e,
            "val_auc": 0.7 + 0.04 * e,
        }
        for e in range(1, 6)
    ]


def _features(path: Path) -> Path:
    rng = np.random.default_rng(1)
    n = 120
    y = rng.integers(0, 2, n)
    sex = rng.integers(0, 2, n)
    dev = rng.integers(0, 2, n)
    np.savez(
        path,
        part_causal=rng.normal(size=(n, 8)) + y[:, None],
        part_sex=rng.normal(size=(n, 8)) + sex[:, None],
        label_causal=y,
        label_sex=sex,
        label_devices=dev,
        label_names_sex=np.array(["Female", "Male"]),
        label_names_devices=np.array("no_device,device"),
    )
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(_metrics()))
    history = tmp_path / "history.json"
    history.write_text(json.dumps(_history()))
    return metrics, history, _features(tmp_path / "features.npz")


def _png_ok(path: Path) -> None:
    assert path.is_file(), path
    image = imread(path)
    assert image.shape[1] > 300 and image.shape[0] > 200, (path, image.shape)


def test_full_report(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    metrics, history, features = inputs
    out = tmp_path / "report"
    path = Path(
        write_report(str(metrics), str(out), history_file=str(history), features_file=str(features), embeddings=True)
    )
    assert path == out / "report.md"
    text = path.read_text()
    assert "MI (nats)" in text and "in nats" in text  # post-hoc MI carries its unit
    # the worst_group_* keys are named for what they are: the lowest factor subgroup (AUROC), the lowest cell (accuracy)
    assert "worst factor-subgroup AUROC" in text and "worst target×factor cell accuracy" in text
    assert "worst-group" not in text
    assert "`worst_group_auroc` (worst factor-subgroup AUROC on test_balanced): 0.690" in text  # key kept, named
    assert "report_embeddings" not in text  # drawn, so no hint on how to turn them on
    for name in (*SPLITS, *FACTORS, "n/a", "## Leakage probes", "## Post-hoc mutual information"):
        assert name in text, name
    assert "causal / sex" in text  # the pair is not left as a raw "|" that would split the table cell
    assert "0.900 [0.860, 0.940]" in text  # value with CI
    assert "| sex | 0.628 [0.601, 0.652] | 0.534 |" in text and "| devices | 0.541 | 0.533 |" in text
    figures = ["group_auroc", "group_accuracy", "roc", "leakage", "training", "embedding_causal", "embedding_sex"]
    for name in figures:
        assert f"](figures/{name}.png)" in text, name
        _png_ok(out / "figures" / f"{name}.png")
    assert not list((out / "figures").glob(".*"))  # no temporary file left behind

    # no history, no features, no probes: those sections and figures are left out, stale figures removed
    data = json.loads(metrics.read_text())
    data["probes"] = None
    data["posthoc_mi"] = None
    data["splits"]["test_id"]["roc"] = None
    metrics.write_text(json.dumps(data))
    text = Path(write_report(str(metrics), str(out), title="Minimal")).read_text()
    assert text.startswith("# Minimal")
    data["decision_leakage"] = None  # a multi-class task or an older metrics file: no section
    metrics.write_text(json.dumps(data))
    text = Path(write_report(str(metrics), str(out), title="Minimal")).read_text()
    gone_sections = ("## Decision leakage", "## Leakage probes", "## Post-hoc", "## Training history")
    for gone in (*gone_sections, "## Feature embeddings", "leakage.png"):
        assert gone not in text, gone
    for name in ("leakage", "training", "embedding_causal", "embedding_sex"):
        assert not (out / "figures" / f"{name}.png").exists(), name
    for name in ("group_auroc", "group_accuracy", "roc"):
        _png_ok(out / "figures" / f"{name}.png")
    assert all(s in text for s in SPLITS)


def test_embeddings_are_off_by_default(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Without ``embeddings=True`` no t-SNE runs; the report says how to turn it on, and old t-SNE figures go."""
    metrics, _, features = inputs
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "embedding_causal.png").write_bytes(b"stale")
    text = Path(write_report(str(metrics), str(out), features_file=str(features))).read_text()
    assert "## Feature embeddings" in text and "were not drawn" in text
    assert "`report_embeddings: true`" in text and "mimmx report METRICS_JSON --embeddings" in text
    assert not list((out / "figures").glob("embedding_*.png"))
    # no features file at all: no embedding section, no hint
    assert "## Feature embeddings" not in Path(write_report(str(metrics), str(out))).read_text()


def test_format_summary() -> None:
    text = format_summary(_metrics())
    lines = text.splitlines()
    assert "switched sex" in lines[0] and "switched devices" in lines[0]
    assert "worst factor-subgroup AUROC" in lines[0]
    for split in SPLITS:
        assert any(line.startswith(split) for line in lines), split
    assert "0.900 [0.860, 0.940]" in text
    leakage = lines[-1]
    assert leakage.startswith("decision leakage of the causal output inside each class (0.5 = none; no dependence")
    assert "up to 0.534): sex 0.628 [0.601, 0.652], devices 0.541" in leakage


def test_sparse_metrics_do_not_crash(tmp_path: Path) -> None:
    """Nulls everywhere (no CI, no ROC, empty subgroups, null probe cells) give "n/a", not an exception."""
    metrics = {
        "factors": ["sex"],
        "partitions": ["causal"],
        "splits": {"test_balanced": {"n": None, "causal": {"auroc": None}, "roc": None, "factors": {"sex": {}}}},
        "probes": {"logistic": {"causal": {"causal": None, "sex": None}}},
        "posthoc_mi": None,
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    text = Path(write_report(str(path), str(tmp_path / "out"))).read_text()
    assert "n/a" in text and "test_balanced" in text
    _png_ok(tmp_path / "out" / "figures" / "leakage.png")
    assert "test_balanced" in format_summary(metrics)
