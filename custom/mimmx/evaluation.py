"""Scores a trained MIMMXNet on the test splits: causal AUC/accuracy, each spurious head's AUC, switched AUC.

The switched test scores the causal head against each factor's label: a model that took a shortcut through a
factor predicts that factor, so its switched AUC is far from 0.5; a shortcut-free model sits at chance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, load_decathlon_datalist
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from mimmx.errors import DataError
from mimmx.factors import parse_factors
from mimmx.io_utils import atomic_write_json
from mimmx.networks import CAUSAL, MIMMXNet

__all__ = ["auc", "collect_outputs", "score_split", "evaluate_splits", "TEST_SPLITS"]

TEST_SPLITS = ("test_id", "test_inverted", "test_balanced")


def auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC (one-vs-rest macro for more than two classes); None when only one class is present."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    if probs.ndim == 2 and probs.shape[1] == 2:
        probs = probs[:, 1]
    if probs.ndim == 2:
        return float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
    return float(roc_auc_score(labels, probs))


@torch.no_grad()
def collect_outputs(
    network: MIMMXNet, loader: Any, label_keys: Mapping[str, str], device: torch.device | str, desc: str = ""
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Softmax outputs of every head and the matching labels, over a whole data loader."""
    network.eval()
    probs: dict[str, list] = {name: [] for name in network.partition_names}
    labels: dict[str, list] = {name: [] for name in label_keys}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not desc):
        logits = network.head_logits(network.partitions(batch["image"].to(device)))
        for name, value in logits.items():
            probs[name].append(torch.softmax(value.float(), dim=1).cpu().numpy())
        for name, key in label_keys.items():
            labels[name].append(torch.as_tensor(batch[key]).view(-1).cpu().numpy())
    return {k: np.concatenate(v) for k, v in probs.items()}, {k: np.concatenate(v) for k, v in labels.items()}


def score_split(probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], factor_names: Sequence[str]) -> dict:
    """Metrics of one split from head probabilities and labels."""
    causal = probs[CAUSAL]
    y = labels[CAUSAL]
    out: dict[str, Any] = {
        "n": int(len(y)),
        "causal": {"auc": auc(y, causal), "accuracy": float((causal.argmax(1) == y).mean()) if len(y) else None},
        "factors": {},
    }
    for name in factor_names:
        z = labels[name]
        out["factors"][name] = {
            "head_auc": auc(z, probs[name]),
            "head_accuracy": float((probs[name].argmax(1) == z).mean()) if len(z) else None,
            "switched_auc": auc(z, causal) if causal.shape[1] == 2 else None,
            "target_agreement": float((z == y).mean()) if len(z) else None,
        }
    return out


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
) -> dict:
    """Evaluate on each split of a MONAI data list and write one metrics JSON (atomically)."""
    specs = parse_factors(factors)
    label_keys = {CAUSAL: target_key, **{f.name: f.key for f in specs}}
    results: dict[str, Any] = {"splits": {}, "factors": [f.name for f in specs]}
    for split in splits:
        try:
            items = load_decathlon_datalist(
                datalist_file, is_segmentation=False, data_list_key=split, base_dir=base_dir
            )
        except (ValueError, KeyError) as e:
            raise DataError(f"{datalist_file}: cannot read split {split!r}: {e}") from e
        loader = DataLoader(Dataset(items, transform), batch_size=batch_size, num_workers=num_workers)
        probs, labels = collect_outputs(network, loader, label_keys, device, desc=f"evaluate {split}")
        results["splits"][split] = score_split(probs, labels, [f.name for f in specs])
    results["summary"] = {f"{s}_{m}": results["splits"][s]["causal"][m] for s in splits for m in ("auc", "accuracy")}
    atomic_write_json(output_file, results)
    print(format_results(results), flush=True)
    return results


def format_results(results: Mapping[str, Any]) -> str:
    """A small table: one row per split, causal AUC/accuracy then each factor's head and switched AUC."""

    def f(v: float | None) -> str:
        return "  n/a" if v is None else f"{v:5.3f}"

    factors = results["factors"]
    head = f"{'split':<14} {'n':>5} {'AUC':>5} {'acc':>5} " + " ".join(f"{n[:12]:>12}(head/sw)" for n in factors)
    lines = [head]
    for split, r in results["splits"].items():
        cells = " ".join(
            f"{f(r['factors'][n]['head_auc']):>12}/{f(r['factors'][n]['switched_auc'])}  " for n in factors
        )
        lines.append(f"{split:<14} {r['n']:>5} {f(r['causal']['auc'])} {f(r['causal']['accuracy'])} {cells}")
    return "\n".join(lines)
