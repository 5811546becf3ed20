"""scripts/bn_statistics_check.py end to end: a benchmark-shaped run folder (run.json, models/, the data list where
the benchmark keeps it) is scored as saved and with recomputed BatchNorm statistics, and the saved model is left as
it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from monai.bundle import ConfigParser, run

from mimmx.methods import method_overrides

ROOT = Path(__file__).resolve().parents[1]
CXR = ROOT / "bundles" / "mimmx_cxr" / "configs"


def test_a_run_folder_is_scored_as_saved_and_with_recomputed_statistics(tmp_path):
    trained = tmp_path / "trained"
    small = ConfigParser.load_config_file(str(CXR / "smoke_test.yaml"))
    run("training", bundle_root=str(trained), config_file=str(CXR / "train.yaml"), **small, **method_overrides("mimmx"))
    work = tmp_path / "benchmark"
    run_dir = work / "cxr" / "all" / "n96" / "mimmx" / "seed0"
    (run_dir / "models").mkdir(parents=True)
    (work / "data_cxr").mkdir()
    shutil.copy(trained / "data" / "datalist.json", work / "data_cxr" / "datalist_all_n96_seed0.json")
    shutil.copy(trained / "models" / "model.pt", run_dir / "models" / "model.pt")
    info = {"bundle": "cxr", "protocol": "all", "n_train": 96, "seed": 0, "method": "mimmx", "regime": "default"}
    (run_dir / "run.json").write_text(json.dumps(info))
    saved = (run_dir / "models" / "model.pt").read_bytes()
    out = tmp_path / "bn.json"
    script = ROOT / "scripts" / "bn_statistics_check.py"
    cmd = [sys.executable, str(script), str(run_dir), "--images", "128", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert result["images"] == 128 and result["model"] == "model.pt"
    for row in ("as_saved", "bn_recomputed"):
        assert 0.0 <= result[row]["test_balanced_auroc"] <= 1.0
        assert set(result[row]["decision_leakage"]) == {"sex", "age", "devices"}
    assert result["as_saved"] != result["bn_recomputed"]  # the averaged statistics were replaced, and that shows
    assert (run_dir / "models" / "model.pt").read_bytes() == saved  # the check never rewrites the model

    missing = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode != 0 and "run.json not found" in missing.stderr
