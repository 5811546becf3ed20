"""Train and evaluate ERM, MIMM-X and an oracle on a bundle's embedded default cohort; write one results JSON.

    python scripts/benchmark_default.py --bundle bundles/mimmx_cxr --output docs/results/cxr_default.json

- erm:    the bundle's train config with ``mi_lambda 0`` (same network, data, epochs, model selection).
- mimmx:  the bundle's train config as shipped.
- oracle: ERM trained on splits of the same size whose factors are independent of the target (rho 0.5).

Each method goes through ``python -m monai.bundle run training`` then ``run evaluating``, exactly as a user
would run them; ``epoch_seconds`` is the mean wall time of a training epoch (validation included) from the
run's history, leaving out the first epoch (cache warm-up).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {
    "erm": {"mi_lambda": "0"},
    "mimmx": {},
    "oracle": {"mi_lambda": "0", "splits#rho": "0.5", "datalist_file": "datalist_oracle.json"},
}


def bundle_command(run_id: str, bundle: Path, configs: list[Path], overrides: dict[str, str]) -> list[str]:
    files = str([str(c) for c in configs]) if len(configs) > 1 else str(configs[0])
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--bundle_root", str(bundle), "--config_file", files]
    cmd += ["--logging_file", str(bundle / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    return cmd


def run_method(name: str, bundle: Path, work_dir: Path, extra: dict[str, str], log) -> dict:
    out = work_dir / name
    overrides = {
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        "log_dir": str(out / "logs"),
        **METHODS[name],
        **extra,
    }
    train_cfg = bundle / "configs" / "train.yaml"
    eval_cfg = bundle / "configs" / "evaluate.yaml"
    for run_id, configs in (("training", [train_cfg]), ("evaluating", [train_cfg, eval_cfg])):
        cmd = bundle_command(run_id, bundle, configs, overrides)
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        print(f"  {name} {run_id}: {time.perf_counter() - start:.0f} s", flush=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} {run_id} failed (exit {proc.returncode}); see {log.name}")
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    history = json.loads((out / "eval" / "history.json").read_text())
    seconds = [h["epoch_seconds"] for h in history[1:]] or [h["epoch_seconds"] for h in history]
    result = {f"{split}_auc": metrics["splits"][split]["causal"]["auc"] for split in metrics["splits"]}
    result.update({f"{split}_accuracy": metrics["splits"][split]["causal"]["accuracy"] for split in metrics["splits"]})
    result["switched_auc_test_balanced"] = {
        f: v["switched_auc"] for f, v in metrics["splits"]["test_balanced"]["factors"].items()
    }
    result["epoch_seconds"] = statistics.mean(seconds)
    result["epochs"] = len(history)
    # max resident set size of any bundle run so far (what /usr/bin/time -v reports), in MiB
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def inference_ms(bundle: Path, ckpt: Path, datalist: Path, repeats: int = 20) -> float:
    """Median wall time of ``repeats`` single-image forward passes on the CPU (preprocessed input, after warm-up)."""
    import torch
    from monai.bundle import ConfigParser
    from monai.data import load_decathlon_datalist

    from mimmx.data import datalist_base_dir

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    net.eval()
    items = load_decathlon_datalist(str(datalist), False, "test_balanced", base_dir=datalist_base_dir(datalist))
    x = parser.get_parsed_content("preprocessing")({"image": items[0]["image"]})["image"][None]
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            start = time.perf_counter()
            net(x)
            if i >= 3:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/mimmx_cxr"))
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default docs/results/<name>.json)")
    parser.add_argument("--work_dir", type=Path, default=None, help="checkpoints and logs (default runs/benchmark_*)")
    parser.add_argument("--methods", default="erm,mimmx,oracle")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"), help="config override")
    args = parser.parse_args()

    bundle = args.bundle.resolve()
    short = bundle.name.replace("mimmx_", "")
    output = args.output or Path("docs/results") / f"{short}_default.json"
    work_dir = (args.work_dir or Path("runs") / f"benchmark_{short}").resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(args.set)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}; choose from {sorted(METHODS)}")

    results = {}
    with open(work_dir / "benchmark.log", "a") as log:
        for name in methods:
            print(f"{name}:", flush=True)
            results[name] = run_method(name, bundle, work_dir, extra, log)
            print("  " + json.dumps(results[name]), flush=True)

    command = "python scripts/benchmark_default.py " + shlex.join(sys.argv[1:])
    record = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads default, no GPU used",
        "methods": results,
    }
    if "erm" in results and "mimmx" in results:
        record["mimmx_epoch_time_vs_erm"] = results["mimmx"]["epoch_seconds"] / results["erm"]["epoch_seconds"]
    record["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results.values())
    if "mimmx" in results:
        datalist = bundle / "data" / "datalist.json"
        record["infer_ms_median"] = inference_ms(bundle, work_dir / "mimmx" / "models" / "model.pt", datalist)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
