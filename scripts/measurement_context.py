"""What every measurement script needs to say where it ran and on what: the repository's bundle folders and a
description of the machine. One place, so the benchmark ladder and the timing scripts record the same facts."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"cxr": ROOT / "bundles" / "mimmx_cxr", "mri": ROOT / "bundles" / "mimmx_mri"}


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The machine a measurement ran on, as JSON-ready facts."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "processor": _cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
    }


def machine_summary(info: dict | None = None) -> str:
    """One line for a document's header: CPU, cores, GPU, Python and torch."""
    info = info or machine_info()
    return f"{info['processor']}, {info['cpus']} cores, {info['gpu']}; Python {info['python']}, torch {info['torch']}"
