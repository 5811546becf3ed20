"""Scores a trained MIMMXNet on the test splits, for every spurious factor at once (Whac-A-Mole: one number per
factor, never one factor alone).

Per split: the causal task's AUROC, AUPRC, accuracy, balanced accuracy and ECE; per factor, the subgroups (factor
value) and cells (target x factor value) with n, worst group and gap; the switched test (the causal head scored
against the factor's label: a shortcut-free model sits at chance on test_balanced); each factor head's AUROC.
On test_balanced, where target and factors are independent, leakage probes read every partition, and a freshly
trained critic estimates the MI left between partitions (fitted on val, estimated on test_balanced). Everything
goes to one metrics JSON with stable keys (see :mod:`mimmx.report` for the rendered report).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, load_decathlon_datalist
from tqdm import tqdm

from mimmx.errors import DataError
from mimmx.factors import FactorSpec, label_keys, parse_factors
from mimmx.io_utils import atomic_path, atomic_write_json
from mimmx.metrics import (
    auroc,
    bootstrap_ci,
    classification_metrics,
    decision_leakage,
    decision_leakage_null,
    group_metrics,
    roc_curve_points,
    switched_auroc,
)
from mimmx.names import CAUSAL, TEST_BALANCED, TEST_INVERTED, TEST_SPLITS, VAL
from mimmx.networks import MIMMXNet
from mimmx.probes import leakage_probes, posthoc_mi
from mimmx.report import format_summary

__all__ = ["collect_outputs", "score_split", "evaluate_splits", "save_features", "TEST_SPLITS", "PROBE_SPLIT"]

logger = logging.getLogger("mimmx")

PROBE_SPLIT = TEST_BALANCED
MI_FIT_SPLIT = VAL


@torch.no_grad()
def collect_outputs(
    network: MIMMXNet, loader: Any, label_keys: Mapping[str, str], device: torch.device | str, desc: str = ""
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Softmax outputs of every head, the matching labels and every partition's features, over a whole loader.

    A plain loop rather than ``monai.engines.SupervisedEvaluator``: scoring needs every head's output and every
    partition's features at once (one ``partitions`` call, not the ``forward`` an evaluator's inferer runs), the
    metrics are computed afterwards over the whole split (bootstrap CIs, groups, probes), so no metric handler
    would attach, and an evaluator plus an output-collecting handler would only wrap this loop.
    """
    network.eval()
    probs: dict[str, list] = {name: [] for name in network.partition_names}
    feats: dict[str, list] = {name: [] for name in network.partition_names}
    labels: dict[str, list] = {name: [] for name in label_keys}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not desc):
        for name, key in label_keys.items():
            if key not in batch:
                raise DataError(f"evaluation batch has no key {key!r} (label of {name!r}); keys: {sorted(batch)}.")
            labels[name].append(torch.as_tensor(batch[key]).view(-1).cpu().numpy())
        parts = network.partitions(batch["image"].to(device))
        for name, value in network.head_logits(parts).items():
            probs[name].append(torch.softmax(value.float(), dim=1).cpu().numpy())
            feats[name].append(parts[name].float().cpu().numpy())

    def cat(d: dict[str, list]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in d.items()}

    return cat(probs), cat(labels), cat(feats)


def score_split(
    probs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    factors: Sequence[FactorSpec],
    target_names: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    patients: Sequence[str] | None = None,
) -> dict:
    """Causal metrics, per-factor groups, switched AUROC and head AUROC of one split.

    With ``patients`` (one id per row) the bootstrap CIs resample patients, and ``n_patients`` is reported.
    """
    causal, y = probs[CAUSAL], labels[CAUSAL]
    clusters = None if patients is None else np.asarray(patients)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "n_patients": None if clusters is None else int(len(np.unique(clusters))),
        CAUSAL: classification_metrics(y, causal, n_boot=n_boot, seed=seed, clusters=clusters),
        "roc": roc_curve_points(y, causal),
        "factors": {},
    }
    for spec in factors:
        z = labels[spec.name]
        entry = group_metrics(y, causal, z, spec.class_names, target_names, n_boot=n_boot, seed=seed, clusters=clusters)
        head = probs.get(spec.name)
        entry["head_auroc"] = auroc(z, head) if head is not None else None
        entry["switched_auroc"] = switched_auroc(z, causal, n_boot=n_boot, seed=seed, clusters=clusters)
        out["factors"][spec.name] = entry
    worst_auc = [f["worst_group_auroc"] for f in out["factors"].values() if f["worst_group_auroc"] is not None]
    worst_acc = [f["worst_group_accuracy"] for f in out["factors"].values() if f["worst_group_accuracy"] is not None]
    out["worst_group_auroc"] = min(worst_auc) if worst_auc else None
    out["worst_group_accuracy"] = min(worst_acc) if worst_acc else None
    return out


