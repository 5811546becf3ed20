"""mimmx export-bundle: a self-contained zoo bundle from a trained one, usable without the mimmx package."""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigParser, run

from mimmx.errors import ConfigError
from mimmx.zoo import export_bundle
from mimmx.zoo.vendor import rename_package

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
# the zoo's metadata schema (CI downloads it; offline a copy beside the repository, or MIMMX_META_SCHEMA)
SCHEMA = Path(
    os.environ.get(
        "MIMMX_META_SCHEMA", Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json"
    )
)
# the shipped configs made small (configs/smoke_test.yaml); written into a copy of the bundle, so that the exported
# configs match the weights
SMOKE = {
    name: ConfigParser.load_config_file(str(BUNDLES / f"mimmx_{name}" / "configs" / "smoke_test.yaml"))
    for name in ("cxr", "mri")
}
SMALL = {
    "cxr": {
        "train": SMOKE["cxr"],
        "inference": {"image_size": SMOKE["cxr"]["image_size"]},
        "metadata": {"network_data_format#inputs#image#spatial_shape": SMOKE["cxr"]["image_size"]},
    },
    "mri": {
        "train": SMOKE["mri"],
        "inference": {k: SMOKE["mri"][k] for k in ("pixdim", "spatial_size")},
        "metadata": {"network_data_format#inputs#image#spatial_shape": SMOKE["mri"]["spatial_size"]},
    },
}
SAMPLE_SUFFIX = {"cxr": ".png", "mri": ".nii.gz"}


def _small_copy(name: str, dest: Path) -> Path:
    """A copy of the bundle whose configs carry the small sizes (as a user's edited bundle would)."""
    root = dest / f"mimmx_{name}"
    shutil.copytree(BUNDLES / f"mimmx_{name}", root, ignore=shutil.ignore_patterns("data", "eval", "models", "logs"))
    for stem, overrides in SMALL[name].items():
        path = root / "configs" / (f"{stem}.json" if stem == "metadata" else f"{stem}.yaml")
        parser = ConfigParser(ConfigParser.load_config_file(str(path)))
        for key, value in overrides.items():
            parser[key] = value
        if stem == "metadata":
            path.write_text(json.dumps(parser.get(), indent=4))
        else:
            path.write_text(yaml.safe_dump(parser.get(), sort_keys=False))
    return root


@pytest.fixture(scope="module", params=["cxr", "mri"])
def exported(request, tmp_path_factory) -> tuple[str, Path, Path, Path]:
    name = request.param
    work = tmp_path_factory.mktemp(f"export_{name}")
    root = _small_copy(name, work)
    cfg = root / "configs"
    run("training", bundle_root=str(root), config_file=str(cfg / "train.yaml"))
    run(
        "evaluating",
        bundle_root=str(root),
        config_file=[str(cfg / "train.yaml"), str(cfg / "evaluate.yaml")],
        bootstrap_samples=20,
        probes=False,
        write_report=False,
    )
    zip_file = export_bundle(root, work / "dist")
    return name, root, zip_file.parent / zip_file.stem, zip_file


