"""Try MIMM-X trainer settings quickly on a bundle's prepared data list, without the bundle workflow around it.

    python scripts/sweep_mi_settings.py --bundle bundles/mimmx_cxr \
        '{"mi_lambda": 0}' '{"mi_lambda": 1.0, "conditional": true, "adaptive_scale": false}'

Each argument is one setting (JSON): trainer options (mi_lambda, critic_steps, adaptive_scale, weight_power,
max_epochs), MI options (estimator, hidden, conditional, balance) and partition_dim / batch_size / learning_rate. Images
go through the bundle's own preprocessing and augmentation (cached in memory once); the network, MI estimators
and trainer are the bundle's. No validation or checkpointing: it trains for max_epochs and scores the last
model. Prints one JSON line per setting: AUC per split, the switched AUC on test_balanced, and the within-class
AUC of the causal output against each factor on train and test_balanced (0.5 = the causal prediction carries
nothing about the factor beyond the target).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset, load_decathlon_datalist
from monai.transforms import Compose
from sklearn.metrics import roc_auc_score

from mimmx.data import datalist_base_dir
from mimmx.engines import MIMMXTrainer
from mimmx.evaluation import collect_outputs
from mimmx.factors import factor_names, label_keys, parse_factors
from mimmx.losses import HeadCrossEntropy, PairwiseMITerm
from mimmx.mi import PairwiseMI
from mimmx.names import CAUSAL, SPLIT_NAMES, TEST_BALANCED, TRAIN
from mimmx.networks import MIMMXNet

SPLITS = SPLIT_NAMES


def within_class_auc(probs: np.ndarray, labels: dict[str, np.ndarray], factor: str) -> float:
    """Mean over target classes of the AUC of the causal probability against the factor (0.5: independent)."""
    values = []
    for y in (0, 1):
        mask = labels[CAUSAL] == y
        if len(np.unique(labels[factor][mask])) > 1:
            values.append(roc_auc_score(labels[factor][mask], probs[mask][:, 1]))
    return float(np.mean(values))


def run_setting(parser: ConfigParser, data: dict, factors: list, setting: dict, seed: int) -> dict:
    s = dict(setting)
    torch.manual_seed(seed)
    net = MIMMXNet(parser["network_def"]["spatial_dims"], 1, 2, factors, partition_dim=s.pop("partition_dim", 32))
    mi = PairwiseMI(
        net.partition_dims,
        estimator=s.pop("estimator", "mine"),
        hidden=s.pop("hidden", 32),
        conditional=s.pop("conditional", False),
        balance=s.pop("balance", False),
    )
    batch_size = s.pop("batch_size", parser["batch_size"])
    lr = s.pop("learning_rate", parser["learning_rate"])
    epochs = s.pop("max_epochs", parser["max_epochs"])
    loader = DataLoader(data["train"], batch_size=batch_size, shuffle=True, drop_last=True)
    mi_term = PairwiseMITerm(mi, mi_lambda=s.pop("mi_lambda", 0.5), factors=factors, **s)
    loss_terms = [HeadCrossEntropy(factors), mi_term]
    trainer = MIMMXTrainer("cpu", epochs, loader, net, torch.optim.Adam(net.parameters(), lr=lr), factors, loss_terms)
    start = time.perf_counter()
    trainer.run()
    out = {"setting": setting, "seconds": round(time.perf_counter() - start)}
    names = factor_names(factors, config_id="train.yaml#factors")
    keys = label_keys(parse_factors(factors, config_id="train.yaml#factors"))
    for split in SPLITS:
        probs, labels, _ = collect_outputs(net, DataLoader(data[f"eval_{split}"], batch_size=128), keys, "cpu")
        out[f"{split}_auc"] = round(roc_auc_score(labels[CAUSAL], probs[CAUSAL][:, 1]), 3)
        if split in (TRAIN, TEST_BALANCED):
            out[f"within_class_auc_{split}"] = {
                name: round(within_class_auc(probs[CAUSAL], labels, name), 3) for name in names
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("bundles/mimmx_cxr"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("settings", nargs="+", help="JSON objects, one per setting")
    args = ap.parse_args()

    parser = ConfigParser()
    parser.read_config(str(args.bundle / "configs" / "train.yaml"))
    parser["bundle_root"] = str(args.bundle)
    datalist = parser.get_parsed_content("datalist")
    factors = parser["factors"]
    pre = parser.get_parsed_content("validate#preprocessing")
    aug = Compose(parser.get_parsed_content("augmentation_transforms"))
    base = datalist_base_dir(datalist)
    data = {}
    for split in SPLITS:
        items = load_decathlon_datalist(datalist, False, split, base_dir=base)
        cached = CacheDataset(items, pre, progress=False)
        data[f"eval_{split}"] = cached
        if split == "train":
            data["train"] = Dataset(cached, aug)
    for text in args.settings:
        print(json.dumps(run_setting(parser, data, factors, json.loads(text), args.seed)), flush=True)


if __name__ == "__main__":
    main()
