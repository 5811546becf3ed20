"""How training and evaluation cost grow: writes docs/results/performance.json and docs/performance.md (with plots).

    python scripts/scaling.py            # the full grid and the default-settings measurements (30-60 min)
    python scripts/scaling.py --skip-grid --update   # re-measure some parts, keep the others in the JSON
    python scripts/scaling.py --quick    # a small grid, fewer repeats (a few minutes; numbers are rough)

Measured, each in a forked child process (scripts/bundle_timing.py), with the bundles' own network, optimiser,
augmentation, loss terms and MIMMXTrainer on synthetic tensors:

* the grid: seconds per training iteration and peak memory (resident set growth) of ERM (``[head_ce]``) and
  MIMM-X (``[head_ce_balanced, factor_mi]``) against the number of factors (1..6), the batch size (32..256) and the
  image size (2D CXR; a few 3D MRI sizes), every other setting at the bundle's default. MIMM-X's feature queue is
  filled and its penalty active, as in the steady state of a run;
* ``mi_overhead_ratio``: MIMM-X epoch / ERM epoch at the default CXR settings (training set, batch, image size,
  factors, queue, critic steps), in the steady state (queue full, penalty on): ERM and MIMM-X trainers in one
  process alternate blocks of a few iterations over the default-size training set, and the ratio is the median of
  the per-block ratios (an epoch is iterations x the same step, so this is the epoch time ratio);
* ``eval_seconds_before`` / ``eval_seconds_after``: scoring the three default test splits (400 images each, three
  factors, patients with several images, 1000 bootstrap resamples) with the per-resample reference bootstrap
  (scripts/reference_bootstrap.py) and with mimmx.metrics, alternating;
* the loaded-machine row: one MIMM-X epoch at the default settings with the automatic thread count
  (mimmx.threads), torch's default, and one thread, alternating, while whatever else runs on the machine runs.

Timings on a shared machine drift: every comparison alternates A, B, A, B in the same conditions and reports the
median, and the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_timing as bt  # noqa: E402
from measurement_context import ROOT, machine_info  # noqa: E402
from tqdm import tqdm  # noqa: E402

FULL = {
    "factors": [1, 2, 3, 4, 5, 6],
    "batch_size": [32, 64, 128, 256],
    "image_size": [32, 64, 128],
    "mri_size": [32, 48, 64],
    "iterations": 20,
    "warmup_iterations": 2,
    "blocks": 40,
    "block_iterations": 5,
    "eval_repeats": 3,
    "n_boot": 1000,
    "loaded_blocks": 10,
}
QUICK = {
    "factors": [1, 3],
    "batch_size": [32, 64],
    "image_size": [32, 64],
    "mri_size": [32],
    "iterations": 3,
    "warmup_iterations": 1,
    "blocks": 2,
    "block_iterations": 2,
    "eval_repeats": 1,
    "n_boot": 100,
    "loaded_blocks": 1,
}
# the measurements one run can take or skip, with the keys each writes (``--update`` replaces whole parts)
PARTS = {
    "eval": (
        "eval_seconds_before",
        "eval_seconds_after",
        "eval_speedup",
        "eval_all_before",
        "eval_all_after",
        "eval_n_boot",
        "eval_scope",
    ),
    "overhead": ("mi_overhead_ratio", "mi_overhead"),
    "loaded": ("loaded_machine",),
    "grid": ("grid", "grid_note"),
    "gpu_profiles": ("gpu_profiles",),
}
# the steady state of a run: MIMM-X's queue full and its penalty at full weight (from epoch 13 of the default 30)
STEADY = {"loss#factor_mi#warmup_epochs": 0, "loss#factor_mi#ramp_epochs": 0}
GRID_NOTE = (
    "Steady state: feature queue filled, MIMM-X penalty at full weight (warm-up and ramp set to 0 for the timing "
    "only; in a default run that holds from epoch 13 of 30)."
)


def _iteration_point(bundle: str, overrides: dict, mimmx: bool, settings: dict) -> Callable[[], dict]:
    """Seconds per iteration (median) of one configuration, measured in the child."""

    def measure() -> dict:
        parser = bt.bundle_parser(bundle, overrides)
        shape = parser.get_parsed_content("image_size" if bundle == "cxr" else "spatial_size")
        batch = parser.get_parsed_content("batch_size")
        names = [f["name"] for f in parser.get_parsed_content("model_factors")]
        iterations = settings["warmup_iterations"] + settings["iterations"] + 1
        items = bt.synthetic_items(batch * iterations, shape, names)
        trainer = bt.build_trainer(parser, items, mimmx=mimmx)
        bt.fill_queues(trainer)
        seconds = bt.iteration_timer(trainer)
        bt.run_epochs(trainer, 1)
        timed = seconds[settings["warmup_iterations"] :]
        return {"seconds_per_iteration": statistics.median(timed), "iterations_timed": len(timed)}

    return measure


def grid(settings: dict, threads: int) -> list[dict]:
    """Every axis value x {ERM, MIMM-X}: one row each."""
    points = []
    for k in settings["factors"]:
        factors = bt.synthetic_factors(k)
        points.append(("cxr", "factors", k, {"factors": factors, **STEADY}))
    for b in settings["batch_size"]:
        points.append(("cxr", "batch_size", b, {"batch_size": b, **STEADY}))
    for s in settings["image_size"]:
        points.append(("cxr", "image_size", s, {"image_size": [s, s], **STEADY}))
    for s in settings["mri_size"]:
        points.append(("mri", "image_size", s, {"spatial_size": [s, s, s], **STEADY}))
    rows = []
    for bundle, axis, value, overrides in tqdm(points, desc="scaling grid", unit="point"):
        for method, mimmx in (("erm", False), ("mimmx", True)):
            result = bt.isolated(_iteration_point(bundle, overrides, mimmx, settings), threads)
            rows.append({"bundle": bundle, "axis": axis, "value": value, "method": method, **result})
    return rows


def _default_blocks(settings: dict, arms: dict[str, tuple[bool, int]]) -> Callable[[], dict]:
    """Blocks of a few iterations of the default CXR training, one trainer per arm (method, threads), alternating
    block by block; returns each arm's seconds per iteration, one value per block."""

    def measure() -> dict:
        import torch

        items, trainers, seconds = None, {}, {}
        block = settings["block_iterations"]
        for arm, (mimmx, _) in arms.items():
            parser = bt.bundle_parser("cxr", STEADY)
            if items is None:
                shape = parser.get_parsed_content("image_size")
                n = parser.get_parsed_content("splits#sizes#train")
                names = [f["name"] for f in parser.get_parsed_content("model_factors")]
                items = bt.synthetic_items(n, shape, names)
                per_epoch = n // parser.get_parsed_content("batch_size")
            trainers[arm] = bt.build_trainer(parser, items, mimmx=mimmx, epoch_length=block)
            bt.fill_queues(trainers[arm])
            seconds[arm] = bt.epoch_timer(trainers[arm])
        for _ in tqdm(range(settings["blocks"] + 1), desc="alternating blocks", unit="round", leave=False):
            for arm, (_, threads) in arms.items():
                torch.set_num_threads(threads)
                bt.run_epochs(trainers[arm], 1)
        out = {arm: [x / block for x in s[1:]] for arm, s in seconds.items()}  # the first block warms caches up
        out["iterations_per_epoch"] = per_epoch
        return out

    return measure


