"""Every method on both bundles' default synthetic cohorts, several seeds, one run: the side-by-side benchmark.

    python scripts/benchmark.py                  # 8 methods x {cxr, mri} x 3 seeds -> docs/benchmarks.md,
                                                 #   docs/results/benchmark.json, docs/results/benchmark.png
    python scripts/benchmark.py --quick          # CI check: small CXR cohort, one seed, erm and mimmx;
                                                 #   exits 1 unless MIMM-X's test_inverted AUC is above ERM's

Each run goes through ``python -m monai.bundle run training`` and ``run evaluating`` with the method's overrides
from :mod:`mimmx.methods`, exactly as a user would train it. All methods share data, network, epochs and model
selection (best validation AUC on the training-correlated val split). A seed changes the split draw (own data list
per seed), the initialisation and the batch order. ``epoch_time_vs_erm`` compares mean epoch wall times (first
epoch, the cache warm-up, left out) under the same number of parallel jobs and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import date
from pathlib import Path

from tqdm import tqdm

from mimmx.io_utils import atomic_path, atomic_write_json, atomic_write_text
from mimmx.methods import DESCRIPTIONS, METHODS, method_overrides

ROOT = Path(__file__).resolve().parents[1]
COHORTS = {"cxr": ROOT / "bundles" / "mimmx_cxr", "mri": ROOT / "bundles" / "mimmx_mri"}
SPLIT_KEYS = ("test_id", "test_inverted", "test_balanced")
QUICK = {  # a smaller cohort and budget for the CI check (same protocol: rho 0.9, same model selection)
    "cohort#synthetic#num_patients": 4000,
    "splits#sizes": {"train": 800, "val": 200, "test_id": 200, "test_inverted": 200, "test_balanced": 200},
    "max_epochs": 20,
}


def bundle_command(run_id: str, bundle: Path, overrides: dict) -> list[str]:
    configs = [bundle / "configs" / "train.yaml"]
    if run_id == "evaluating":
        configs.append(bundle / "configs" / "evaluate.yaml")
    files = str([str(c) for c in configs]) if len(configs) > 1 else str(configs[0])
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--bundle_root", str(bundle), "--config_file", files]
    cmd += ["--logging_file", str(bundle / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value)]  # fire reads Python literals
    return cmd


def run_overrides(method: str, seed: int, out: Path, extra: dict) -> dict:
    overrides = method_overrides(method)
    stem = "datalist_oracle" if method == "oracle" else "datalist"
    overrides["datalist_file"] = f"{stem}_seed{seed}.json"
    return {
        "seed": seed,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        "log_dir": str(out / "logs"),
        **overrides,
        **extra,
    }


def prepare_data(bundle: Path, seed: int, oracle: bool, extra: dict) -> None:
    """Write the data list (and generate the cohort) once, before parallel runs would race on it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.yaml"))
    overrides = {"bundle_root": str(bundle), **run_overrides("oracle" if oracle else "erm", seed, Path("."), extra)}
    for key, value in overrides.items():
        if key in ("ckpt_dir", "output_dir", "log_dir"):
            continue
        parser[key] = value
    parser.get_parsed_content("datalist")


