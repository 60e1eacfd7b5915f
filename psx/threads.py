"""How many torch threads a run uses by default: the CPUs it was given, less those other processes keep busy.

torch's default is the machine's core count. A SLURM job with `--cpus-per-task=2` on a node where
the scheduler binds no CPUs (task/none), or a container held to two CPUs by a cgroup quota, would
then run as many threads as the node has cores and fight its neighbours for them. And intra-op
threads meet at a barrier after every operation: when another process holds one of the cores,
each small operation waits for that core's next time slice, and a small model trains many times
slower with two threads than with one (README, Speed). So by default psx takes the smallest of
torch's default, the CPU affinity, SLURM_CPUS_PER_TASK and the cgroup's CPU quota, and then
leaves out the cores that other processes kept busy since this module was imported (measured
from /proc/stat, minus this process's own CPU time), never going below one thread.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before anyone sets it: cores, or OMP_NUM_THREADS
MIN_LOAD_WINDOW_S = 0.1  # the shortest look at the machine's load; shorter windows are topped up
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def affinity_cpus() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return None


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """Whole CPUs allowed by this process's cgroup (v2 cpu.max or v1 cfs quota), the tightest
    limit on the way up to the root; None without a quota."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            files = [(d / "cpu.max", None) for d in _up_to_root(root, path)]
        elif "cpu" in controllers.split(","):
            base = root / controllers
            files = [(d / "cpu.cfs_quota_us", d / "cpu.cfs_period_us") for d in _up_to_root(base, path)]
        else:
            continue
        limits += [q for q in (_read_quota(*f) for f in files) if q is not None]
    return min(limits) if limits else None


def _up_to_root(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read_quota(quota_file: Path, period_file: Path | None) -> int | None:
    try:
        if period_file is None:
            quota, period = quota_file.read_text().split()
        else:
            quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    return max(1, math.floor(int(quota) / int(period)))


def allocated_cpus() -> tuple[int, str]:
    """The CPUs this process may use and what says so: the smallest of the candidates."""
    affinity = affinity_cpus()
    candidates = {"torch's default": TORCH_DEFAULT_THREADS}
    if affinity is not None:
        candidates["CPU affinity"] = len(affinity)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        candidates["SLURM_CPUS_PER_TASK"] = int(slurm)
    quota = cgroup_cpu_quota()
    if quota is not None:
        candidates["cgroup CPU quota"] = quota
    source = min(candidates, key=lambda name: candidates[name])
    return candidates[source], source


class LoadMeter:
    """CPUs that other processes kept busy between two looks, on the CPUs this process may use."""

    def __init__(self):
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(wall clock, busy seconds on our CPUs, this process's CPU seconds), None without /proc/stat."""
        cpus = affinity_cpus()
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
                continue
            ticks = [int(f) for f in fields[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        own = os.times()
        return time.monotonic(), busy / CLOCK_TICKS, own.user + own.system

    def busy_elsewhere(self) -> float | None:
        """Average number of CPUs others used since the last call (at least MIN_LOAD_WINDOW_S ago)."""
        if self._last is None:
            return None
        waited = time.monotonic() - self._last[0]
        if waited < MIN_LOAD_WINDOW_S:
            time.sleep(MIN_LOAD_WINDOW_S - waited)
        now = self._sample()
        if now is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


_LOAD = LoadMeter()


def choose_threads(parallel_jobs: int = 1) -> ThreadChoice:
    """Threads for a run whose device.num_threads is null (see the module's docstring). With
    `parallel_jobs` > 1 the launcher's jobs on this machine share the allocation equally (they
    would count each other as busy, so the load is not looked at then)."""
    allocated, source = allocated_cpus()
    if parallel_jobs > 1:
        threads = max(1, allocated // parallel_jobs)
        return ThreadChoice(threads, f"{allocated} CPUs ({source}) shared by {parallel_jobs} parallel jobs")
    busy = _LOAD.busy_elsewhere()
    affinity = affinity_cpus()
    total = len(affinity) if affinity is not None else os.cpu_count() or allocated
    if busy is None or total - round(busy) >= allocated:
        return ThreadChoice(allocated, f"{allocated} CPUs ({source})")
    threads = max(1, total - round(busy))
    return ThreadChoice(threads, f"{allocated} CPUs ({source}), {busy:.1f} of {total} busy with other processes")
