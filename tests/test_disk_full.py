"""A full or read-only disk, for real (a small tmpfs): one line naming the path and the reason,
the last good checkpoint and summary stay valid, no leftovers, and the run continues once the disk
allows. Mounting needs root; elsewhere these tests skip with the reason, except in CI."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from psx.checkpoint import load_checkpoint

# Every test here runs real psx processes (or waits on them): the slow tier.
pytestmark = pytest.mark.slow

FAST = ["device.num_threads=1", "trainer.progress=none"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must be able to")
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about leave_bytes free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - leave_bytes))
    return filler


def test_disk_full_mid_run_is_one_line_keeps_the_last_checkpoint_and_resumes(psx, small_disk):
    run_dir = small_disk / "run"
    # An epoch's checkpoint of cnn_shared with Adam is about 0.65 MB, and replacing it needs room
    # for two: 1 MB free lets the first one in and refuses the second.
    filler = fill(small_disk, 1_000_000)
    result = psx("train", "trainer.epochs=4", *FAST, f"hydra.run.dir={run_dir}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("psx: error:")]
    assert errors and all("no space left on the device" in line for line in errors), result.stderr
    assert str(run_dir) in errors[0]
    summary = json.loads((run_dir / "summary.json").read_text())  # whole, and says why
    assert summary["status"] == "failed" and "no space left" in summary["error"] and summary["resumable"]
    state = load_checkpoint(run_dir)  # the last good one: whole, digest matching
    assert state["loop"]["epoch"] >= 1
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no leftovers

    filler.unlink()
    resumed = psx("train", f"trainer.resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == str(run_dir / "checkpoint.pt")
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "1", "2", "3", "4"]


def test_a_full_disk_does_not_block_the_next_job_of_a_sweep(psx, small_disk):
    sweep = small_disk / "sweep"
    filler = fill(small_disk, 1_000_000)
    first = psx("train", "-m", "seed=0,1", "trainer.epochs=2", *FAST, f"hydra.sweep.dir={sweep}")
    assert first.returncode != 0 and "Traceback" not in first.stderr
    assert not list(sweep.rglob("*.tmp"))
    filler.unlink()
    rerun = psx("train", "-m", "seed=0,1", "trainer.epochs=2", *FAST, f"hydra.sweep.dir={sweep}")
    assert rerun.returncode == 0, rerun.stderr
    for job in "01":
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "completed"


def test_a_read_only_disk_is_one_line(psx, small_disk):
    run_dir = small_disk / "run"
    assert psx("train", "trainer.epochs=1", *FAST, f"hydra.run.dir={run_dir}").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for args in (["train", "trainer.epochs=1", *FAST, f"hydra.run.dir={small_disk / 'other'}"],
                 ["train", "-m", "seed=0,1", "trainer.epochs=1", *FAST, f"hydra.sweep.dir={small_disk / 'sweep'}"],
                 ["report", str(run_dir)]):
        result = psx(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("psx: error:")]
        assert "read-only" in line.lower(), line
