"""Check the MONAI Deploy app against ``monai.bundle run`` on DICOM input, and its errors on bad input.

Run in the Deploy environment (see README, "Share and deploy"), with exported bundles:

    python scripts/check_deploy.py dist/mimmx_cxr_classification dist/mimmx_mri_classification --work /tmp/deploy

Per bundle: its sample images become synthetic DICOM (a DX radiograph per PNG, an MR series per NIfTI volume);
for each, ``python -m monai.bundle run --config_file configs/inference.json`` (from the bundle folder) and the app
``python -m mimmx.deploy`` must give the same probabilities within 1e-5, and the app's DICOM SR must read back
with pydicom. pydicom's own MR_small.dcm and CT_small.dcm must give a prediction or a named error (exit status 2,
one ``error:`` line, no traceback, no output), and so must bad input: an empty folder, a Structured Report only
(no image SOP class), a truncated DICOM file and a file that is not DICOM. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 1e-5


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def bundle_run(bundle: Path, image: Path, out: Path) -> dict[str, float]:
    """Probabilities from the bundle's own inference command for one DICOM file or series folder."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    cmd += ["--input_glob", str(image), "--output_dir", str(out)]
    done = _run(cmd, cwd=bundle)
    if done.returncode != 0:
        raise RuntimeError(f"monai.bundle run failed on {image}:\n{done.stderr[-2000:]}")
    with open(out / "predictions.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    return {k[len("prob_") :]: float(v) for k, v in row.items() if k.startswith("prob_")}


def deploy_app(bundle: Path, folder: Path, out: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "mimmx.deploy", "--bundle", str(bundle), "-i", str(folder), "-o", str(out)])


def check_same(bundle: Path, name: str, folder: Path, image: Path, work: Path) -> bool:
    from pydicom import dcmread

    start = time.time()
    expected = bundle_run(bundle, image, work / f"{name}_bundle_run")
    out = work / f"{name}_app"
    done = deploy_app(bundle, folder, out)
    if done.returncode != 0:
        print(f"  FAIL {name}: the app failed:\n{done.stderr[-2000:]}")
        return False
    result = json.loads((out / "result.json").read_text())
    got = result["results"][0]["probabilities"]
    diff = max(abs(got[k] - expected[k]) for k in expected)
    sr = dcmread(out / result["sr_file"])
    text = " ".join(str(item.TextValue) for item in sr.ContentSequence if "TextValue" in item)
    ok = diff <= TOLERANCE and sr.Modality == "SR" and result["results"][0]["predicted_class"] in text
    print(
        f"  {'PASS' if ok else 'FAIL'} {name}: app {json.dumps({k: round(v, 6) for k, v in got.items()})} "
        f"vs monai.bundle run {json.dumps({k: round(v, 6) for k, v in expected.items()})}: max diff {diff:.1e}; "
        f"SR {result['sr_file']} read back (Modality {sr.Modality}, {len(text)} characters of text); "
        f"SOP Instance UIDs {len(result['results'][0]['sop_instance_uids'])}; {time.time() - start:.0f} s"
    )
    return ok


def check_outcome(bundle: Path, name: str, folder: Path, work: Path, must_fail: bool) -> bool:
    out = work / f"{name}_app"
    done = deploy_app(bundle, folder, out)
    clean = "Traceback" not in done.stderr + done.stdout
    if done.returncode == 0:
        result = json.loads((out / "result.json").read_text())
        outcome = f"prediction {result['results'][0]['probabilities']}"
        ok = clean and not must_fail
    else:
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        outcome = f"exit {done.returncode}, {lines[-1] if lines else 'no error: line'}"
        ok = clean and done.returncode == 2 and bool(lines) and not (out.exists() and any(out.iterdir()))
    print(f"  {'PASS' if ok else 'FAIL'} {name}: {outcome}{'' if clean else ' (with a traceback)'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="exported bundle folders")
    parser.add_argument("--work", type=Path, default=Path("deploy_check"), help="folder for inputs and outputs")
    args = parser.parse_args()
    from pydicom.data import get_testdata_file

    from mimmx.deploy.dicom_samples import write_mr_series, write_radiograph

    if args.work.exists():
        shutil.rmtree(args.work)
    results = []
    for bundle in (b.resolve() for b in args.bundles):
        work = args.work.resolve() / bundle.name
        print(f"== {bundle.name}")
        samples = sorted((bundle / "sample_data").iterdir())
        for sample in samples:
            stem = sample.name.split(".")[0]
            folder = work / "inputs" / stem
            if sample.suffix == ".png":
                image = write_radiograph(sample, folder / f"{stem}.dcm")
            else:
                image = write_mr_series(sample, folder / "series")
            results.append(check_same(bundle, stem, folder, image, work))
        first_dicom = next((work / "inputs").rglob("*.dcm"))
        bad = {"empty_folder": [], "structured_report_only": [Path(get_testdata_file("test-SR.dcm"))]}
        for name, files in {**bad, "pydicom_MR_small": [Path(get_testdata_file("MR_small.dcm"))]}.items():
            folder = work / "inputs" / name
            folder.mkdir(parents=True)
            for f in files:
                shutil.copy(f, folder)
        truncated = work / "inputs" / "truncated" / "truncated.dcm"
        truncated.parent.mkdir(parents=True)
        truncated.write_bytes(first_dicom.read_bytes()[: first_dicom.stat().st_size * 2 // 3])
        not_dicom = work / "inputs" / "not_dicom" / "notes.dcm"
        not_dicom.parent.mkdir(parents=True)
        not_dicom.write_text("not a DICOM file\n")
        ct = work / "inputs" / "pydicom_CT_small"
        ct.mkdir(parents=True)
        shutil.copy(get_testdata_file("CT_small.dcm"), ct)
        for name in ("pydicom_MR_small", "pydicom_CT_small"):
            results.append(check_outcome(bundle, name, work / "inputs" / name, work, must_fail=False))
        for name in ("empty_folder", "structured_report_only", "truncated", "not_dicom"):
            results.append(check_outcome(bundle, name, work / "inputs" / name, work, must_fail=True))
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