def save_features(
    path: str | Path,
    feats: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    label_names: Mapping[str, Sequence[str]],
) -> None:
    """Partition features and labels of one split as .npz (``part_<name>``, ``label_<name>``, ``label_names_<name>``)
    for embeddings in the report; written to a temporary name first, so a crash leaves no half file."""
    arrays = {f"part_{k}": v for k, v in feats.items()}
    arrays.update({f"label_{k}": v for k, v in labels.items()})
    arrays.update({f"label_names_{k}": np.asarray(list(v)) for k, v in label_names.items()})
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        np.savez_compressed(fh, **arrays)


def _loader(datalist_file: str, split: str, base_dir: str, transform: Callable, batch_size: int, num_workers: int):
    try:
        items = load_decathlon_datalist(datalist_file, is_segmentation=False, data_list_key=split, base_dir=base_dir)
    except (ValueError, KeyError) as e:
        raise DataError(f"{datalist_file}: cannot read split {split!r}: {e}") from e
    patients = [str(item["patient_id"]) for item in items] if all("patient_id" in i for i in items) else None
    return DataLoader(Dataset(items, transform), batch_size=batch_size, num_workers=num_workers), patients


def evaluate_splits(
    network: MIMMXNet,
    datalist_file: str,
    base_dir: str,
    transform: Callable,
    factors: Sequence[Mapping[str, Any]],
    output_file: str,
    device: torch.device | str = "cpu",
    splits: Sequence[str] = TEST_SPLITS,
    batch_size: int = 64,
    num_workers: int = 0,
    target_key: str = "label",
    target_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    probes: bool = True,
    mi_steps: int = 500,
    features_file: str | None = None,
    seed: int = 0,
) -> dict:
    """Evaluate on each split of a MONAI data list and write one metrics JSON (atomically).

    ``factors`` are all the bundle's factors (a network may have partitions for only some of them, as the
    single-factor baseline does); every factor is scored from its label. ``n_boot`` 0 skips the bootstrap CIs;
    ``probes`` False skips the leakage probes and the post-hoc MI (both need ``test_balanced`` and ``val``).
    """
    specs = parse_factors(factors)
    keys = label_keys(specs, target_key)
    target_names = list(target_names or [str(c) for c in range(network.num_classes)])
    results: dict[str, Any] = {
        "factors": [f.name for f in specs],
        "partitions": list(network.partition_names),
        "target_names": target_names,
        "splits": {},
        "probes": None,
        "posthoc_mi": None,
        "decision_leakage": None,
        "decision_leakage_ci": None,
        "decision_leakage_null": None,
    }
    collected = {}
    fit_mi = probes and mi_steps > 0
    wanted = list(splits) + ([MI_FIT_SPLIT] if fit_mi and MI_FIT_SPLIT not in splits else [])
    patients = {}
    for split in wanted:
        loader, patients[split] = _loader(datalist_file, split, base_dir, transform, batch_size, num_workers)
        _progress(f"predicting {split} ({len(loader.dataset)} images)")
        collected[split] = collect_outputs(network, loader, keys, device, desc=f"evaluate {split}")
    for split in splits:
        probs, labels, _ = collected[split]
        _progress(f"scoring {split} ({n_boot} bootstrap resamples{' of patients' if patients[split] else ''})")
        results["splits"][split] = score_split(
            probs, labels, specs, target_names, n_boot=n_boot, seed=seed, patients=patients[split]
        )

    if PROBE_SPLIT in collected:
        probs, labels, _ = collected[PROBE_SPLIT]
        results["decision_leakage"] = _decision_leakage(probs[CAUSAL], labels, specs)
        if n_boot > 0 and probs[CAUSAL].shape[1] == 2:
            _progress(f"decision leakage: {n_boot} bootstrap resamples and {n_boot} within-class permutations")
            noise = _decision_leakage_noise(probs[CAUSAL][:, 1], labels, specs, n_boot, seed, patients[PROBE_SPLIT])
            results.update(noise)
    if probes and PROBE_SPLIT in collected:
        _, labels, feats = collected[PROBE_SPLIT]
        _progress(f"leakage probes: every partition x every label on {PROBE_SPLIT}")
        probe = leakage_probes(feats, labels, seed=seed, groups=patients.get(PROBE_SPLIT))
        results["probes"] = {"split": PROBE_SPLIT, **probe}
        if fit_mi and len(feats) > 1:
            _progress(f"post-hoc MI: fresh critics, {mi_steps} steps per partition pair")
            pairs = posthoc_mi(collected[MI_FIT_SPLIT][2], feats, steps=mi_steps, seed=seed)
            results["posthoc_mi"] = {"fit_split": MI_FIT_SPLIT, "eval_split": PROBE_SPLIT, "pairs": pairs}
        if features_file:
            names = {CAUSAL: target_names, **{f.name: f.class_names for f in specs}}
            save_features(features_file, feats, labels, names)

    results["summary"] = _summary(results)
    atomic_write_json(output_file, results)
    print(format_summary(results), flush=True)
    return results


