"""Crash check: a training run killed with SIGKILL mid-epoch, twice, and resumed ends where an uninterrupted one ends.

    python scripts/fault_check.py                    # the chest X-ray bundle, small (about 2-3 minutes on 2 cores)
    python scripts/fault_check.py --bundle mri --work_dir /tmp/fault

Run A trains uninterrupted. Run B trains with ``--train#resume_from latest`` (the bundle's one resume option), is
killed with SIGKILL in the middle of epoch 2 and again early in epoch 3, and is restarted with the same command each
time until it finishes. Both are then evaluated. The check passes when the two runs' ``metrics.json`` are equal,
their ``history.json`` are equal (except ``epoch_seconds``, a wall-clock time), and the selected model files
(``model.pt``, ``model_balanced_val.pt``, ``model_last.pt``) have the same SHA-256. Run A and the first part of run
B are also two independent runs with the same seed: equal results show that training is reproducible on a CPU.
Exit status 0 when identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "cxr": {
        "cohort#synthetic#num_patients": 3200,
        "cohort#synthetic#image_size": 32,
        "splits#sizes": {"train": 256, "val": 48, "test_id": 32, "test_inverted": 32, "test_balanced": 32},
        "image_size": [32, 32],
        "batch_size": 16,
    },
    "mri": {
        "cohort#synthetic#num_subjects": 800,
        "cohort#synthetic#shape": [16, 16, 16],
        "cohort#synthetic#spacing": [8.0, 8.0, 8.0],
        "splits#sizes": {"train": 128, "val": 32, "test_id": 32, "test_inverted": 32, "test_balanced": 32},
        "pixdim": [8.0, 8.0, 8.0],
        "spatial_size": [16, 16, 16],
        "batch_size": 16,
    },
}
SELECTED = ("model.pt", "model_balanced_val.pt", "model_last.pt")
# (epoch the kill lands in, fraction of an epoch's time after the previous epoch's checkpoint appeared)
KILLS = ((2, 0.5), (3, 0.2))


def bundle_command(bundle: str, root: Path, data: Path, run_id: str, extra: dict) -> list[str]:
    configs = ROOT / "bundles" / f"mimmx_{bundle}" / "configs"
    files = [str(configs / "train.yaml")] + ([str(configs / "evaluate.yaml")] if run_id == "evaluating" else [])
    overrides = {
        **SMALL[bundle],
        "dataset_dir": str(data),
        "cohort#synthetic#into_dataset_dir": True,
        **extra,
    }
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--bundle_root", str(root)]
    cmd += ["--config_file", json.dumps(files) if len(files) > 1 else files[0]]
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return cmd


def run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())
    if code != 0:
        sys.exit(f"fault_check: command failed ({code}), see {log}:\n  {' '.join(cmd)}")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def checkpoint_epoch(models: Path) -> int:
    epochs = [int(p.name.split("=")[1].split(".")[0]) for p in models.glob("training_checkpoint_epoch=*.pt")]
    return max(epochs, default=0)


def kill_during(cmd: list[str], log: Path, models: Path, epoch: int, fraction: float, epoch_seconds: float) -> str:
    """Start training, SIGKILL it ``fraction`` of an epoch after the checkpoint of ``epoch - 1`` appeared."""
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())
        while checkpoint_epoch(models) < epoch - 1:
            if proc.poll() is not None:
                sys.exit(f"fault_check: training ended before epoch {epoch} (status {proc.returncode}), see {log}")
            time.sleep(0.02)
        time.sleep(fraction * epoch_seconds)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    landed = checkpoint_epoch(models)
    where = "mid-epoch" if landed == epoch - 1 else f"after epoch {landed} ended"
    return f"SIGKILL {fraction:.0%} of an epoch into epoch {epoch}: checkpoint at epoch {landed} ({where})"


def compare(a: Path, b: Path) -> list[str]:
    """The differences between two runs' results; empty when identical."""
    diffs = []
    ma, mb = (json.loads((r / "eval" / "metrics.json").read_text()) for r in (a, b))
    if ma != mb:
        diffs.append("metrics.json differ")
    ha, hb = (json.loads((r / "eval" / "history.json").read_text()) for r in (a, b))
    strip = [[{k: v for k, v in rec.items() if k != "epoch_seconds"} for rec in h] for h in (ha, hb)]
    if strip[0] != strip[1]:
        diffs.append(f"history.json differ (epochs {[r['epoch'] for r in ha]} vs {[r['epoch'] for r in hb]})")
    for name in SELECTED:
        ha_, hb_ = ((r / "models" / f"{name}.sha256").read_text().split()[0] for r in (a, b))
        if ha_ != hb_:
            diffs.append(f"{name} differs (SHA-256 {ha_[:12]} vs {hb_[:12]})")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", choices=sorted(SMALL), default="cxr")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work_dir", type=Path, default=None, help="default: a temporary folder, removed after")
    args = parser.parse_args(argv)
    if args.epochs < 4:
        parser.error("--epochs must be at least 4 (kills land in epochs 2 and 3, and training must go on after)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, a, b, log = work / "data", work / "uninterrupted", work / "killed", work / "fault_check.log"
        quick_eval = {"probes": False, "write_report": False, "bootstrap_samples": 100}
        train = {"max_epochs": args.epochs}
        start = time.perf_counter()

        run(bundle_command(args.bundle, a, data, "training", train), log)
        history = json.loads((a / "eval" / "history.json").read_text())
        epoch_seconds = sum(r["epoch_seconds"] for r in history) / len(history)
        print(f"run A (uninterrupted): {args.epochs} epochs, {epoch_seconds:.1f} s per epoch")

        resume = bundle_command(args.bundle, b, data, "training", {**train, "train#resume_from": "latest"})
        for epoch, fraction in KILLS:
            print("run B: " + kill_during(resume, log, b / "models", epoch, fraction, epoch_seconds))
        run(resume, log)
        print(f"run B: resumed with --train#resume_from latest and finished at epoch {args.epochs}")

        for root in (a, b):
            run(bundle_command(args.bundle, root, data, "evaluating", {**train, **quick_eval}), log)
        diffs = compare(a, b)
        elapsed = time.perf_counter() - start
        if diffs:
            print(f"DIFFERENT after {elapsed:.0f} s: " + "; ".join(diffs) + f" (runs in {work}, log {log})")
            return 1
        print(
            f"IDENTICAL after {elapsed:.0f} s: metrics.json, history.json (all {args.epochs} epochs, wall times "
            f"aside) and the SHA-256 of {', '.join(SELECTED)}"
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
