"""scripts/scaling.py at a tiny size: every measurement runs through the bundles' real trainer and writes the JSON,
the Markdown page and its figures.

The script runs in its own interpreter, as users run it: it forks its measurements, and a fork taken after torch's
OpenMP pool has worked (as it has in a test process, after earlier tests) can hang in the child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_positive_measurements(tmp_path):
    out = tmp_path / "performance.json"
    md = tmp_path / "performance.md"
    argv = ["--quick", "--factors", "1,2", "--batch-size", "16", "--image-size", "32", "--mri-size", "16"]
    argv += ["--iterations", "1", "--blocks", "1", "--n-boot", "20", "--threads", "1"]
    argv += ["--json", str(out), "--markdown", str(md), "--plots", str(tmp_path / "plots")]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "scaling.py"), *argv], check=True, timeout=900)
    data = json.loads(out.read_text())
    for key in ("mi_overhead_ratio", "eval_seconds_before", "eval_seconds_after"):
        assert data[key] > 0, key
    assert data["command"].startswith("python scripts/scaling.py --quick")
    assert data["torch_threads"] == 1 and len(data["load_average_before"]) == 3
    assert data["machine"]["cpus"] >= 1
    loaded = data["loaded_machine"]["epoch_seconds"]
    assert set(loaded) == {"auto", "torch_default", "one_thread"} and min(loaded.values()) > 0
    rows = data["grid"]
    # 2 factor counts + 1 batch size + 1 image size + 1 MRI size, each for ERM and MIMM-X
    assert len(rows) == 10 and {r["method"] for r in rows} == {"erm", "mimmx"}
    assert {(r["bundle"], r["axis"]) for r in rows} == {
        ("cxr", "factors"),
        ("cxr", "batch_size"),
        ("cxr", "image_size"),
        ("mri", "image_size"),
    }
    assert all(r["seconds_per_iteration"] > 0 and r["peak_rss_mib"] > 0 for r in rows)
    text = md.read_text()
    assert "mi_overhead_ratio" in text and "eval_seconds_before" in text and "On a loaded machine" in text
    assert (tmp_path / "plots" / "scaling_time.png").stat().st_size > 0
    assert (tmp_path / "plots" / "scaling_memory.png").stat().st_size > 0


def _script_module(name: str):
    import importlib.util

    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_update_replaces_only_the_parts_measured_and_keeps_each_command():
    scaling = _script_module("scaling")
    previous = {
        "command": "old",
        "grid": [{"a": 1}],
        "grid_note": "n",
        "loaded_machine": {"epoch_seconds": 1},
        "mi_overhead_ratio": 1.5,
        "mi_overhead": {},
        "commands": {"grid": "old", "loaded": "loaded-run", "overhead": "old"},
    }
    new = {"command": "new", "mi_overhead_ratio": 1.2, "mi_overhead": {"x": 1}, "commands": {"overhead": "new"}}
    merged = scaling.merge_parts(previous, new, ["overhead"])
    assert merged["mi_overhead_ratio"] == 1.2 and merged["mi_overhead"] == {"x": 1}
    assert merged["grid"] == [{"a": 1}] and merged["loaded_machine"] == {"epoch_seconds": 1}
    assert merged["commands"] == {"grid": "old", "loaded": "loaded-run", "overhead": "new"}
    report = _script_module("performance_report")
    assert "Joined from 3 runs" in report.measured_with(merged) and "`loaded-run`" in report.measured_with(merged)
    assert report.measured_with({"command": "one", "commands": {"grid": "one"}}) == "Measured with `one`"


def test_machine_facts_are_shared_by_the_measurement_scripts():
    context = _script_module("measurement_context")
    info = context.machine_info()
    assert info["cpus"] >= 1 and info["processor"] and info["torch"]
    summary = context.machine_summary(info)
    assert f"{info['cpus']} cores" in summary and info["torch"] in summary
    assert set(context.BUNDLES) == {"cxr", "mri"} and all(p.is_dir() for p in context.BUNDLES.values())