def run_one(cohort: str, method: str, seed: int, work_dir: Path, extra: dict, env: dict, reuse: bool) -> dict:
    bundle = COHORTS[cohort]
    out = work_dir / cohort / method / f"seed{seed}"
    metrics_file = out / "eval" / "metrics.json"
    if not (reuse and metrics_file.is_file()):
        out.mkdir(parents=True, exist_ok=True)
        overrides = run_overrides(method, seed, out, extra)
        with open(out / "run.log", "w") as log:
            for run_id in ("training", "evaluating"):
                cmd = bundle_command(run_id, bundle, overrides)
                log.write(f"$ {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                if proc.returncode != 0:
                    raise RuntimeError(f"{cohort}/{method}/seed{seed} {run_id} failed; see {out / 'run.log'}")
    metrics = json.loads(metrics_file.read_text())
    history = json.loads((out / "eval" / "history.json").read_text())
    seconds = [h["epoch_seconds"] for h in history[1:]] or [h["epoch_seconds"] for h in history]
    summary = metrics["summary"]
    return {
        "cohort": cohort,
        "method": method,
        "seed": seed,
        **{f"{s}_auc": summary.get(f"{s}_auroc") for s in SPLIT_KEYS},
        "worst_group_auc": summary.get("worst_group_auroc"),
        "leakage_auc": summary.get("leakage_auc") or {},
        "switched_auc": summary.get("switched_auroc") or {},
        "epoch_seconds": statistics.mean(seconds),
    }


def mean_std(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def aggregate(runs: list[dict], cohorts: list[str], methods: list[str]) -> dict:
    out: dict = {}
    for cohort in cohorts:
        rows = [r for r in runs if r["cohort"] == cohort]
        erm_time = [r["epoch_seconds"] for r in rows if r["method"] == "erm"]
        out[cohort] = {}
        for method in methods:
            mine = [r for r in rows if r["method"] == method]
            if not mine:
                continue
            factors = list(mine[0]["leakage_auc"])
            entry = {"seeds": len(mine)}
            for key in ("test_id_auc", "test_inverted_auc", "test_balanced_auc", "worst_group_auc"):
                entry[key] = mean_std([r[key] for r in mine])
            entry["leakage_auc"] = {f: mean_std([r["leakage_auc"].get(f) for r in mine]) for f in factors}
            entry["switched_auc"] = {f: mean_std([r["switched_auc"].get(f) for r in mine]) for f in factors}
            entry["epoch_seconds"] = statistics.mean(r["epoch_seconds"] for r in mine)
            entry["epoch_time_vs_erm"] = entry["epoch_seconds"] / statistics.mean(erm_time) if erm_time else None
            out[cohort][method] = entry
    return out


def targets(cohort: dict) -> list[str]:
    """The issue's targets, checked on the aggregated numbers of one cohort."""
    lines = []
    mimmx, oracle = cohort.get("mimmx"), cohort.get("oracle")
    if not mimmx:
        return lines
    inv = mimmx["test_inverted_auc"]["mean"]
    if oracle and inv is not None and oracle["test_inverted_auc"]["mean"]:
        ratio = inv / oracle["test_inverted_auc"]["mean"]
        lines.append(f"MIMM-X test_inverted AUC >= 95% of the oracle's: {ratio:.0%} of it -> {_met(ratio >= 0.95)}")
    others = {m: v["test_inverted_auc"]["mean"] for m, v in cohort.items() if m not in ("mimmx", "oracle")}
    if others and inv is not None:
        best = max(others, key=lambda m: others[m] if others[m] is not None else -1)
        lines.append(
            f"MIMM-X above every non-oracle method on test_inverted: {inv:.3f} vs best other {best} "
            f"{others[best]:.3f} -> {_met(all(v is None or inv > v for v in others.values()))}"
        )
    leak = {f: v["mean"] for f, v in mimmx["leakage_auc"].items()}
    if leak:
        worst = max(leak, key=lambda f: leak[f] if leak[f] is not None else -1)
        lines.append(
            f"causal-partition leakage-probe AUC <= 0.60 for every factor: highest {worst} {leak[worst]:.3f} "
            f"-> {_met(all(v is not None and v <= 0.60 for v in leak.values()))}"
        )
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def fmt(m: dict) -> str:
    return "n/a" if m["mean"] is None else f"{m['mean']:.3f} ± {m['std']:.3f}"


def write_markdown(path: Path, result: dict) -> None:
    lines = [
        "# Benchmark: MIMM-X against the usual remedies",
        "",
        f"Produced by `{result['command']}` on {result['date']} ({result['machine']}; {result['jobs']} runs in "
        f"parallel, {result['threads']} torch thread(s) each). Mean ± standard deviation over {result['seeds']} "
        "seeds (a seed redraws the splits, the initialisation and the batch order).",
        "",
        "Columns: causal AUROC on test_id (training correlation rho 0.9), test_inverted (1 - rho) and test_balanced "
        "(0.5); worst-group AUROC = the lowest AUROC within one factor value on test_balanced, over all factors; "
        "leakage = cross-validated logistic-probe AUROC from the causal partition to each factor on test_balanced "
        "(ideal 0.5); epoch time relative to ERM.",
        "",
        "Methods (all share data, network, epochs and model selection; `mimmx methods` prints their overrides):",
        "",
    ]
    lines += [f"- **{m}**: {DESCRIPTIONS[m]}" for m in result["methods"]]
    for cohort, table in result["cohorts"].items():
        factors = list(next(iter(table.values()))["leakage_auc"]) if table else []
        head = ["method", "test_id", "test_inverted", "test_balanced", "worst group"]
        head += [f"leakage {f}" for f in factors] + ["epoch time vs ERM"]
        lines += ["", f"## {cohort.upper()} ({COHORTS[cohort].name})", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, v in table.items():
            cells = [method, fmt(v["test_id_auc"]), fmt(v["test_inverted_auc"]), fmt(v["test_balanced_auc"])]
            cells += [fmt(v["worst_group_auc"])] + [fmt(v["leakage_auc"][f]) for f in factors]
            cells.append("n/a" if v["epoch_time_vs_erm"] is None else f"{v['epoch_time_vs_erm']:.2f}x")
            lines.append("| " + " | ".join(cells) + " |")
        checks = targets(table)
        if checks:
            lines += ["", "Targets:", ""] + [f"- {c}" for c in checks]
    if result.get("figure"):
        lines += [
            "",
            "## test_inverted AUROC at a glance",
            "",
            f"![test_inverted AUROC per method]({result['figure']})",
        ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot(path: Path, cohorts: dict) -> None:
    """Bars of test_inverted and test_balanced AUROC per method (mean ± std), one panel per cohort."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(cohorts), 4.2), dpi=120, layout="constrained")
    axes = fig.subplots(1, len(cohorts), squeeze=False)[0]
    for ax, (cohort, table) in zip(axes, cohorts.items()):
        methods = list(table)
        x = range(len(methods))
        for offset, key, label in (
            (-0.2, "test_inverted_auc", "test_inverted"),
            (0.2, "test_balanced_auc", "test_balanced"),
        ):
            means = [table[m][key]["mean"] or 0.0 for m in methods]
            stds = [table[m][key]["std"] or 0.0 for m in methods]
            ax.bar([i + offset for i in x], means, 0.4, yerr=stds, capsize=3, label=label)
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(list(x), methods, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("causal AUROC (mean ± std over seeds)")
        ax.set_title(f"{cohort.upper()}: AUROC where the shortcut fails")
        ax.legend(loc="upper left", fontsize=8)
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        fig.savefig(fh, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohorts", default="cxr,mri")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="runs in parallel")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "benchmark.json")
    parser.add_argument("--reuse", action="store_true", help="keep runs whose metrics.json exists (resume)")
    parser.add_argument("--quick", action="store_true", help="CI check: small CXR cohort, 1 seed, erm vs mimmx")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"), help="override")
    args = parser.parse_args()

    extra: dict = {"bootstrap_samples": 0, "write_report": False, "posthoc_mi_steps": 300}
    cohorts = [c.strip() for c in args.cohorts.split(",") if c.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.quick:
        cohorts, methods, args.seeds = ["cxr"], ["erm", "mimmx"], 1
        args.work_dir = args.work_dir.with_name("benchmark_quick")
        extra.update(QUICK)
        extra["dataset_dir"] = str(args.work_dir / "data")
    for key, value in args.set:
        extra[key] = value
    unknown = [c for c in cohorts if c not in COHORTS] + [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown cohort/method {unknown}; cohorts {list(COHORTS)}, methods {list(METHODS)}")
    if "erm" not in methods:
        methods.insert(0, "erm")  # the reference for epoch times

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    for cohort in cohorts:
        for seed in range(args.seeds):
            for oracle in sorted({m == "oracle" for m in methods}):
                print(f"preparing {cohort} data (seed {seed}{', oracle' if oracle else ''})", flush=True)
                prepare_data(COHORTS[cohort], seed, oracle, extra)

    jobs = [(c, m, s) for c in cohorts for s in range(args.seeds) for m in methods]
    runs = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool, tqdm(total=len(jobs), desc="benchmark runs") as bar:
        futures = {pool.submit(run_one, c, m, s, args.work_dir, extra, env, args.reuse): (c, m, s) for c, m, s in jobs}
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            bar.update(1)
            bar.write(
                f"{run['cohort']}/{run['method']}/seed{run['seed']}: inverted {run['test_inverted_auc']:.3f}, "
                f"balanced {run['test_balanced_auc']:.3f}, {run['epoch_seconds']:.1f} s/epoch"
            )

    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {
        "command": command.strip(),
        "date": date.today().isoformat(),
        "machine": machine(),
        "jobs": args.jobs,
        "threads": threads,
        "seeds": args.seeds,
        "methods": methods,
        "wall_minutes": round((time.perf_counter() - start) / 60, 1),
        "cohorts": aggregate(runs, cohorts, methods),
        "runs": sorted(runs, key=lambda r: (r["cohort"], methods.index(r["method"]), r["seed"])),
    }
    for cohort, table in result["cohorts"].items():
        print(f"\n{cohort}:")
        for method, v in table.items():
            print(f"  {method:<12} inverted {fmt(v['test_inverted_auc'])}  balanced {fmt(v['test_balanced_auc'])}")
        for line in targets(table):
            print("  " + line)

    if args.quick:
        table = result["cohorts"]["cxr"]
        erm, mimmx = table["erm"]["test_inverted_auc"]["mean"], table["mimmx"]["test_inverted_auc"]["mean"]
        ok = mimmx is not None and erm is not None and mimmx > erm
        print(f"\nquick check: MIMM-X test_inverted AUC {mimmx:.3f} vs ERM {erm:.3f} -> {'pass' if ok else 'FAIL'}")
        raise SystemExit(0 if ok else 1)

    figure = args.json.parent / "benchmark.png"
    plot(figure, result["cohorts"])
    result["figure"] = os.path.relpath(figure, args.markdown.parent)
    atomic_write_json(args.json, result)
    write_markdown(args.markdown, result)
    print(f"\nwrote {args.markdown} and {args.json} in {result['wall_minutes']} min")


if __name__ == "__main__":
    main()
