"""Sweeps on a real single-node SLURM (tests/slurm_cluster.py) through `hydra/launcher=slurm`, with the
real `psx` command: same metrics as the basic launcher, a cancelled job ends the sweep (no hang) and
is resumed by a re-run, a requeued job resumes from its checkpoint, sbatch's refusals are one line."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_psx
from slurm_cluster import SlurmCluster, SlurmUnavailable

# Small jobs of one CPU each (so one torch thread: psx takes SLURM_CPUS_PER_TASK): two run side by
# side on a 2-CPU node.
SMALL_JOB = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
             "hydra.launcher.poll_s=0.5"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node cluster for this module; skipped where it cannot start, except in CI."""
    try:
        with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
            print(f"\nSLURM test cluster started in {cluster.started_in_s:.2f} s")
            yield cluster
    except SlurmUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM test cluster: {e}")
        pytest.skip(f"SLURM test cluster: {e}")


def summaries(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def start_sweep(slurm, cwd: Path, *overrides: str) -> subprocess.Popen:
    from conftest import psx_executable

    return subprocess.Popen([psx_executable(), "train", "-m", *SMALL_JOB, *overrides], cwd=cwd, env=slurm.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


def epochs_done(run_dir: Path) -> int:
    metrics = run_dir / "metrics.csv"
    return max(0, len(metrics.read_text().splitlines()) - 1) if metrics.exists() else 0


def slurm_job_of(slurm, job_num: int) -> str:
    """The SLURM id of the sweep's running job `job_num`: its array task, or a sweep's only job."""
    lines = [line.split() for line in slurm.squeue("--array", "--format=%i %T").splitlines()]
    running = [i for i, state in lines if state == "RUNNING"]
    return next(i for i in running if i.endswith(f"_{job_num}") or (job_num == 0 and "_" not in i))


def test_slurm_preset_asks_for_no_gpu_and_modest_resources(psx):
    result = psx("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.psx_launchers.slurm_launcher.SlurmLauncher"
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == "auto"
    assert (launcher["cpus_per_task"], launcher["mem_gb"], launcher["timeout_min"]) == (2, 4, 60)


@pytest.mark.slow
def test_four_job_sweep_on_slurm_has_the_basic_launchers_metrics(slurm, tmp_path):
    grid = ["model=mlp,cnn_shared", "seed=0,1", "trainer.epochs=2"]
    started = time.perf_counter()
    basic = run_psx(["train", "-m", *grid, "device.num_threads=1", "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path / 'basic'}"], cwd=tmp_path)
    basic_s = time.perf_counter() - started
    assert basic.returncode == 0, basic.stderr
    started = time.perf_counter()
    on_slurm = run_psx(["train", "-m", *SMALL_JOB, *grid, f"hydra.sweep.dir={tmp_path / 'slurm'}"], cwd=tmp_path,
                       extra_env={"SLURM_CONF": slurm.env["SLURM_CONF"]})
    slurm_s = time.perf_counter() - started
    print(f"\n4-job sweep: basic launcher {basic_s:.1f} s, SLURM {slurm_s:.1f} s")
    assert on_slurm.returncode == 0, on_slurm.stderr
    expected, got = summaries(tmp_path / "basic"), summaries(tmp_path / "slurm")
    assert len(got) == 4 and {s["status"] for s in got.values()} == {"completed"}
    assert {n: s["metrics"] for n, s in got.items()} == {n: s["metrics"] for n, s in expected.items()}
    assert all(s["torch_threads"] == 1 and s["torch_threads_reason"].startswith("1 CPUs (SLURM_CPUS_PER_TASK)")
               for s in got.values())


@pytest.mark.slow
def test_cancelled_job_ends_the_sweep_and_a_rerun_finishes_only_it(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = ["trainer.epochs=1,40", f"hydra.sweep.dir={sweep}"]
    process = start_sweep(slurm, tmp_path, *overrides)
    wait_for(lambda: epochs_done(sweep / "1") >= 1, 120, "job 1's first epoch")
    job = slurm_job_of(slurm, 1)
    cancelled_at = time.perf_counter()
    slurm.command("scancel", job)
    _, stderr = process.communicate(timeout=120)
    print(f"\nscancel to the sweep's exit: {time.perf_counter() - cancelled_at:.1f} s")
    assert process.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("psx: error:")]
    assert len(errors) == 1 and f"SLURM job {job} cancelled, run interrupted" in errors[0], stderr
    assert "Traceback" not in stderr
    first = summaries(sweep)
    assert first[0]["status"] == "completed" and first[1]["status"] == "interrupted"
    assert (sweep / "1" / "checkpoint.pt").exists()

    completed_before = (sweep / "0" / "summary.json").stat().st_mtime
    rerun = start_sweep(slurm, tmp_path, *overrides)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "#0 already completed" in stdout + stderr
    again = summaries(sweep)
    assert (sweep / "0" / "summary.json").stat().st_mtime == completed_before  # not run, not even submitted
    assert again[1]["status"] == "completed" and again[1]["resumed_from"].endswith("checkpoint.pt")
    assert epochs_done(sweep / "1") == 40


@pytest.mark.slow
def test_requeued_job_resumes_from_its_checkpoint(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    process = start_sweep(slurm, tmp_path, "trainer.epochs=12", f"hydra.sweep.dir={sweep}")
    wait_for(lambda: epochs_done(sweep / "0") >= 1, 120, "the first epoch")
    job = slurm_job_of(slurm, 0)
    slurm.command("scontrol", "requeue", job)
    # SLURM holds a requeued job back for two minutes (its BeginTime); let it start again now.
    wait_for(lambda: "PENDING" in slurm.squeue("--array", "--format=%T", "--jobs", job), 60, "the requeue")
    slurm.command("scontrol", "update", f"JobId={job}", "StartTime=now")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    requeued = summaries(sweep)[0]
    assert requeued["status"] == "completed" and requeued["resumed_from"].endswith("checkpoint.pt")
    assert epochs_done(sweep / "0") == 12
    # Exact resume: the same metrics as the same run unbroken.
    unbroken = run_psx(["train", "trainer.epochs=12", "seed=0", "device.num_threads=1"], cwd=tmp_path)
    assert unbroken.returncode == 0, unbroken.stderr
    single = json.loads(next((tmp_path / "outputs").glob("*/*/summary.json")).read_text())
    assert requeued["metrics"] == single["metrics"]


@pytest.mark.slow
def test_sbatch_refusal_is_one_line_naming_the_setting(slurm, tmp_path):
    result = run_psx(["train", "-m", *SMALL_JOB, "hydra.launcher.gpus_per_node=1", f"hydra.sweep.dir={tmp_path / 's'}"],
                     cwd=tmp_path, extra_env={"SLURM_CONF": slurm.env["SLURM_CONF"]})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "[HYDRA]" not in line]
    assert len(lines) == 1 and lines[0].startswith("psx: error: sbatch refused the sweep:"), result.stderr
    assert "hydra.launcher.gpus_per_node" in lines[0]
    assert slurm.squeue() == ""
