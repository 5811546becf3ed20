"""Thread count from the CPUs a process may use: faked affinity masks and cgroup v1/v2 quota files, precedence, and
the bundles applying it when they start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from mimmx import threads
from mimmx.errors import ConfigError
from mimmx.threads import available_cpus, cgroup_cpu_limit, choose_num_threads, set_torch_threads

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cgroup_v2_quota_on_an_ancestor_of_the_own_cgroup(tmp_path):
    """A systemd slice or job step holds the limit; the process sits in a child cgroup without one."""
    root = tmp_path / "cgroup"
    _write(tmp_path / "self_cgroup", "0::/user.slice/job/step\n")
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "user.slice" / "cpu.max", "250000 100000\n")
    _write(root / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    _write(root / "user.slice" / "job" / "step" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path / "self_cgroup", root) == pytest.approx(1.5)
    assert available_cpus(tmp_path / "self_cgroup", root, affinity={0, 1, 2, 3, 4, 5, 6, 7}) == 2


def test_cgroup_v2_without_quota_leaves_the_affinity_mask(tmp_path):
    root = tmp_path / "cgroup"
    _write(tmp_path / "self_cgroup", "0::/\n")
    _write(root / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path / "self_cgroup", root) is None
    assert available_cpus(tmp_path / "self_cgroup", root, affinity={2, 5, 7}) == 3


def test_cgroup_v1_quota_inside_a_container(tmp_path):
    """cgroup v1 in a container: /proc/self/cgroup names the host's path, the mount shows the container's own files."""
    root = tmp_path / "cgroup"
    _write(tmp_path / "self_cgroup", "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path / "self_cgroup", root) == pytest.approx(0.5)
    assert available_cpus(tmp_path / "self_cgroup", root, affinity={0, 1, 2, 3}) == 1  # rounded up, at least 1
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # v1's "no limit"
    assert cgroup_cpu_limit(tmp_path / "self_cgroup", root) is None


def test_affinity_mask_is_read_from_the_process(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert available_cpus(tmp_path / "absent", tmp_path / "absent") == 1


def test_precedence_config_then_omp_then_cpus_shared_among_local_processes(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert choose_num_threads(None)[0] == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # torchrun --nproc_per_node 3
    assert choose_num_threads(None)[0] == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_num_threads(None) == (1, "OMP_NUM_THREADS")
    assert choose_num_threads(4) == (4, "num_threads")
    assert choose_num_threads("null")[0] == 1  # a command line's null is automatic


@pytest.mark.parametrize("bad", [0, -2, "two", True, 1.5])
def test_bad_values_name_the_config_id(bad, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.raises(ConfigError, match=r"num_threads: expected a positive integer or null"):
        choose_num_threads(bad)


def test_bad_omp_num_threads_is_named(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        choose_num_threads(None)


def test_set_torch_threads_sets_torch(restore_threads):
    assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_torch_threads(2) == 2 and torch.get_num_threads() == 2


@pytest.mark.parametrize("bundle", ["mimmx_cxr", "mimmx_mri"])
@pytest.mark.parametrize("config", ["train", "inference"])
def test_bundles_apply_num_threads_when_they_start(bundle, config, restore_threads):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / f"{config}.yaml"))
    assert parser["num_threads"] is None, "automatic by default"
    torch.set_num_threads(2)
    parser["num_threads"] = 1
    parser.get_parsed_content("initialize")
    assert torch.get_num_threads() == 1
