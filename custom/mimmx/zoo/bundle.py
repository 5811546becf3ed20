"""``mimmx export-bundle``: a trained bundle -> a self-contained, zoo-ready bundle folder and zip.

The artefact runs with only the packages its metadata lists: the code the configs reach is vendored into
``scripts/`` (:mod:`mimmx.zoo.vendor`), the configs are JSON pointing at it (:mod:`mimmx.zoo.configs`),
the package lists are derived from what the code and configs import (:mod:`mimmx.zoo.requirements`), and the
weights, their TorchScript export, a few sample images and a model card with the measured metrics ship with it.
It is built under a temporary name and renamed when complete, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from mimmx.errors import ConfigError, DataError
from mimmx.io_utils import atomic_path
from mimmx.zoo.configs import SAMPLE_DIR, exported_configs, load_config, write_json
from mimmx.zoo.model_card import eval_metrics, render_model_card
from mimmx.zoo.requirements import code_modules, config_modules, package_versions
from mimmx.zoo.vendor import PACKAGE, VENDORED_PACKAGE, module_closure, vendor_modules

__all__ = ["export_bundle", "sha256"]

LARGE_FILES = ("models/model.pt", "models/model.ts")
SYNTHETIC_MARKER = "synthetic_cohort.json"  # written next to a cohort table by mimmx's generators
TS_TOLERANCE = 1e-5


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (what ``large_files.yml`` records and ``monai.bundle.download_large_files`` checks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"export-bundle: {path} not found; {what}")
    return path


def _datalist_path(root: Path, train_yaml: Path) -> Path:
    """The data list the weights were trained on: ``dataset_dir`` / ``datalist_file`` of train.yaml."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(load_config(train_yaml))
    parser["bundle_root"] = str(root)
    return Path(parser.get_parsed_content("dataset_dir")) / parser.get_parsed_content("datalist_file")


def _check_weights(root: Path, weights: Path) -> torch.nn.Module:
    """The inference network with the weights loaded strictly: a checkpoint of another layout fails here, by name."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(load_config(root / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(root)
    network = parser.get_parsed_content("network_def")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(
            f"export-bundle: {weights} does not fit `network_def` of {root / 'configs' / 'inference.yaml'} "
            f"(was it trained with other overrides?): {err}"
        ) from err
    return network.eval()


def _samples(datalist_file: Path, class_names: list[str], per_class: int, out_dir: Path) -> list[tuple[str, str]]:
    """Copy ``per_class`` images of each class from the test_balanced split; returns ``(file name, class)``."""
    from mimmx.data import datalist_base_dir

    items = json.loads(datalist_file.read_text()).get("test_balanced") or []
    base = Path(datalist_base_dir(datalist_file))
    chosen: list[tuple[str, str]] = []
    for label, class_name in enumerate(class_names):
        picks = [i for i in items if int(i["label"]) == label][:per_class]
        for n, item in enumerate(picks):
            source = base / item["image"]
            suffix = "".join(source.suffixes[-2:]) if source.name.endswith(".nii.gz") else source.suffix
            name = f"{class_name}_{n}{suffix}"
            shutil.copyfile(source, out_dir / name)
            chosen.append((name, class_name))
    if not chosen:
        raise DataError(f"export-bundle: {datalist_file} has no test_balanced images to ship as sample data.")
    return chosen


def _export_torchscript(bundle: Path) -> None:
    """``ckpt_export`` run the zoo's way: inside the new bundle, with its folder (and ``scripts``) on sys.path."""
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts"]
    cmd += ["--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json"]
    cmd += ["--config_file", "configs/inference.json"]
    env = {**os.environ, "PYTHONPATH": str(bundle)}
    done = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not (bundle / "models" / "model.ts").is_file():
        raise ConfigError(f"export-bundle: ckpt_export failed in {bundle}:\n{done.stderr[-3000:]}")


def _check_torchscript(ts_file: Path, network: torch.nn.Module, shape: list[int]) -> float:
    """Largest difference between the TorchScript file and the eager network on one random batch."""
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (torch.jit.load(str(ts_file), map_location="cpu")(x) - network(x)).abs().max().item()
    if diff > TS_TOLERANCE:
        raise ConfigError(f"export-bundle: {ts_file} differs from the eager network by {diff:.2e} (> {TS_TOLERANCE}).")
    return diff


