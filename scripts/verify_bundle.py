"""Verify exported bundles the way the model zoo does, in a fresh environment that has only their metadata's packages.

    python scripts/verify_bundle.py dist/mimmx_cxr_classification.zip dist/mimmx_mri_classification.zip \
        --schema ../shared/monai/meta_schema_20240725.json [--venv /tmp/zoo-venv]

For each zip: a new virtual environment gets ``torch`` first (pinned: an unpinned one pulls a CUDA build), then
``monai``, ``numpy`` and every key of ``required_packages_version`` and ``optional_packages_version`` at its
version, and nothing else (``import mimmx`` must fail there). The zip is unpacked to a fresh folder and this same
file runs inside that environment (``--inside``), with the bundle folder on ``sys.path`` as the zoo puts it:
``verify_metadata`` against the schema file, the large files' SHA-256, ``verify_net_in_out``, ``ckpt_export``
(equal to the shipped ``model.ts``), ``monai.bundle.load`` returning the network with the shipped weights,
``ConfigWorkflow(...).check_properties()`` and a run of train, evaluate (train + evaluate configs) and inference
as the zoo's unit tests do (training small, with the bundle's ``configs/smoke_test.json`` on its synthetic
cohort), and the documented inference command
``python -m monai.bundle run --config_file configs/inference.json`` from the bundle folder.

The zoo downloads the schema named in the metadata; offline, pass a copy with ``--schema``. Exit status 0 only
when every check of every bundle passed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

QUICK_EVAL = {"bootstrap_samples": 20, "posthoc_mi_steps": 20}
_MADE: dict[Path, str] = {}  # environments this run created: bundles with the same pins share one


def _log(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------------------------- outside: driver
def requirements(meta: dict) -> tuple[str, list[str]]:
    """``(torch pin, other pins)`` exactly as the metadata lists them."""
    pins = [f"monai=={meta['monai_version']}", f"numpy=={meta['numpy_version']}"]
    for key in ("required_packages_version", "optional_packages_version"):
        pins += [f"{name}=={version}" for name, version in meta.get(key, {}).items()]
    return f"torch=={meta['pytorch_version']}", pins


def make_venv(path: Path, meta: dict, reuse: bool = False) -> Path:
    """A fresh virtual environment with the metadata's packages only; returns its python.

    ``reuse`` keeps an environment made earlier by this script for the same pins (for quick re-runs)."""
    torch_pin, pins = requirements(meta)
    python = path / "bin" / "python"
    stamp = path / "verify_bundle_pins.txt"
    wanted = "\n".join([torch_pin, *pins])
    if _MADE.get(path) == wanted or (reuse and stamp.is_file() and stamp.read_text() == wanted):
        _log(f"  venv {path}: reused (same pins)")
    else:
        if path.exists():
            shutil.rmtree(path)
        venv.create(path, with_pip=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _log(f"  venv {path}: {torch_pin}, then {' '.join(pins)}")
        subprocess.run([*pip, torch_pin], check=True)
        subprocess.run([*pip, torch_pin, *pins], check=True)
        stamp.write_text(wanted)
        _MADE[path] = wanted
    probe = subprocess.run([str(python), "-c", "import mimmx"], capture_output=True)
    if probe.returncode == 0:
        raise SystemExit(f"{path}: mimmx is importable in the fresh environment; the check would prove nothing.")
    return python


def verify_zip(zip_file: Path, schema: Path, venv_dir: Path | None, reuse: bool = False) -> bool:
    with zipfile.ZipFile(zip_file) as zf:
        names = zf.namelist()
        top = names[0].split("/")[0]
        meta = json.loads(zf.read(f"{top}/configs/metadata.json"))
        work = Path(tempfile.mkdtemp(prefix=f"verify_{top}_"))
        zf.extractall(work)
    bundle = work / top
    _log(f"== {zip_file} -> {bundle}")
    start = time.time()
    python = make_venv(venv_dir or work / "venv", meta, reuse)
    _log(f"  environment ready in {time.time() - start:.0f} s")
    checker = shutil.copy(Path(__file__), work / "verify_inside.py")  # nothing of the repository on sys.path
    cmd = [str(python), str(checker), "--inside", str(bundle), "--schema", str(schema.resolve())]
    done = subprocess.run(cmd, cwd=work)
    _log(f"== {top}: {'PASSED' if done.returncode == 0 else 'FAILED'} ({time.time() - start:.0f} s in all)")
    return done.returncode == 0


# ------------------------------------------------------------------------------- inside: the fresh environment
def _check(name: str, fn, *args) -> None:
    start = time.time()
    detail = fn(*args)
    _log(f"  PASS {name} ({time.time() - start:.1f} s){': ' + detail if detail else ''}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_metadata(bundle: Path, schema: Path) -> str:
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(bundle / "configs/metadata.json"), filepath=str(schema))
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    if meta["version"] not in meta["changelog"]:
        raise AssertionError(f"version {meta['version']} has no changelog entry")
    return f"schema {schema.name}, version {meta['version']}"


def check_large_files(bundle: Path) -> str:
    import yaml

    entries = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    for entry in entries:
        if entry["hash_type"] != "sha256" or _sha256(bundle / entry["path"]) != entry["hash_val"]:
            raise AssertionError(f"{entry['path']}: SHA-256 differs from large_files.yml")
    return ", ".join(e["path"] for e in entries)


def check_net_in_out(bundle: Path) -> str:
    from monai.bundle import verify_net_in_out

    cfg = bundle / "configs"
    verify_net_in_out(
        net_id="network_def", meta_file=str(cfg / "metadata.json"), config_file=str(cfg / "inference.json")
    )
    return ""


def _input(bundle: Path):
    import torch

    image = json.loads((bundle / "configs/metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    return torch.rand(2, image["num_channels"], *image["spatial_shape"], generator=torch.Generator().manual_seed(0))


def check_ckpt_export(bundle: Path, tmp: Path) -> str:
    import torch
    from monai.bundle import ckpt_export

    cfg = bundle / "configs"
    ts = tmp / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(bundle / "models/model.pt"),
        meta_file=str(cfg / "metadata.json"),
        config_file=str(cfg / "inference.json"),
    )
    x = _input(bundle)
    with torch.no_grad():
        diff = (torch.jit.load(str(ts))(x) - torch.jit.load(str(bundle / "models/model.ts"))(x)).abs().max().item()
    if diff > 1e-5:
        raise AssertionError(f"re-exported TorchScript differs from models/model.ts by {diff}")
    return f"max |new - shipped model.ts| = {diff:.1e}"


def check_load(bundle: Path) -> str:
    import torch
    from monai.bundle import load

    shipped = torch.load(bundle / "models/model.pt", map_location="cpu", weights_only=True)
    for workflow_type in ("train", "inference"):
        net = load(bundle.name, bundle_dir=str(bundle.parent), workflow_type=workflow_type)
        if not isinstance(net, torch.nn.Module):
            raise AssertionError(f"monai.bundle.load(workflow_type={workflow_type!r}) returned {type(net).__name__}")
        state = net.state_dict()
        if state.keys() != shipped.keys() or any(not torch.equal(state[k], shipped[k]) for k in shipped):
            raise AssertionError(f"monai.bundle.load(workflow_type={workflow_type!r}) lacks the shipped weights")
    return f"{type(net).__module__}.{type(net).__name__} with models/model.pt (train and inference configs)"


def _workflow(bundle: Path, configs: list[str], workflow_type: str, **overrides):
    from monai.bundle import ConfigWorkflow

    cfg = bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(cfg / c) for c in configs],
        meta_file=str(cfg / "metadata.json"),
        logging_file=str(cfg / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise AssertionError(f"check_properties({workflow_type}) on {configs}: missing {missing}")
    workflow.run()
    workflow.finalize()
    return workflow


def check_train_evaluate(bundle: Path, tmp: Path) -> str:
    small = json.loads((bundle / "configs/smoke_test.json").read_text())  # the bundle's own small settings
    outputs = {
        "bundle_root": str(bundle),
        "dataset_dir": str(tmp / "data"),
        "ckpt_dir": str(tmp / "models"),
        "output_dir": str(tmp / "eval"),
        "log_dir": str(tmp / "logs"),
    }
    # the smoke test's cohort, generated into the run's own folder on purpose (set after smoke_test's cohort#synthetic)
    small = {**small, "cohort#synthetic#into_dataset_dir": True}
    _workflow(bundle, ["train.json"], "train", **outputs, **small)
    if not (tmp / "models" / "model.pt").is_file():
        raise AssertionError("training wrote no models/model.pt")
    _workflow(bundle, ["train.json", "evaluate.json"], "train", **outputs, **small, **QUICK_EVAL)
    metrics = json.loads((tmp / "eval" / "metrics.json").read_text())
    return f"1 epoch; evaluate: test_inverted AUROC {metrics['summary']['test_inverted_auroc']:.3f} (1-epoch model)"


def _predictions(path: Path) -> dict[str, list[float]]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {Path(r["image"]).name: [float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows}


def check_inference(bundle: Path, tmp: Path) -> str:
    samples = sorted(p.name for p in (bundle / "sample_data").iterdir())
    _workflow(bundle, ["inference.json"], "infer", bundle_root=str(bundle), output_dir=str(tmp / "infer"))
    by_workflow = _predictions(tmp / "infer" / "predictions.csv")
    if sorted(by_workflow) != samples:
        raise AssertionError(f"inference predicted {sorted(by_workflow)}, expected the samples {samples}")
    # the documented command, from the bundle folder (the zoo's convention puts it on sys.path)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    cmd += ["--output_dir", str(tmp / "cli")]
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    by_cli = _predictions(tmp / "cli" / "predictions.csv")
    diff = max(abs(a - b) for k in samples for a, b in zip(by_cli[k], by_workflow[k]))
    if diff > 1e-6:
        raise AssertionError(f"the CLI and ConfigWorkflow predictions differ by {diff}")
    lines = [f"{k}: {[round(p, 4) for p in v]}" for k, v in sorted(by_cli.items())]
    return f"{len(samples)} sample images; " + "; ".join(lines)


def inside(bundle: Path, schema: Path) -> int:
    sys.path.insert(0, str(bundle))  # as the zoo's CI does: custom code is ``scripts.*``
    try:
        import mimmx  # noqa: F401

        _log("  FAIL mimmx is importable here")
        return 1
    except ImportError:
        _log("  PASS mimmx is not installed in this environment")
    tmp = Path(tempfile.mkdtemp(prefix="verify_run_"))
    checks = [
        ("verify_metadata", check_metadata, bundle, schema),
        ("large_files.yml SHA-256", check_large_files, bundle),
        ("verify_net_in_out", check_net_in_out, bundle),
        ("ckpt_export", check_ckpt_export, bundle, tmp),
        ("monai.bundle.load", check_load, bundle),
        ("train + evaluate (check_properties, run)", check_train_evaluate, bundle, tmp),
        ("inference (check_properties, run; CLI)", check_inference, bundle, tmp),
    ]
    failed = 0
    for name, fn, *args in checks:
        try:
            _check(name, fn, *args)
        except Exception as err:  # report every check (with the root cause), then fail
            failed += 1
            cause = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            _log(f"  FAIL {name}: {type(err).__name__}: {err}")
            if cause is not err:
                _log(f"    cause: {cause!r}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="exported bundle zips (mimmx export-bundle)")
    parser.add_argument("--schema", type=Path, required=True, help="local copy of the metadata's JSON schema")
    parser.add_argument("--venv", type=Path, default=None, help="where to create the fresh environment")
    parser.add_argument("--reuse-venv", action="store_true", help="keep a --venv made earlier for the same pins")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.schema.is_file():
        raise SystemExit(f"--schema {args.schema}: no such file (the zoo's meta_schema_*.json)")
    if args.inside:
        return inside(args.bundles[0], args.schema)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = {z.name: verify_zip(z, args.schema, args.venv, args.reuse_venv) for z in args.bundles}
    _log("\n".join(f"{name}: {'PASSED' if ok else 'FAILED'}" for name, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
