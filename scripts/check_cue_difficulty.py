"""How hard is each label of the synthetic chest X-ray cohort for a small CNN?

Generates a balanced cohort (rho = 0.5, so every label is independent of the others), trains the
same tiny CNN separately on each label and prints the validation AUC after every epoch. The
synthetic cohort is meant to behave like real CheXpert: the spurious cues (sex, age group,
support devices) are learnt within one epoch while the causal target (pleural effusion) needs
several, but gets there. Use it to calibrate the cue strengths of
``mimmx.data.synthetic_cxr.generate_cxr_cohort`` without code changes:

    python scripts/check_cue_difficulty.py --epochs 10 --cue effusion_contrast=0.1 --cue noise_std=0.05
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from mimmx.data.synthetic_cxr import generate_cxr_cohort

LABELS = ("target", "sex", "age", "devices")


def label_of(row: dict[str, str], name: str) -> int | None:
    """Binary label of a CSV row, or None when the row has none (uncertain target, age in the gap)."""
    if name == "target":
        cell = row["Pleural Effusion"]
        return None if cell == "-1.0" else int(cell == "1.0")
    if name == "sex":
        return int(row["Sex"] == "Male")
    if name == "age":
        age = int(row["Age"])
        return 1 if age >= 60 else (0 if age <= 50 else None)
    if name == "devices":
        return int(row["Support Devices"] == "1.0")
    raise ValueError(f"unknown label {name!r}; expected one of {LABELS}")


def load_cohort(csv_path: str) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Frontal images as a float tensor (N, 1, H, W) in [0, 1] and their CSV rows."""
    root = Path(csv_path).parent.parent
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Frontal/Lateral"] == "Frontal"]
    images = np.stack([np.asarray(Image.open(root / r["Path"])) for r in rows])
    return torch.from_numpy(images).float().div_(255).unsqueeze(1), rows


def tiny_cnn() -> nn.Module:
    """Four stride-2 conv blocks (16-32-64-64), global average pool, one logit."""
    layers, cin = [], 1
    for cout in (16, 32, 64, 64):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1))


def predict(model: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]).squeeze(1) for i in range(0, len(x), batch)]).numpy()


def train_label(
    x: torch.Tensor, y: torch.Tensor, n_train: int, epochs: int, batch: int, lr: float, seed: int
) -> list[float]:
    """Validation AUC after each epoch of training on the first n_train samples."""
    torch.manual_seed(seed)
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    aucs = []
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(batch):
            opt.zero_grad()
            loss_fn(model(xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
        aucs.append(float(roc_auc_score(yv.numpy(), predict(model, xv))))
    return aucs


def parse_cues(items: list[str]) -> dict[str, float]:
    cues = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--cue expects name=value, got {item!r}")
        cues[key.strip()] = float(value)
    return cues


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-train", type=int, default=2000, help="training images per label")
    ap.add_argument("--num-val", type=int, default=1000, help="validation images")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels", default=",".join(LABELS), help=f"comma-separated subset of {LABELS}")
    ap.add_argument("--cue", action="append", default=[], help="cue strength override name=value (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    cues = parse_cues(args.cue)

    with tempfile.TemporaryDirectory(prefix="mimmx_cues_") as tmp:
        t0 = time.perf_counter()
        n = int((args.num_train + args.num_val) * 1.05) + 10  # room for rows without a label
        csv_path = generate_cxr_cohort(tmp, n, args.image_size, rho=0.5, seed=args.seed, progress=False, **cues)
        x, rows = load_cohort(csv_path)
        print(f"generated and loaded {len(rows)} frontal images in {time.perf_counter() - t0:.1f} s; cues {cues}")

    x = (x - x.mean()) / x.std()
    table = {}
    for name in labels:
        t0 = time.perf_counter()
        keep = [(i, v) for i, r in enumerate(rows) if (v := label_of(r, name)) is not None]
        keep = keep[: args.num_train + args.num_val]
        idx = torch.tensor([i for i, _ in keep])
        y = torch.tensor([v for _, v in keep], dtype=torch.float32)
        n_train = min(args.num_train, len(keep) - args.num_val)
        aucs = train_label(x[idx], y, n_train, args.epochs, args.batch, args.lr, args.seed)
        table[name] = aucs
        print(f"{name:8s} " + " ".join(f"{a:.3f}" for a in aucs) + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    print("\nvalidation AUC per epoch")
    print("| epoch | " + " | ".join(labels) + " |")
    print("|---:|" + "---:|" * len(labels))
    for e in range(args.epochs):
        print(f"| {e + 1} | " + " | ".join(f"{table[n][e]:.3f}" for n in labels) + " |")


if __name__ == "__main__":
    main()
