"""Default torch threads: the CPUs a run was given (affinity, SLURM, cgroup quota), less busy ones."""
import json
import os
import subprocess
import sys
import time

import pytest

from psx.threads import cgroup_cpu_quota, choose_threads
from tests.conftest import psx_executable

TWO_CPUS = set(sorted(os.sched_getaffinity(0))[:2]) if hasattr(os, "sched_getaffinity") else set()


def test_cgroup_v2_quota_is_the_tightest_limit_up_the_tree(tmp_path):
    (tmp_path / "membership").write_text("0::/jobs/job42\n")
    (tmp_path / "jobs" / "job42").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "jobs" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "jobs" / "job42" / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_quota(tmp_path, tmp_path / "membership") == 2  # 2.5 CPUs: two whole ones


def test_cgroup_v1_cfs_quota_and_no_quota(tmp_path):
    (tmp_path / "membership").write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n")
    group = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("100000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path, tmp_path / "membership") == 1
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path, tmp_path / "membership") is None


def test_parallel_jobs_share_the_allocation(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    choice = choose_threads(parallel_jobs=2)
    assert choice.threads == 1 and "SLURM_CPUS_PER_TASK" in choice.reason


def run_train(cwd, extra_env=None, cpus=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "SLURM_"))}
    env.update(extra_env or {})
    result = subprocess.run([psx_executable(), "train", "trainer.epochs=1", "hydra.run.dir=run"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert result.returncode == 0, result.stderr
    return result, json.loads((cwd / "run" / "summary.json").read_text())


def test_a_slurm_job_uses_the_cpus_it_was_given_and_says_so(tmp_path):
    result, summary = run_train(tmp_path, {"SLURM_CPUS_PER_TASK": "1"})
    assert summary["torch_threads"] == 1
    assert summary["torch_threads_reason"].startswith("1 CPUs (SLURM_CPUS_PER_TASK)")
    first_line = (result.stdout + result.stderr).strip().splitlines()[0]
    assert "torch threads: 1 (1 CPUs (SLURM_CPUS_PER_TASK)" in first_line


@pytest.mark.skipif(len(TWO_CPUS) < 2, reason="needs two CPUs")
def test_busy_cpus_are_left_out(tmp_path):
    """Two CPU-bound processes on the run's two CPUs: one thread, not torch's two."""
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.sched_setaffinity(0, TWO_CPUS))
            for _ in range(2)]
    try:
        time.sleep(0.3)
        _, summary = run_train(tmp_path, cpus=TWO_CPUS)
    finally:
        for process in load:
            process.kill()
            process.wait()
    assert summary["torch_threads"] == 1
    assert "busy with other processes" in summary["torch_threads_reason"]
