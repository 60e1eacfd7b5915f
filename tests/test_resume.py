"""Fault tests: killed, stopped and failed runs lose nothing and continue where they were."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from conftest import psx_executable, run_psx

RUN = ["train", "model=cnn_unshared", "trainer.epochs=4", "dataset.train_size=400", "seed=5", "device.num_threads=1"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in (cwd / "outputs").glob("*/*/summary.json"))


def start(cwd: Path, args) -> subprocess.Popen:
    return subprocess.Popen([psx_executable(), *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def epochs_logged(cwd: Path) -> int:
    dirs = run_dirs(cwd)
    csv = dirs[-1] / "metrics.csv" if dirs else None
    return len(csv.read_text().splitlines()) - 1 if csv and csv.exists() else 0


def test_sigkill_mid_run_then_resume_gives_the_unbroken_runs_metrics(tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    unbroken.mkdir(), broken.mkdir()
    assert run_psx(RUN, cwd=unbroken).returncode == 0
    (reference,) = run_dirs(unbroken)

    proc = start(broken, RUN)
    wait_for(lambda: epochs_logged(broken) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = run_dirs(broken)
    assert summary(killed)["status"] == "running"  # nobody got to write anything else

    # Machine settings may be given at resume (here the thread count the run had: the same
    # arithmetic); the run continues in its own folder.
    threads = summary(reference)["torch_threads"]
    resumed = run_psx(["train", f"trainer.resume={killed}", f"device.num_threads={threads}"], cwd=broken)
    assert resumed.returncode == 0, resumed.stderr
    assert run_dirs(broken) == [killed]
    info = summary(killed)
    assert info["status"] == "completed" and info["resumed_from"] == str(killed / "checkpoint.pt")
    assert info["torch_threads"] == threads
    assert info["metrics"] == summary(reference)["metrics"]
    assert info["best_epoch"] == summary(reference)["best_epoch"]
    # Its recorded config is the one it trained with.
    config = yaml.safe_load((killed / ".hydra" / "config.yaml").read_text())
    assert config["model"]["name"] == "cnn_unshared" and config["device"]["num_threads"] == threads
    # metrics.csv holds the whole history, identical in everything but timings.
    strip = lambda text: [line.split(",")[:6] for line in text.splitlines()]  # noqa: E731
    assert strip((killed / "metrics.csv").read_text()) == strip((reference / "metrics.csv").read_text())


def test_sigterm_checkpoints_marks_interrupted_and_resumes_exactly(tmp_path):
    unbroken, stopped = tmp_path / "unbroken", tmp_path / "stopped"
    unbroken.mkdir(), stopped.mkdir()
    assert run_psx(RUN, cwd=unbroken).returncode == 0
    (reference,) = run_dirs(unbroken)

    proc = start(stopped, RUN)
    wait_for(lambda: epochs_logged(stopped) >= 1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    (interrupted,) = run_dirs(stopped)
    info = summary(interrupted)
    assert info["status"] == "interrupted" and "SIGTERM" in info["error"] and "trainer.resume=" in info["error"]
    assert (interrupted / "checkpoint.pt").exists()

    resumed = run_psx(["train", f"trainer.resume={interrupted / 'checkpoint.pt'}"], cwd=stopped)
    assert resumed.returncode == 0, resumed.stderr
    assert run_dirs(stopped) == [interrupted]
    assert summary(interrupted)["metrics"] == summary(reference)["metrics"]


def test_resume_rejects_other_overrides_and_completed_runs(psx):
    assert psx("train", "model=mlp", "trainer.epochs=1").returncode == 0
    (done,) = run_dirs(psx.cwd)
    refused = {
        "already completed": psx("train", f"trainer.resume={done}"),
        "drop the other overrides: model=cnn_shared": psx("train", f"trainer.resume={done}", "model=cnn_shared"),
        "no checkpoint": psx("train", f"trainer.resume={psx.cwd / 'nowhere'}"),
        "re-run it with its hydra.sweep.dir": psx("train", "-m", f"trainer.resume={done}"),
    }
    for message, result in refused.items():  # one line, before anything is created
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert run_dirs(psx.cwd) == [done]


def test_diverging_job_fails_alone_and_a_rerun_finishes_only_what_is_left(psx):
    sweep = psx.cwd / "sweep"
    args = ["train", "-m", "model=mlp", "trainer.optimizer=sgd", "trainer.lr=0.01,1e12", "trainer.epochs=2",
            f"hydra.sweep.dir={sweep}"]
    first = psx(*args)
    assert first.returncode == 1
    ok, diverged = summary(sweep / "0"), summary(sweep / "1")
    assert ok["status"] == "completed"
    assert diverged["status"] == "failed" and "diverged" in diverged["error"]

    second = psx(*args)
    assert second.returncode == 1
    assert "skipping" in second.stdout + second.stderr
    assert summary(sweep / "0") == ok  # untouched: not run again
    rerun = summary(sweep / "1")
    assert rerun["status"] == "failed" and rerun["started_at"] >= diverged["started_at"]
    assert rerun["finished_at"] != diverged["finished_at"] or rerun["wall_seconds"] != diverged["wall_seconds"]


def test_rerun_of_an_interrupted_sweep_resumes_its_job_in_place(psx):
    sweep = psx.cwd / "sweep"
    args = ["train", "-m", "model=cnn_unshared", "dataset.train_size=400", "trainer.epochs=4", "seed=1,2",
            f"hydra.sweep.dir={sweep}"]
    proc = start(psx.cwd, args)
    wait_for(lambda: (sweep / "0" / "metrics.csv").exists() and len((sweep / "0" / "metrics.csv").read_text().splitlines()) >= 3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert summary(sweep / "0")["status"] == "interrupted"
    assert not (sweep / "1").exists()  # the sweep stopped with the signal

    finished = psx(*args)
    assert finished.returncode == 0, finished.stderr
    job0, job1 = summary(sweep / "0"), summary(sweep / "1")
    assert job0["status"] == job1["status"] == "completed"
    assert job0["resumed_from"] == str(sweep / "0" / "checkpoint.pt")
    # Identical to running that job alone, unbroken.
    alone = psx("train", "model=cnn_unshared", "dataset.train_size=400", "trainer.epochs=4", "seed=1")
    assert alone.returncode == 0
    (single,) = run_dirs(psx.cwd)
    assert summary(single)["metrics"] == job0["metrics"]


def test_a_job_stopped_by_sigterm_under_submitit_ends_interrupted_and_a_sweep_rerun_finishes_it(psx):
    """SLURM's preemption, with submitit's local executor: its controller process forwards SIGTERM
    to the job, as SLURM does. The job must hand the launcher a result (not die with a
    KeyboardInterrupt, which left the launcher waiting forever)."""
    sweep = psx.cwd / "sweep"
    args = ["train", "-m", "hydra/launcher=submitit_local", "model=cnn_unshared", "dataset.train_size=400",
            "trainer.epochs=4", "seed=1", f"hydra.sweep.dir={sweep}"]
    proc = start(psx.cwd, args)
    metrics = sweep / "0" / "metrics.csv"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2)
    # submitit names a local job's folder by its controller's pid
    (controller,) = [d for d in (sweep / ".submitit").iterdir() if d.name.isdigit()]
    os.kill(int(controller.name), signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1].startswith("psx: stopped by SIGTERM")
    stopped = summary(sweep / "0")
    assert stopped["status"] == "interrupted" and "SIGTERM" in stopped["error"]

    finished = psx(*args)
    assert finished.returncode == 0, finished.stderr
    done = summary(sweep / "0")
    assert done["status"] == "completed" and done["resumed_from"] == str(sweep / "0" / "checkpoint.pt")
