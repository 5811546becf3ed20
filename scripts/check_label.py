"""Start the real MONAI Label server on 127.0.0.1 with exported bundles, query it over HTTP, compare, stop it.

Run in the MONAI Label environment (see README, "Share and deploy"):

    python scripts/check_label.py dist/mimmx_cxr_classification dist/mimmx_mri_classification \
        [--reference-python /path/to/env/bin/python] [--port 8765]

The bundles' sample images become the server's studies; for each image the server's answer
(``POST /infer/<bundle>?image=<id>&output=json``) must equal, within 1e-5, the probabilities of
``python -m monai.bundle run --config_file configs/inference.json`` from the bundle folder (run by
``--reference-python``, e.g. the environment verify_bundle.py built from the metadata alone). The server is
stopped by this script in every case. Exit status 0 when every image matched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mimmx.deploy

APP_DIR = Path(mimmx.deploy.__file__).parent / "label_app"
TOLERANCE = 1e-5


def reference(python: str, bundle: Path, out: Path) -> dict[str, dict[str, float]]:
    """``{image file name: {class: probability}}`` from the bundle's own inference command on its samples."""
    cmd = [python, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--output_dir", str(out)]
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"monai.bundle run failed in {bundle}:\n{done.stderr[-2000:]}")
    with open(out / "predictions.csv") as fh:
        return {
            Path(r["image"]).name: {k[len("prob_") :]: float(v) for k, v in r.items() if k.startswith("prob_")}
            for r in csv.DictReader(fh)
        }


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _infer(base: str, model: str, image_id: str) -> dict:
    url = f"{base}/infer/{model}?image={image_id}&output=json"
    request = urllib.request.Request(url, data=b"params=%7B%7D", method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_until_up(base: str, server: subprocess.Popen, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before answering")
        try:
            return _get(f"{base}/info/")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise RuntimeError(f"no answer from {base}/info/ within {timeout:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL after 20 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="exported bundle folders")
    parser.add_argument("--reference-python", default=sys.executable, help="python that runs monai.bundle run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server to start")
    args = parser.parse_args()
    bundles = [b.resolve() for b in args.bundles]
    work = Path(tempfile.mkdtemp(prefix="label_check_"))
    studies = work / "studies"
    studies.mkdir()
    expected: dict[tuple[str, str], dict[str, float]] = {}
    for bundle in bundles:
        for name, probs in reference(args.reference_python, bundle, work / f"{bundle.name}_reference").items():
            shutil.copy(bundle / "sample_data" / name, studies / name)
            expected[(bundle.name, name.split(".")[0])] = probs
    base = f"http://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(studies)]
    cmd += ["--host", "127.0.0.1", "--port", str(args.port), "--conf", "bundles", ",".join(map(str, bundles))]
    log = open(work / "server.log", "w")
    start = time.time()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ok = True
    try:
        info = wait_until_up(base, server, args.timeout)
        print(f"server up in {time.time() - start:.0f} s at {base}; models: {sorted(info.get('models', {}))}")
        for (model, image_id), want in sorted(expected.items()):
            got = _infer(base, model, image_id)["probabilities"]
            diff = max(abs(got[k] - want[k]) for k in want)
            ok &= diff <= TOLERANCE
            shown = json.dumps({k: round(v, 6) for k, v in got.items()})
            verdict = "PASS" if diff <= TOLERANCE else "FAIL"
            print(f"  {verdict} {model} {image_id}: server {shown}, max diff {diff:.1e}")
    except Exception as err:
        ok = False
        print(f"FAIL: {err} (server log: {work / 'server.log'})")
    finally:
        stop(server)
        log.close()
    try:
        _get(f"{base}/info/")
        print("FAIL: the server still answers after stop")
        ok = False
    except (urllib.error.URLError, ConnectionError):
        print(f"server stopped (exit status {server.returncode}); {time.time() - start:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
