"""Checkpoints carry a digest of their tensors: damage that torch.load would accept is caught,
one line says what is wrong, and a run starts over only when the user says so."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import psx_executable, run_psx
from psx.checkpoint import DamagedCheckpoint, load_checkpoint, save_checkpoint


def flip_bytes_inside_a_weight(path: Path) -> None:
    """Change bytes in the middle of the stored data of the first weight tensor."""
    state = torch.load(path, weights_only=True)
    weight = next(t for t in state["model"].values() if t.numel() >= 64)
    raw = path.read_bytes()
    needle = weight.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = raw.find(needle)
    assert at > 0, "the tensor's bytes are stored as they are in memory"
    middle = at + len(needle) // 2
    path.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 8]) + raw[middle + 8:])


def test_bytes_flipped_in_a_weight_load_in_torch_but_not_in_psx(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(32, 32)}, "loop": {"epoch": 3}})
    assert load_checkpoint(path)["loop"] == {"epoch": 3}
    flip_bytes_inside_a_weight(path)
    torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(DamagedCheckpoint, match="is damaged: its tensors do not match their digest"):
        load_checkpoint(path)


def test_empty_and_random_checkpoints_are_one_line_without_torchs_unsafe_advice(tmp_path):
    empty, noise = tmp_path / "empty.pt", tmp_path / "noise.pt"
    empty.write_bytes(b"")
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(DamagedCheckpoint, match="the file is empty"):
        load_checkpoint(empty)
    with pytest.raises(DamagedCheckpoint) as caught:
        load_checkpoint(noise)
    message = str(caught.value)
    assert "weights_only=False" not in message and "arbitrary code" not in message and "\n" not in message
    assert message.startswith(f"cannot read checkpoint {noise}: ")


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def interrupted_run(cwd: Path, epochs: int) -> Path:
    """A run stopped by SIGTERM after two epochs: status interrupted, with its checkpoint."""
    proc = subprocess.Popen([psx_executable(), "train", f"trainer.epochs={epochs}", "device.num_threads=1",
                             "trainer.progress=none"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(cwd.glob("outputs/*/*/metrics.csv")) or \
            len(next(cwd.glob("outputs/*/*/metrics.csv")).read_text().splitlines()) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    (run_dir,) = cwd.glob("outputs/*/*")
    assert summary(run_dir)["status"] == "interrupted"
    return run_dir


def test_damaged_checkpoint_fails_resume_in_one_line_and_restarts_only_when_asked(tmp_path):
    reference, broken = tmp_path / "reference", tmp_path / "broken"
    reference.mkdir(), broken.mkdir()
    unbroken = run_psx(["train", "trainer.epochs=6", "device.num_threads=1", "trainer.progress=none"], cwd=reference)
    assert unbroken.returncode == 0, unbroken.stderr
    (reference_dir,) = reference.glob("outputs/*/*")
    run_dir = interrupted_run(broken, 6)
    flip_bytes_inside_a_weight(run_dir / "checkpoint.pt")
    before = {name: (run_dir / name).read_bytes() for name in ("summary.json", "checkpoint.pt", "metrics.csv")}

    refused = run_psx(["train", f"trainer.resume={run_dir}"], cwd=broken)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("psx: error:")]
    assert "is damaged: its tensors do not match their digest" in line and "trainer.resume_damaged=restart" in line
    assert {name: (run_dir / name).read_bytes() for name in before} == before  # nothing touched

    restarted = run_psx(["train", f"trainer.resume={run_dir}", "trainer.resume_damaged=restart"], cwd=broken)
    assert restarted.returncode == 0, restarted.stderr
    assert "starting the run again" in restarted.stdout + restarted.stderr
    assert summary(run_dir)["status"] == "completed" and "resumed_from" not in summary(run_dir)
    assert summary(run_dir)["metrics"] == summary(reference_dir)["metrics"]

    # Killed between the final checkpoint (selected weights only) and the summary: the summary
    # still says running. Resuming trains it again instead of failing on the missing loop state.
    state = summary(reference_dir)
    (reference_dir / "summary.json").write_text(json.dumps({**state, "status": "running"}))
    again = run_psx(["train", f"trainer.resume={reference_dir}"], cwd=reference)
    assert again.returncode == 0 and "KeyError" not in again.stderr, again.stderr
    assert summary(reference_dir)["status"] == "completed" and summary(reference_dir)["metrics"] == state["metrics"]