def _metadata(source: Mapping[str, Any], packages: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict:
    meta = dict(source)
    if meta.get("version") not in meta.get("changelog", {}):
        raise ConfigError(f"export-bundle: metadata version {meta.get('version')!r} has no changelog entry.")
    meta.update(packages)
    meta["eval_metrics"] = eval_metrics(metrics)
    return meta


def export_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str | None = None,
    weights_url: str | None = None,
    data_license: str | os.PathLike | None = None,
    samples_per_class: int = 2,
) -> Path:
    """Write ``out_dir/<name>/`` and ``out_dir/<name>.zip`` from a trained and evaluated bundle; returns the zip.

    Args:
        bundle_dir: a mimmx bundle with ``models/model.pt`` (training) and ``eval/metrics.json`` (evaluation).
        out_dir: where the folder and the zip go (an existing export of the same name is replaced).
        name: the exported bundle's name; default ``<folder>_classification`` (the zoo names carry the task).
        weights_url: where ``models/model.pt`` and ``.ts`` will be hosted (``<url>/<name>_model.pt``), for
            ``large_files.yml``; without it the files ship in the zip and the url is left empty.
        data_license: a text file with the training data's licence; required when the weights come from a real
            cohort (no ``synthetic_cohort.json`` next to its table), copied to ``docs/data_license.txt``.
        samples_per_class: test_balanced images per class copied to ``sample_data/``.

    Raises:
        ConfigError: weights, metrics or a config missing (named), weights that do not fit the network, a failed
            TorchScript export; DataError: no sample images, or real-cohort weights without a data licence.
    """
    root = Path(bundle_dir).resolve()
    configs_dir = root / "configs"
    train_yaml = _require(configs_dir / "train.yaml", "is this a mimmx bundle?")
    meta_file = _require(configs_dir / "metadata.json", "every bundle needs configs/metadata.json.")
    license_file = _require(root / "LICENSE", "the zoo requires a LICENSE file in the bundle.")
    weights = _require(
        root / "models" / "model.pt",
        f"the bundle has no trained weights: train it first (python -m monai.bundle run training "
        f"--bundle_root {root} --config_file {train_yaml}).",
    )
    metrics_file = _require(
        root / "eval" / "metrics.json",
        f"the model card needs measured metrics: evaluate first (mimmx evaluate {root}).",
    )
    datalist_file = _require(_datalist_path(root, train_yaml), "the data list of the training run is needed.")
    cohort_csv = Path(json.loads(datalist_file.read_text())["metadata"]["cohort"]["csv"])
    if not (cohort_csv.parent / SYNTHETIC_MARKER).is_file() and data_license is None:
        raise DataError(
            f"export-bundle: the weights come from the cohort {cohort_csv}, not the synthetic default; pass "
            "--data_license FILE with the data's licence terms (it ships as docs/data_license.txt)."
        )
    network = _check_weights(root, weights)
    name = name or f"{root.name}_classification"
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    staging.chmod(0o755)
    try:
        _build(root, staging, name, weights, metrics_file, datalist_file, meta_file, license_file, samples_per_class)
        if data_license is not None:
            shutil.copyfile(data_license, staging / "docs" / "data_license.txt")
        _check_torchscript(staging / "models" / "model.ts", network, _input_shape(meta_file))
        _write_large_files(staging, name, weights_url)
        final = out / name
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    zip_file = out / f"{name}.zip"
    with atomic_path(zip_file) as tmp:  # tmp ends in .zip, which make_archive appends
        shutil.make_archive(str(tmp)[: -len(".zip")], "zip", root_dir=out, base_dir=name)
    return zip_file


def _input_shape(meta_file: Path) -> list[int]:
    image = json.loads(meta_file.read_text())["network_data_format"]["inputs"]["image"]
    return [int(image["num_channels"]), *(int(s) for s in image["spatial_shape"])]


def _build(
    root: Path,
    staging: Path,
    name: str,
    weights: Path,
    metrics_file: Path,
    datalist_file: Path,
    meta_file: Path,
    license_file: Path,
    samples_per_class: int,
) -> None:
    import mimmx

    for sub in ("configs", "models", "docs", SAMPLE_DIR, VENDORED_PACKAGE):
        (staging / sub).mkdir()
    source_train = load_config(root / "configs" / "train.yaml")
    class_names = [str(c) for c in source_train.get("class_names", [])]
    samples = _samples(datalist_file, class_names, samples_per_class, staging / SAMPLE_DIR)
    suffixes = sorted({Path(f).name.split(".", 1)[1] for f, _ in samples})
    sample_glob = f"{SAMPLE_DIR}/*.{suffixes[0]}" if len(suffixes) == 1 else f"{SAMPLE_DIR}/*"
    configs = exported_configs(root / "configs", sample_glob)
    for stem, config in configs.items():
        write_json(staging / "configs" / f"{stem}.json", config)
    logging_conf = root / "configs" / "logging.conf"
    if logging_conf.is_file():
        shutil.copyfile(logging_conf, staging / "configs" / "logging.conf")

    package_root = Path(mimmx.__file__).parent
    modules, components = config_modules(load_config(p) for p in sorted((root / "configs").glob("*.yaml")))
    closure = module_closure(package_root, [m for m in modules if m.split(".")[0] == PACKAGE])
    files = vendor_modules(package_root, closure, staging / VENDORED_PACKAGE)
    packages = package_versions(modules | code_modules(files), components, skip={PACKAGE, VENDORED_PACKAGE})
    metrics = json.loads(metrics_file.read_text())
    meta = _metadata(json.loads(meta_file.read_text()), packages, metrics)
    write_json(staging / "configs" / "metadata.json", meta)

    shutil.copyfile(weights, staging / "models" / "model.pt")
    for sidecar in weights.parent.glob(weights.name + ".*"):  # e.g. model.pt.sha256, checked when loading
        shutil.copyfile(sidecar, staging / "models" / sidecar.name.replace(weights.name, "model.pt", 1))
    _export_torchscript(staging)
    shutil.copyfile(license_file, staging / "LICENSE")
    history_file = root / "eval" / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    split_report = json.loads(datalist_file.read_text())["metadata"].get("split_report", {})
    card = render_model_card(name, meta, configs["train"], metrics, history, split_report, samples)
    (staging / "docs" / "README.md").write_text(card)


def _write_large_files(bundle: Path, name: str, weights_url: str | None) -> None:
    entries = []
    for rel in LARGE_FILES:
        url = f"{weights_url.rstrip('/')}/{name}_{Path(rel).name}" if weights_url else ""
        entries.append({"path": rel, "url": url, "hash_val": sha256(bundle / rel), "hash_type": "sha256"})
    (bundle / "large_files.yml").write_text(yaml.safe_dump({"large_files": entries}, sort_keys=False))
