"""torch's intra-op thread count from the CPUs this process may actually use, not the cores the machine has.

torch starts one thread per core it sees. In a container with a CPU quota, under SLURM, or on a workstation shared
with other jobs, that oversubscribes: the threads wait for each other at every operation and a small CPU model
trains several times slower than with fewer threads. The CPUs a process may use are the smaller of its affinity
mask (``os.sched_getaffinity``: cpusets, ``taskset``, SLURM's binding) and the CFS bandwidth quota of its cgroup
(v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``: ``docker --cpus``, Kubernetes CPU limits,
systemd ``CPUQuota``). The quota is read along the process's own cgroup path (``/proc/self/cgroup``) up to the
root, because a limit set on a systemd slice or a job step sits there and not at the root, which is all that
``joblib.cpu_count`` reads.

Precedence in :func:`choose_num_threads`: an explicit config value (``num_threads``), then an ``OMP_NUM_THREADS``
set by the user (``torchrun`` sets 1 unless told otherwise), then the CPUs available divided among the processes
``torchrun`` started on this machine (``LOCAL_WORLD_SIZE``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from mimmx.errors import ConfigError

__all__ = ["available_cpus", "cgroup_cpu_limit", "choose_num_threads", "set_torch_threads"]

_V1_CONTROLLERS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")


def _own_cgroup_dirs(proc_cgroup: Path, root: Path) -> list[tuple[str, Path, Path]]:
    """(version, directory, hierarchy root) of this process's cgroups, from /proc/self/cgroup lines."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    dirs = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2 (unified hierarchy)
            dirs.append(("v2", root / relative, root))
        elif "cpu" in controllers.split(","):
            for name in _V1_CONTROLLERS:
                if (root / name).is_dir():
                    dirs.append(("v1", root / name / relative, root / name))
                    break
    if not dirs:  # no /proc (another OS, a sandbox): the mount's own files, as inside a container
        dirs = [("v2", root, root)] + [("v1", root / name, root / name) for name in _V1_CONTROLLERS]
    return dirs


def _quota(version: str, directory: Path) -> float | None:
    """CPUs allowed by one cgroup directory's CFS quota, or None when it sets none (or cannot be read)."""
    try:
        if version == "v2":
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
        else:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
            if int(quota) < 0:
                return None
        return int(quota) / int(period) if int(period) > 0 else None
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(
    proc_cgroup: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup"
) -> float | None:
    """The tightest CFS quota (in CPUs, possibly fractional) on this process's cgroup or any ancestor; None if none.

    Args:
        proc_cgroup: the process's cgroup membership file.
        root: where the cgroup file systems are mounted.
    """
    root = Path(root)
    limits = []
    for version, directory, top in _own_cgroup_dirs(Path(proc_cgroup), root):
        current = directory
        while True:
            limit = _quota(version, current)
            if limit is not None:
                limits.append(limit)
            if current == top or current == current.parent:
                break
            current = current.parent
    return min(limits) if limits else None


def available_cpus(
    proc_cgroup: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup", affinity: set | None = None
) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup CPU quota (rounded up, at least 1).

    Args:
        proc_cgroup: the process's cgroup membership file.
        root: where the cgroup file systems are mounted.
        affinity: the CPU set to use instead of ``os.sched_getaffinity(0)`` (which some platforms lack).
    """
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cpus = max(len(affinity), 1)
    limit = cgroup_cpu_limit(proc_cgroup, root)
    if limit is not None:
        cpus = min(cpus, max(math.ceil(limit), 1))
    return cpus


def _positive_int(value: object, config_id: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{config_id}: expected a positive integer or null (automatic), got {value!r}.")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{config_id}: expected a positive integer or null (automatic), got {value!r}.") from None
    if number < 1:
        raise ConfigError(f"{config_id}: expected a positive integer or null (automatic), got {value!r}.")
    return number


def choose_num_threads(num_threads: int | str | None = None, config_id: str = "num_threads") -> tuple[int, str]:
    """The thread count and where it came from: the config value, ``OMP_NUM_THREADS``, or the CPUs available to
    this process shared among ``LOCAL_WORLD_SIZE`` processes.

    Raises:
        ConfigError: ``num_threads`` (or ``OMP_NUM_THREADS``) is not a positive integer.
    """
    if num_threads is not None and str(num_threads).strip().lower() not in ("null", "none", "auto", ""):
        return _positive_int(num_threads, config_id), config_id
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        return _positive_int(omp, "environment variable OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    local = _positive_int(os.environ.get("LOCAL_WORLD_SIZE", "1"), "environment variable LOCAL_WORLD_SIZE")
    cpus = available_cpus()
    shared = f", shared by {local} processes" if local > 1 else ""
    return max(cpus // local, 1), f"{cpus} CPUs available to this process{shared}"


def set_torch_threads(num_threads: int | str | None = None, config_id: str = "num_threads") -> int:
    """Set torch's intra-op thread count (see :func:`choose_num_threads`) and log the choice; returns it."""
    threads, source = choose_num_threads(num_threads, config_id)
    torch.set_num_threads(threads)
    logging.getLogger("mimmx").info(f"torch threads: {threads} ({source})")
    return threads
