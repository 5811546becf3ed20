"""How the MI term behaves over training in the benchmark's runs: causal CE, MI and the adaptive MI scale.

    python scripts/training_dynamics.py --runs runs/benchmark --method mimmx --epochs 1,5,10,20,30

Reads ``<runs>/<cohort>/<method>/seed*/eval/history.json`` (written by ``scripts/benchmark.py``) and prints, per
cohort and selected epoch, the mean over seeds of the training causal CE, the weighted mean pairwise MI and the
adaptive scale applied to the MI gradient (1: the MI gradient is used in full; small: capped by a small CE
gradient), plus the epoch that model selection kept (best validation AUC).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mimmx.names import CAUSAL, CE_PREFIX, MI_SCALE, MI_TOTAL

KEYS = (CE_PREFIX + CAUSAL, MI_TOTAL, MI_SCALE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--method", default="mimmx")
    parser.add_argument("--epochs", default="1,5,10,20,30")
    args = parser.parse_args()
    epochs = [int(e) for e in args.epochs.split(",")]
    for cohort_dir in sorted(p for p in args.runs.iterdir() if p.is_dir() and (p / args.method).is_dir()):
        files = sorted((cohort_dir / args.method).glob("seed*/eval/history.json"))
        histories = [json.loads(f.read_text()) for f in files]
        if not histories:
            continue
        print(f"{cohort_dir.name} / {args.method} ({len(histories)} seeds)")
        print(f"  {'epoch':>5} {KEYS[0]:>9} {KEYS[1]:>8} {KEYS[2]:>8}")
        for epoch in epochs:
            rows = [h[epoch - 1] for h in histories if len(h) >= epoch]
            if not rows:
                continue
            cells = []
            for key in KEYS:
                values = [r[key] for r in rows if key in r]
                cells.append(f"{statistics.mean(values):.3f}" if values else "n/a")
            print(f"  {epoch:>5} {cells[0]:>9} {cells[1]:>8} {cells[2]:>8}")
        best = [max(h, key=lambda r: r.get("val_auc", float("-inf")))["epoch"] for h in histories]
        print(f"  epoch kept by model selection (best val AUC), per seed: {best}")


if __name__ == "__main__":
    main()