def mi_overhead(settings: dict, threads: int) -> dict:
    """MIMM-X / ERM epoch time at the default CXR settings: median of the per-block ratios."""
    out = bt.isolated(_default_blocks(settings, {"erm": (False, threads), "mimmx": (True, threads)}), threads)
    ratios = [m / e for e, m in zip(out["erm"], out["mimmx"])]
    per_epoch = out["iterations_per_epoch"]
    return {
        "mi_overhead_ratio": statistics.median(ratios),
        "block_ratios": ratios,
        "erm_epoch_seconds": statistics.median(out["erm"]) * per_epoch,
        "mimmx_epoch_seconds": statistics.median(out["mimmx"]) * per_epoch,
        "iterations_per_epoch": per_epoch,
        "block_iterations": settings["block_iterations"],
        "threads": threads,
        "peak_rss_mib": out["peak_rss_mib"],
    }


def loaded_row(settings: dict) -> dict:
    """MIMM-X epochs with the automatic thread count, torch's default and one thread, alternating by block."""
    import torch

    from mimmx.threads import choose_num_threads

    auto, source = choose_num_threads(None)
    default = torch.get_num_threads()
    arms = {"auto": (True, auto), "torch_default": (True, default), "one_thread": (True, 1)}
    out = bt.isolated(_default_blocks({**settings, "blocks": settings["loaded_blocks"]}, arms), auto)
    per_epoch = out["iterations_per_epoch"]
    return {
        "auto_threads": auto,
        "auto_source": source,
        "torch_default_threads": default,
        "epoch_seconds": {arm: statistics.median(out[arm]) * per_epoch for arm in arms},
        "blocks": settings["loaded_blocks"],
    }


