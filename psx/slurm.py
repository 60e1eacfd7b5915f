"""SLURM for psx's launcher (hydra_plugins/psx_launchers): job states from squeue, sbatch's refusals
as one line, and the mark a job leaves when the scheduler ends it without a result."""
from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


class SweepIncomplete(SystemExit):
    """Ends a SLURM sweep that sbatch refused or whose jobs did not all finish, with one line.

    A SystemExit, not an Exception: Hydra reports any Exception from a sweep with a traceback or a
    hint line, but lets this one through, and Python prints its message as the only line (exit 1)."""

    def __init__(self, message: str):
        super().__init__(f"psx: error: {message}")

# squeue states of a job that will not run again; any other state (PENDING, RUNNING, REQUEUED,
# COMPLETING, SUSPENDED, ...) means it may still write its result.
FINAL_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "TIMEOUT"}


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} for the given jobs (array tasks as `<array>_<index>`), from squeue,
    which works with or without an accounting database; jobs it no longer lists are left out."""
    if not job_ids:
        return {}
    # All of this user's jobs, not `--jobs`: squeue rejects the whole call once one id is purged.
    command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r", "--me"]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("squeue failed (%s); will ask again", e)
        return {j: ("UNKNOWN", "") for j in job_ids}
    wanted, states = set(job_ids), {}
    for line in output.splitlines():
        job_id, state, reason = (line.strip().split("|") + ["", ""])[:3]
        if job_id in wanted:
            states[job_id] = (state.split()[0] if state else "UNKNOWN", reason)
    return states


def cancel(job_ids: list[str]) -> None:
    subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


# Why a pending job will never start, and the setting of the preset behind it.
NEVER_STARTS = {
    "PartitionConfig": "hydra.launcher.cpus_per_task, mem_gb or gpus_per_node (more than the partition's nodes have; "
                       "`sinfo -o '%P %c %m %G'` lists them)",
    "PartitionNodeLimit": "hydra.launcher.nodes, cpus_per_task or mem_gb (more than the partition allows)",
    "PartitionTimeLimit": "hydra.launcher.timeout_min (over the partition's limit: `sinfo -o '%P %l'`)",
    "BadConstraints": "hydra.launcher.constraint, cpus_per_task or mem_gb (no node satisfies them)",
    "InvalidAccount": "hydra.launcher.account",
    "InvalidQOS": "hydra.launcher.qos",
}


def explain_pending_reason(reason: str) -> str | None:
    return NEVER_STARTS.get(reason)


# sbatch's refusals that a setting of the preset causes, and the setting to change.
SBATCH_ERRORS = (  # the first match wins: "invalid partition specified: gpu" is about the partition
    ("partition", "hydra.launcher.partition (`sinfo -s` lists the partitions)"),
    ("account", "hydra.launcher.account"),
    ("qos", "hydra.launcher.qos"),
    ("time limit", "hydra.launcher.timeout_min (the partition's limit: `sinfo -o '%P %l'`)"),
    ("gres", "hydra.launcher.gpus_per_node (the cluster has no such GPUs; auto asks for one only with device=cuda)"),
    ("gpu", "hydra.launcher.gpus_per_node"),
    ("memory", "hydra.launcher.mem_gb (more than any node has; `sinfo -o '%n %m'` lists MB per node)"),
    ("node configuration is not available", "hydra.launcher.cpus_per_task or hydra.launcher.mem_gb "
     "(more than any node has; `sinfo -o '%n %c %m'` lists CPUs and MB per node)"),
)


def explain_sbatch_error(error: str) -> str:
    """One line from sbatch's refusal (submitit wraps it in a long message), naming the setting."""
    lines = [line.split("error:", 1)[1].strip() for line in error.splitlines() if "error:" in line]
    specific = [line for line in lines if not line.startswith("Batch job submission failed")]
    reason = (specific or lines or [error.strip().splitlines()[-1]])[0]
    for needle, setting in SBATCH_ERRORS:
        if needle in reason.lower():
            return f"sbatch refused the sweep: {reason}; change {setting}"
    return f"sbatch refused the sweep: {reason}; see hydra.launcher in `psx train hydra/launcher=slurm --cfg hydra`"


def mark_interrupted(run_dir: Path, job_id: str, state: str) -> str:
    """A job that SLURM ended without a result: its summary.json says interrupted, so re-running the
    sweep into its folder resumes it from its checkpoint. A job that never started has no folder
    (the re-run starts it). Returns what happened, for the sweep's message."""
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return f"SLURM job {job_id} {state.lower()} before its run started"
    if summary.get("status") in (None, "running", "interrupted"):
        summary.update(status="interrupted", error=f"SLURM job {job_id} ended ({state}) before the run finished; "
                       "re-run the sweep into its folder to resume it")
        tmp = summary_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, summary_path)
    return f"SLURM job {job_id} {state.lower()}, run {summary.get('status')}"


def completed_value(run_dir: Path, overrides: list[str]) -> float | None | bool:
    """The selection metric of the run in `run_dir` if it completed with these overrides (what
    psx.train.run returns for it), else False."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    if summary.get("status") != "completed" or summary.get("overrides") != list(overrides):
        return False
    return (summary.get("metrics") or {}).get(summary.get("selection_metric"))