def test_export_refuses_a_bundle_without_weights(tmp_path):
    root = tmp_path / "mimmx_cxr"
    shutil.copytree(BUNDLES / "mimmx_cxr", root, ignore=shutil.ignore_patterns("data", "eval", "models", "logs"))
    with pytest.raises(ConfigError, match=r"models/model\.pt not found; the bundle has no trained weights"):
        export_bundle(root, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_feature_only_imports_are_optional_packages(monkeypatch):
    """mlflow is imported only under --tracking mlflow: never a required package, and no export error when absent."""
    from importlib import metadata

    from mimmx.zoo import requirements

    found = requirements.package_versions(["mlflow.entities", "monai.bundle", "nibabel"])
    assert "mlflow" not in found["required_packages_version"]
    assert "mlflow-skinny" not in found["required_packages_version"]
    assert "nibabel" in found["required_packages_version"]
    real = metadata.version

    def without_mlflow(name: str) -> str:
        if name.startswith("mlflow"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(requirements.metadata, "version", without_mlflow)
    monkeypatch.setattr(requirements.metadata, "packages_distributions", lambda: {})
    found = requirements.package_versions(["mlflow.entities", "monai.bundle"])
    assert not any(d.startswith("mlflow") for d in found["optional_packages_version"])
    with pytest.raises(ConfigError, match="not installed"):
        requirements.package_versions(["surely_not_a_module_xyz"])


def test_rename_package_changes_code_and_module_strings_only():
    source = (
        '"""mimmx.networks is described here, mimmx too."""\n'
        "import mimmx.data as d\n"
        "from mimmx.errors import ConfigError  # mimmx\n"
        'GEN = {"cxr": "mimmx.data.synthetic_cxr:generate"}\n'
        'log = getLogger("mimmx.data")\n'
        "other.mimmx = 1\n"
    )
    renamed = rename_package(source)
    assert renamed.splitlines()[0] == source.splitlines()[0]  # prose stays
    assert "import scripts.data as d" in renamed and "from scripts.errors import ConfigError  # mimmx" in renamed
    assert '"scripts.data.synthetic_cxr:generate"' in renamed and 'getLogger("scripts.data")' in renamed
    assert "other.mimmx = 1" in renamed


def test_export_writes_a_complete_zoo_bundle(exported):
    name, _, bundle, zip_file = exported
    expected = [
        "LICENSE",
        "large_files.yml",
        "docs/README.md",
        "models/model.pt",
        "models/model.ts",
        "scripts/__init__.py",
        "scripts/networks.py",
        "configs/metadata.json",
        "configs/logging.conf",
        *(f"configs/{c}.json" for c in ("train", "evaluate", "inference")),
    ]
    assert all((bundle / f).is_file() for f in expected), [f for f in expected if not (bundle / f).is_file()]
    assert not list((bundle / "configs").glob("*.yaml")), "configs ship as JSON only"
    samples = sorted((bundle / "sample_data").iterdir())
    assert len(samples) == 4 and all(s.name.endswith(SAMPLE_SUFFIX[name]) for s in samples)
    assert not (bundle / "scripts" / "cli.py").exists(), "only the modules the configs reach are vendored"
    with zipfile.ZipFile(zip_file) as zf:
        names = set(zf.namelist())
    assert {f"{bundle.name}/{f}" for f in expected} <= names
    card = (bundle / "docs" / "README.md").read_text()
    for heading in ("## **Model Description**", "## **Data**", "## **Performance**", "## **MONAI Bundle Commands**"):
        assert heading in card
    assert "| test_inverted |" in card


def test_large_files_hashes_match_the_files(exported):
    _, _, bundle, _ = exported
    entries = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    assert [e["path"] for e in entries] == ["models/model.pt", "models/model.ts"]
    for entry in entries:
        assert entry["hash_type"] == "sha256"
        assert entry["hash_val"] == hashlib.sha256((bundle / entry["path"]).read_bytes()).hexdigest()


def test_metadata_lists_every_package_and_measured_metrics(exported):
    _, root, bundle, _ = exported
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    required = meta["required_packages_version"]
    assert "mimmx" not in required and "scripts" not in required
    needed = {"pytorch-ignite", "tensorboard", "nibabel", "pillow", "pydicom", "itk", "matplotlib", "scikit-learn"}
    assert needed | {"fire", "tqdm"} <= set(required)
    assert meta["pytorch_version"] == "2.13.0" and "jsonschema" in meta["optional_packages_version"]
    summary = json.loads((root / "eval" / "metrics.json").read_text())["summary"]
    assert meta["eval_metrics"]["test_inverted_auroc"] == pytest.approx(summary["test_inverted_auroc"], abs=1e-4)
    if SCHEMA.is_file():
        import jsonschema

        jsonschema.validate(meta, json.loads(SCHEMA.read_text()))


def test_vendored_code_and_configs_do_not_reference_mimmx(exported):
    _, _, bundle, _ = exported
    for path in (bundle / "scripts").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "mimmx" for m in modules), f"{path}: {ast.unparse(node)}"
    for path in (bundle / "configs").glob("*.json"):
        assert re.search(r"(?<![\w.])mimmx\.", path.read_text()) is None, f"{path} names a mimmx module"
    assert '"_target_": "scripts.networks.MIMMXNet"' in (bundle / "configs" / "inference.json").read_text()


def test_exported_configs_load_the_trained_network_without_mimmx(exported):
    """In a process where ``import mimmx`` fails, the bundle's own configs build the network and load the weights,
    and it computes what the TorchScript file computes."""
    _, _, bundle, _ = exported
    code = f"""
import sys
sys.modules["mimmx"] = None  # any import of the package now fails
sys.path.insert(0, {str(bundle)!r})
import torch
from monai.bundle import ConfigParser
for config in ("train", "inference"):
    parser = ConfigParser(ConfigParser.load_config_file({str(bundle)!r} + f"/configs/{{config}}.json"))
    parser["bundle_root"] = {str(bundle)!r}
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load({str(bundle)!r} + "/models/model.pt", weights_only=True), strict=True)
    assert type(net).__module__ == "scripts.networks", type(net).__module__
# as the zoo's checks read it: no --bundle_root, from another working directory
parser = ConfigParser(ConfigParser.load_config_file({str(bundle)!r} + "/configs/inference.json"))
parser.get_parsed_content("network_def")
ts = torch.jit.load({str(bundle)!r} + "/models/model.ts")
import json
image = json.load(open({str(bundle)!r} + "/configs/metadata.json"))["network_data_format"]["inputs"]["image"]
x = torch.rand(2, image["num_channels"], *image["spatial_shape"])
with torch.no_grad():
    print(float((ts(x) - net(x)).abs().max()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=bundle.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5
    configs = {c: json.loads((bundle / "configs" / f"{c}.json").read_text()) for c in ("train", "inference")}
    assert configs["inference"]["factors"] == configs["train"]["factors"]  # written in from the one source


def test_deploy_classifier_matches_bundle_inference_on_dicom(exported, tmp_path):
    """The classifier behind the Deploy operator and the Label task, on a synthetic DICOM made from a sample, gives
    the probabilities of the bundle's documented inference command on the same DICOM input (within 1e-5)."""
    from mimmx.deploy.classifier import BundleClassifier
    from mimmx.deploy.dicom_samples import write_mr_series, write_radiograph

    name, _, bundle, _ = exported
    sample = sorted((bundle / "sample_data").iterdir())[0]
    if name == "cxr":
        image = write_radiograph(sample, tmp_path / "dicom" / "image.dcm")
        files = [image]
    else:
        image = write_mr_series(sample, tmp_path / "dicom" / "series")
        files = sorted(image.iterdir())
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    cmd += ["--input_glob", str(image), "--output_dir", str(tmp_path / "run")]
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "run" / "predictions.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    classifier = BundleClassifier(bundle)
    (entry,) = classifier.classify_files(files)
    for class_name, p in entry["probabilities"].items():
        assert p == pytest.approx(float(row[f"prob_{class_name}"]), abs=1e-5)
    assert entry["predicted_class"] == row["pred_class"]
    assert classifier.info["model_sha256"] == hashlib.sha256((bundle / "models/model.ts").read_bytes()).hexdigest()
