"""``docs/README.md`` of an exported bundle, in the model zoo's README template, from measured files only.

Every number comes from the run that produced the weights: ``eval/metrics.json`` (test splits, worst group,
leakage), ``eval/history.json`` (epochs and their time) and the data list's split report; nothing is typed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mimmx.factors import factor_names
from mimmx.names import TEST_SPLITS

__all__ = ["eval_metrics", "render_model_card"]

_TAGS = {
    2: "Classification, X-ray, Chest, Shortcut learning, MIMM-X",
    3: "Classification, MR, Brain, Shortcut learning",
}


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metadata's ``eval_metrics``: the causal AUROC per test split, worst-group AUROC, per-factor leakage."""
    summary = metrics.get("summary") or {}
    out = {
        f"{s}_auroc": round(float(summary[f"{s}_auroc"]), 4)
        for s in TEST_SPLITS
        if summary.get(f"{s}_auroc") is not None
    }
    if summary.get("worst_group_auroc") is not None:
        out["worst_group_auroc"] = round(float(summary["worst_group_auroc"]), 4)
    for factor, value in (summary.get("decision_leakage") or {}).items():
        if value is not None:
            out[f"decision_leakage_{factor}"] = round(float(value), 4)
    return out


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _performance(metrics: Mapping[str, Any]) -> list[str]:
    lines = ["| split | n | AUROC [95% CI] | accuracy | worst factor-subgroup AUROC |", "|---|---|---|---|---|"]
    for split in TEST_SPLITS:
        r = metrics.get("splits", {}).get(split)
        if r is None:
            continue
        auroc = r["causal"]["auroc"]
        ci = auroc.get("ci") or [None, None]
        lines.append(
            f"| {split} | {r['n']} | {_fmt(auroc['value'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] "
            f"| {_fmt(r['causal']['accuracy']['value'])} | {_fmt(r.get('worst_group_auroc'))} |"
        )
    leakage = (metrics.get("summary") or {}).get("decision_leakage") or {}
    if leakage:
        lines += [
            "",
            "Decision leakage on test_balanced (the causal output against each factor inside each class; 0.5 = the",
            "prediction does not use the factor): " + ", ".join(f"{k} {_fmt(v)}" for k, v in leakage.items()) + ".",
        ]
    return lines


def render_model_card(
    name: str,
    meta: Mapping[str, Any],
    train: Mapping[str, Any],
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    split_report: Mapping[str, Any],
    samples: Sequence[tuple[str, str]],
) -> str:
    """The README text. ``samples`` are ``(file name, true class)`` of the images under ``sample_data/``."""
    net = train.get("network_def", {})
    factors = ", ".join(factor_names(train.get("factors", []), config_id="train.yaml#factors"))
    sizes = split_report.get("sizes") or train.get("splits", {}).get("sizes", {})
    rho = split_report.get("rho", {})
    epochs = history[-1]["epoch"] if history else None
    seconds = sum(h.get("epoch_seconds", 0.0) for h in history)
    transforms = [t.get("_target_", "?").rpartition(".")[2] for t in train.get("preprocessing_transforms", [])]
    sample_rows = [f"| `sample_data/{f}` | {c} |" for f, c in samples]
    bundle_cmd = "python -m monai.bundle"
    text = [
        f"# {meta.get('name', name)}",
        "",
        "### **Authors**",
        str(meta.get("authors", "")),
        "",
        "### **Tags**",
        _TAGS.get(int(net.get("spatial_dims", 2)), "Classification"),
        "",
        "## **Model Description**",
        str(meta.get("description", "")),
        "",
        f"Network: `MIMMXNet` (`scripts/networks.py`), backbone `{net.get('backbone')}`, {net.get('spatial_dims')}D, "
        f"feature vector split into a causal partition and one partition per spurious factor ({factors}), "
        f"`partition_dim` {net.get('partition_dim')}. `forward` returns the causal logits; the bundle's "
        "postprocessing applies softmax. Factor labels are needed for training only.",
        "",
        "## **Data**",
        str(meta.get("data_source", "")),
        "",
        "Splits (bucket subsampling; no patient in two splits): "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + (f"; P(factor = target) in train/val/test_id: {rho}" if rho else "")
        + "; `test_inverted` flips each correlation, `test_balanced` makes target and factors independent.",
        "",
        "#### **Preprocessing**",
        " -> ".join(transforms) + f" (input: {meta.get('image_classes', '')}).",
        "",
        "#### **Sample data**",
        "Default inference (`configs/inference.json`) predicts these images, from the default cohort's test_balanced "
        "split:",
        "",
        "| file | true class |",
        "|---|---|",
        *sample_rows,
        "",
        "## **Performance**",
        f"The shipped weights (`models/model.pt`, best validation AUROC over {_fmt(epochs)} epochs, "
        f"{seconds / 60:.1f} min of training on a CPU) score on the default cohort's test splits:",
        "",
        *_performance(metrics),
        "",
        "## **MONAI Bundle Commands**",
        "Run from this folder (the zoo's convention: the bundle folder is on `sys.path`, its code is `scripts`), or "
        "set `PYTHONPATH` to it. Install the packages of `configs/metadata.json` first (`torch` first, pinned).",
        "",
        "```bash",
        "# train (writes the synthetic default cohort to data/ on first use)",
        f"{bundle_cmd} run training --config_file configs/train.json",
        "# evaluate models/model.pt on test_id / test_inverted / test_balanced -> eval/metrics.json, eval/report.md",
        f"{bundle_cmd} run evaluating --config_file \"['configs/train.json','configs/evaluate.json']\"",
        "# predict (sample_data/ by default; --input_glob '/data/**/*.png') -> eval/predictions.csv",
        f"{bundle_cmd} run --config_file configs/inference.json",
        "# check the network against the metadata, export TorchScript",
        f"{bundle_cmd} verify_net_in_out network_def --meta_file configs/metadata.json "
        "--config_file configs/inference.json",
        f"{bundle_cmd} ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt "
        "--meta_file configs/metadata.json --config_file configs/inference.json",
        "```",
        "",
        'In Python: `monai.bundle.load(name, bundle_dir=..., workflow_type="inference")` returns the network with '
        "these weights (the bundle folder must be on `sys.path`).",
        "",
        "## **System Configuration**",
        "Trained and evaluated on a CPU (no GPU needed at this size); the configs pick `cuda:0` when there is one.",
        "",
        "## **Limitations**",
        str(meta.get("intended_use", "")),
        "The shipped weights were trained on the synthetic default cohort: they demonstrate the method and the "
        "bundle, and are not a model of real radiographs or scans. Train on your cohort before any use.",
        "",
        "## **References**",
        *[f"- {r}" for r in meta.get("references", [])],
        "",
        "# License",
        "Code and weights: see `LICENSE`.",
        "",
    ]
    return "\n".join(text)
