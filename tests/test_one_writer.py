"""One writer per run folder: orphaned joblib workers, runs started at once into one folder,
overlapping sweeps into one sweep folder. Each ends with its folders checked line by line."""
import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import psx_executable
from psx.checkpoint import load_checkpoint
from psx.report.output import Staging
from psx.runlock import LOCK_NAME, FolderInUse, folder_lock, read_owner

# Every test here runs real psx processes (or waits on them): the slow tier.
pytestmark = pytest.mark.slow

FAST = ["device.num_threads=1", "trainer.progress=none"]


def assert_clean_run(run_dir: Path, epochs: int) -> dict:
    """A completed run folder whose metrics.csv has each epoch once, every row whole, in order."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("error")
    assert summary["epochs_completed"] == epochs
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "epoch" and len(lines) == epochs + 1
    for number, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        assert len(cells) == len(header), f"line {number + 1} of {run_dir / 'metrics.csv'}: {line!r}"
        assert int(cells[0]) == number
        assert all(cell and float(cell) == float(cell) for cell in cells)  # numbers, no NaN
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert max(float(r["val/acc"]) for r in rows) == pytest.approx(summary["metrics"]["val/acc"])
    assert load_checkpoint(run_dir)["completed"] is True  # whole, and its digest matches
    assert not (run_dir / LOCK_NAME).exists()  # nobody holds the folder any more
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    return summary


def start_psx(args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(env_extra or {})
    return subprocess.Popen([psx_executable(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def epochs_logged(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def test_lock_names_its_owner_and_frees_on_exit(tmp_path):
    with folder_lock(tmp_path, "train"):
        owner = read_owner(tmp_path / LOCK_NAME)
        assert owner["pid"] == str(os.getpid()) and owner["what"] == "train"
        child = subprocess.run(
            ["python", "-c", f"from psx.runlock import acquire; acquire(__import__('pathlib').Path({str(tmp_path)!r}), 'x')"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert child.returncode != 0 and f"is in use by pid {os.getpid()}" in child.stderr
    assert read_owner(tmp_path / LOCK_NAME) == {}
    with folder_lock(tmp_path, "report"):  # free again
        pass


def test_a_stale_lock_of_a_dead_owner_is_replaced(tmp_path):
    # A dead process's pid, and the lock held by a living one that inherited it (a child that
    # kept the open file): the recorded owner is dead, so the lock is stale.
    holder = subprocess.Popen(["python", "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid=999999999 host=' + os.uname().nodename.encode()"
                               " + b' what=train since=x'); print('locked', flush=True); time.sleep(60)", str(tmp_path / LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with folder_lock(tmp_path, "train"):
            assert read_owner(tmp_path / LOCK_NAME)["pid"] == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()


def test_a_live_owner_on_another_host_is_never_taken_over(tmp_path):
    holder = subprocess.Popen(["python", "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid=1 host=elsewhere what=train since=x');"
                               "print('locked', flush=True); time.sleep(60)", str(tmp_path / LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse, match="in use by pid 1 on elsewhere"):
            with folder_lock(tmp_path, "train"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_second_report_writer_gets_one_line_naming_the_first(tmp_path):
    with folder_lock(tmp_path, "report"):
        with pytest.raises(FolderInUse, match=f"{tmp_path} is in use by pid {os.getpid()} .*report"):
            with Staging(tmp_path / "report"):
                pass
    with Staging(tmp_path / "report") as folder:  # free again
        (folder / "aggregate.md").write_text("x")
    assert (tmp_path / "report" / "aggregate.md").exists() and not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_joblib_sweep_leaves_no_orphan_and_its_rerun_finishes_cleanly(tmp_path, signum):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", "trainer.epochs=25",
            *FAST, f"hydra.sweep.dir={sweep}"]
    main = start_psx(args, tmp_path)
    try:
        wait_for(lambda: all(epochs_logged(sweep / job) >= 2 for job in "01"), 240, "both jobs to log two epochs")
        workers = [int(read_owner(sweep / job / LOCK_NAME)["pid"]) for job in "01"]
        assert main.pid not in workers
        main.send_signal(signum)
        main.communicate(timeout=60)
    finally:
        main.kill()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 60, "the orphaned workers to stop")
    for job in "01":  # each stopped after a checkpoint, and says so
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and 2 <= epochs_logged(sweep / job) < 25
    rerun = subprocess.run([psx_executable(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    for job in "01":
        assert assert_clean_run(sweep / job, 25)["resumed_from"] == str(sweep / job / "checkpoint.pt")


def test_three_runs_started_at_once_into_one_run_dir_leave_one_clean_run(tmp_path):
    run_dir = tmp_path / "one"
    runs = [start_psx(["train", "trainer.epochs=4", *FAST, f"hydra.run.dir={run_dir}"], tmp_path) for _ in range(3)]
    # stdout too: a run that starts after the winner finished logs "skipping ... already completed" there.
    results = [(r.wait(timeout=300), "".join(r.communicate())) for r in runs]
    trained = [err for code, err in results if code == 0 and "skipping" not in err]
    refused = [err for code, err in results if code != 0]
    skipped = [err for code, err in results if code == 0 and "skipping" in err]
    assert len(trained) == 1 and len(refused) + len(skipped) == 2, results
    for err in refused:  # one line naming the owner
        (line,) = [line for line in err.splitlines() if line.startswith("psx: error:")]
        assert f"{run_dir} is in use by pid " in line and "Traceback" not in err
    assert_clean_run(run_dir, 4)


def test_two_overlapping_sweeps_into_one_sweep_dir_do_not_mix(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "seed=0,1", "trainer.epochs=30", *FAST, f"hydra.sweep.dir={sweep}"]
    first = start_psx(args, tmp_path)
    wait_for(lambda: epochs_logged(sweep / "0") >= 1, 240, "the first sweep's first job")
    second = start_psx(args, tmp_path)
    second_err = second.communicate(timeout=600)[1]
    first_err = first.communicate(timeout=600)[1]
    assert "Traceback" not in first_err + second_err
    # Each job ran in one of the two sweeps; the other met its lock (or found it completed).
    # It meets the first sweep's job 0 (or, on a slow machine, finds it completed and meets job 1).
    assert any(f"{sweep / job} is in use by pid {first.pid}" in second_err for job in "01"), second_err
    assert second.returncode == 1
    for job in "01":
        assert assert_clean_run(sweep / job, 30)["seed"] == int(job)


def test_a_run_folder_with_a_damaged_summary_is_not_taken_by_another_run(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([psx_executable(), "train", "trainer.epochs=2", *FAST, f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run_dir / "summary.json").write_text('{"status": "compl')  # damaged
    kept = {name: (run_dir / name).read_bytes() for name in ("checkpoint.pt", "metrics.csv", "summary.json")}
    other = subprocess.run([psx_executable(), "train", "seed=5", "trainer.epochs=2", *FAST, f"hydra.run.dir={run_dir}"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "Traceback" not in other.stderr
    (line,) = [line for line in other.stderr.splitlines() if line.startswith("psx: error:")]
    assert line == (f"psx: error: {run_dir} holds a run whose summary.json is missing or damaged; "
                    "move the folder away or run in a new one")
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept
