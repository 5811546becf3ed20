"""scripts/fault_check.py at its small size: SIGKILL mid-epoch twice, resume, identical results (about 2-3 min)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_check.py"


def test_training_killed_twice_and_resumed_ends_identical_to_an_uninterrupted_run(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fault_check", SCRIPT)
    fault_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fault_check)
    code = fault_check.main(["--work_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("(mid-epoch)") == 2, out
    assert code == 0 and "IDENTICAL" in out, out