def _eval_inputs(seed: int = 0) -> list[tuple]:
    """Three default-size test splits: outputs of a model that learned something, three binary factors, patients
    with 1.5 images each on average (the embedded CXR cohort's)."""
    import numpy as np

    from mimmx.factors import parse_factors

    parser = bt.bundle_parser("cxr")
    sizes = parser.get_parsed_content("splits#sizes")
    factors = parse_factors(parser.get_parsed_content("factors"))
    rng = np.random.default_rng(seed)
    splits = []
    for split in ("test_id", "test_inverted", "test_balanced"):
        n = sizes[split]
        y = rng.integers(0, 2, n)
        p1 = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0.001, 0.999).round(3)
        probs = {"causal": np.stack([1 - p1, p1], 1)}
        labels = {"causal": y}
        for f in factors:
            labels[f.name] = rng.integers(0, 2, n)
            probs[f.name] = probs["causal"]
        patients = [f"p{i}" for i in rng.integers(0, int(n / 1.5), n)]
        splits.append((probs, labels, factors, patients))
    return splits


def eval_timing(settings: dict) -> dict:
    """Scoring the default test splits with the reference bootstrap vs mimmx.metrics, alternating."""
    from reference_bootstrap import reference_metrics

    from mimmx.evaluation import score_split

    splits = _eval_inputs()

    def score_all() -> float:
        start = time.perf_counter()
        for probs, labels, factors, patients in splits:
            score_split(probs, labels, factors, ["neg", "pos"], n_boot=settings["n_boot"], patients=patients)
        return time.perf_counter() - start

    before, after = [], []
    for _ in tqdm(range(settings["eval_repeats"]), desc="evaluation before/after", unit="round"):
        after.append(score_all())
        with reference_metrics():
            before.append(score_all())
    return {
        "eval_seconds_before": statistics.median(before),
        "eval_seconds_after": statistics.median(after),
        "eval_speedup": statistics.median(before) / statistics.median(after),
        "eval_all_before": before,
        "eval_all_after": after,
        "eval_n_boot": settings["n_boot"],
        "eval_scope": "bootstrap scoring of test_id, test_inverted and test_balanced (score_split), 3 factors",
    }