def _progress(phase: str) -> None:
    """One log line per evaluation phase: the probes and post-hoc MI take minutes and would look like a hang."""
    logger.info("evaluation: %s ...", phase)


def _decision_leakage(causal: np.ndarray, labels: Mapping[str, np.ndarray], specs: Sequence[FactorSpec]) -> dict:
    """Per factor, :func:`mimmx.metrics.decision_leakage` of the causal P(class 1) (None for a multi-class task)."""
    if causal.shape[1] != 2:
        return dict.fromkeys((f.name for f in specs), None)
    return {f.name: decision_leakage(labels[CAUSAL], causal[:, 1], labels[f.name]) for f in specs}


def _decision_leakage_noise(
    scores: np.ndarray,
    labels: Mapping[str, np.ndarray],
    specs: Sequence[FactorSpec],
    n_boot: int,
    seed: int,
    patients: np.ndarray | None,
) -> dict:
    """Per factor, the leakage's bootstrap 95% CI (patients resampled) and what it reads for no dependence at all
    (:func:`mimmx.metrics.decision_leakage_null`): a target of 0.60 is read against both. The leakage is folded
    at 0.5, so near 0.5 its resamples lie above the value and the interval may not hold it: read its half-width as
    the error bar, the null quantile as the floor."""
    y = labels[CAUSAL]
    ci, null = {}, {}
    for f in specs:
        z = labels[f.name]
        ci[f.name] = bootstrap_ci(decision_leakage, (y, scores, z), n_boot=n_boot, seed=seed, clusters=patients)
        null[f.name] = decision_leakage_null(y, scores, z, n_perm=n_boot, seed=seed)
    return {"decision_leakage_ci": ci, "decision_leakage_null": null}


def _summary(results: Mapping[str, Any]) -> dict:
    """The few numbers a benchmark table needs, under stable keys."""
    summary: dict[str, Any] = {}
    for split, r in results["splits"].items():
        summary[f"{split}_auroc"] = r["causal"]["auroc"]["value"]
        summary[f"{split}_accuracy"] = r["causal"]["accuracy"]["value"]
    balanced = results["splits"].get(PROBE_SPLIT)
    summary["worst_group_auroc"] = balanced["worst_group_auroc"] if balanced else None
    summary["switched_auroc"] = (
        {f: v["switched_auroc"]["value"] for f, v in balanced["factors"].items()} if balanced else None
    )
    probes = results.get("probes")
    summary["leakage_auc"] = {f: probes["logistic"][CAUSAL].get(f) for f in results["factors"]} if probes else None
    # the causal output's own use of each factor within a target class, on test_balanced (0.5 = none)
    summary["decision_leakage"] = results.get("decision_leakage")
    summary["decision_leakage_ci"] = results.get("decision_leakage_ci")
    summary["decision_leakage_null"] = results.get("decision_leakage_null")
    inverted = results["splits"].get(TEST_INVERTED)
    ci = inverted["causal"]["auroc"]["ci"] if inverted else None
    summary["test_inverted_auroc_ci_halfwidth"] = (ci[1] - ci[0]) / 2 if ci and None not in ci else None
    return summary