def main(argv: list[str] | None = None) -> dict:
    args = _arguments(argv)
    settings = dict(QUICK if args.quick else FULL)
    for key in ("factors", "batch_size", "image_size", "mri_size"):
        value = getattr(args, key)
        if value:
            settings[key] = [int(v) for v in value.split(",")]
    for key in ("iterations", "blocks", "n_boot", "eval_repeats"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    from mimmx.threads import choose_num_threads

    threads = args.threads or choose_num_threads(None)[0]
    bt.preload()
    command = " ".join(["python", "scripts/scaling.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {
        "command": command,
        "quick": bool(args.quick),
        "machine": machine_info(),
        "torch_threads": threads,
        "load_average_before": list(os.getloadavg()),
        "note": args.note,
        "settings": settings,
    }
    if not args.skip_eval:
        results.update(eval_timing(settings))
    if not args.skip_overhead:
        overhead = mi_overhead(settings, threads)
        results["mi_overhead_ratio"] = overhead.pop("mi_overhead_ratio")
        results["mi_overhead"] = overhead
    if not args.skip_loaded:
        # its own conditions: a loaded row can be kept beside a grid measured later on a quiet machine
        load = list(os.getloadavg())
        results["loaded_machine"] = {**loaded_row(settings), "note": args.note, "load_average_before": load}
    if not args.skip_grid:
        results["grid"] = grid(settings, threads)
        results["grid_note"] = GRID_NOTE
    if args.gpu_profiles:
        from gpu_memory import profile_estimates

        results["gpu_profiles"] = profile_estimates()
    results["load_average_after"] = list(os.getloadavg())
    measured = [part for part, keys in PARTS.items() if any(k in results for k in keys)]
    results["commands"] = {part: command for part in measured}
    if args.update:
        results = merge_parts(_read_json(Path(args.json)), results, measured)
    _write(results, args)
    return results


def merge_parts(previous: dict, new: dict, measured: list[str]) -> dict:
    """``previous`` with the parts measured now replaced by ``new``'s; each part keeps the command that measured it
    (``commands``), so a page joined from several runs still says how to reproduce every number on it."""
    kept = {k: v for k, v in previous.items() if not any(k in PARTS[part] for part in measured)}
    commands = {**previous.get("commands", {}), **new["commands"]}
    return {**kept, **new, "commands": commands}


def _read_json(path: Path) -> dict:
    import json

    if not path.exists():
        raise SystemExit(f"--update: {path} does not exist yet; run once without --update to create it.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"--update: {path} is not valid JSON ({err}); expected scaling.py's own output.") from err


def _write(results: dict, args: argparse.Namespace) -> None:
    from performance_report import write_report

    from mimmx.io_utils import atomic_write_json

    atomic_write_json(args.json, results)
    if args.markdown:
        write_report(results, Path(args.markdown), Path(args.plots))
    print(f"wrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""))


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    root = ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small grid and fewer repeats")
    p.add_argument("--json", default=str(root / "docs" / "results" / "performance.json"))
    p.add_argument("--markdown", default=str(root / "docs" / "performance.md"), help="'' to skip")
    p.add_argument("--plots", default=str(root / "docs" / "performance"), help="folder of the PNG figures")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: mimmx.threads' choice)")
    p.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing --json: the parts measured now replace theirs, the others are kept",
    )
    p.add_argument("--note", default="", help="stored in the JSON, e.g. what else was running")
    p.add_argument("--factors", default="", help="comma-separated factor counts, e.g. 1,2,3")
    p.add_argument("--batch-size", dest="batch_size", default="", help="comma-separated batch sizes")
    p.add_argument("--image-size", dest="image_size", default="", help="comma-separated 2D image sizes")
    p.add_argument("--mri-size", dest="mri_size", default="", help="comma-separated 3D volume sizes")
    p.add_argument("--iterations", type=int, default=None, help="timed iterations per grid point")
    p.add_argument("--blocks", type=int, default=None, help="alternating blocks for the overhead ratio")
    p.add_argument("--n-boot", dest="n_boot", type=int, default=None, help="bootstrap resamples for the eval timing")
    p.add_argument("--eval-repeats", dest="eval_repeats", type=int, default=None, help="before/after rounds")
    p.add_argument("--gpu-profiles", dest="gpu_profiles", action="store_true", help="add the GPU profile estimates")
    for part in ("grid", "eval", "overhead", "loaded"):
        p.add_argument(f"--skip-{part}", dest=f"skip_{part}", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    main()
