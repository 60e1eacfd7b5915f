"""End to end: the real `psx` command in a subprocess, in a temporary working folder."""
import json
import sys
import time
from pathlib import Path

import pytest


def summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


def test_help_and_version_are_instant_and_need_no_torch(psx):
    started = time.perf_counter()
    result = psx("--help")
    assert result.returncode == 0 and "train" in result.stdout
    assert time.perf_counter() - started < 5  # generous: only guards against importing torch
    version = psx("--version")
    assert version.returncode == 0 and version.stdout.startswith("psx ")


def test_train_help_shows_the_config_groups(psx):
    result = psx("train", "--help")
    assert result.returncode == 0
    conf = Path(__file__).resolve().parents[1] / "conf"
    for group in ("model", "dataset", "device", "logger"):
        choices = ", ".join(sorted(p.stem for p in (conf / group).glob("*.yaml")))
        assert f"{group}: {choices}" in result.stdout


def test_python_dash_m_psx_works(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "psx", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("psx ")


@pytest.mark.parametrize(
    "args,message",
    [
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["train", "model=nope"], "no config 'model/nope'"),
        (["train", "trainer.lr=abc"], "trainer.lr"),
        (["train", "dataset.train_size=-5"], "dataset.train_size"),
        (["train", "device=cuda"], "CUDA is not available"),
        (["train", "trainer.precision=fp16"], "fp16 needs CUDA"),
        (["train", "model=[oops"], "malformed override"),
        (["train", "trainer.lrr=0.1"], "unknown config key 'trainer.lrr'"),
        (["train", "model=cnn_shared,cnn_unshared"], "add -m"),
        (["train", "-m", "model=cnn_shared,nope"], "no config 'model/nope'"),
    ],
)
def test_user_errors_end_with_one_line_exit_2_and_no_run(psx, args, message):
    result = psx(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("psx: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (psx.cwd / "outputs").exists()  # rejected before any run folder or training


def test_default_run_writes_a_complete_run_folder(psx):
    result = psx("train", "trainer.epochs=3")
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p.parent for p in (psx.cwd / "outputs").rglob("summary.json")]
    assert run_dir.parent.parent == psx.cwd / "outputs"  # outputs/<date>/<time>/
    for name in [".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv", "checkpoint.pt", "train.log"]:
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["model"] == "cnn_shared" and summary["dataset"] == "digits"
    assert summary["params/unique"] == 53_002 and summary["params/unshared_equiv"] == 350_602
    for key in ["val/acc", "val/loss", "test/acc", "test/loss", "train/loss"]:
        assert 0 <= summary["metrics"][key] < 10
    assert summary["epochs_completed"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert summary["wall_seconds"] > 0 and summary["torch_version"] and summary["device"] == "cpu"
    assert summary["reused_host_memory"] is sys.platform.startswith("linux")  # device.reuse_host_memory's default
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "step", "train/loss", "val/loss", "val/acc", "lr", "time/epoch_s", "time/samples_per_s"]
    assert len(rows) == 4 and rows[-1].startswith("3,")


def test_same_command_twice_gives_identical_metrics(psx):
    args = ["train", "model=cnn_unshared", "trainer.epochs=3", "dataset.train_size=300", "seed=3"]
    for _ in range(2):
        assert psx(*args).returncode == 0
    first, second = summaries(psx.cwd / "outputs")
    assert first["run_dir"] != second["run_dir"]
    assert first["metrics"] == second["metrics"]
    assert first["final"]["train/loss"] == second["final"]["train/loss"]


def test_multirun_grid_gives_every_job_its_own_completed_folder(psx):
    result = psx(
        "train", "-m", "model=cnn_shared,cnn_unshared", "dataset.train_size=50,200,null", "seed=0,1", "trainer.epochs=2"
    )
    assert result.returncode == 0, result.stderr
    (sweep,) = list((psx.cwd / "outputs" / "multirun").glob("*/*"))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 12
    for job in jobs:
        assert (job / "metrics.csv").exists()
        assert json.loads((job / "summary.json").read_text())["status"] == "completed"
    grid = {(s["model"], s["train_size"], s["seed"]) for s in summaries(sweep)}
    assert grid == {(m, n, s) for m in ["cnn_shared", "cnn_unshared"] for n in [50, 200, None] for s in [0, 1]}
    assert {s["train_examples"] for s in summaries(sweep)} == {50, 200, 1257}


def test_one_failing_job_does_not_stop_the_sweep(psx):
    # train_size=5 cannot hold one example of each of the 10 classes: that job fails, the others run.
    result = psx("train", "-m", "dataset.train_size=5,100", "model=mlp,cnn_shared", "trainer.epochs=1")
    assert result.returncode == 1
    assert "fewer than one example per class" in result.stderr and "Traceback" not in result.stderr
    by_size = {}
    for s in summaries(psx.cwd / "outputs"):
        by_size.setdefault(s["train_size"], []).append(s)
    assert [s["status"] for s in by_size[5]] == ["failed", "failed"]
    assert all("fewer than one example per class" in s["error"] for s in by_size[5])
    assert [s["status"] for s in by_size[100]] == ["completed", "completed"]


def test_parallel_runs_never_share_a_folder(psx):
    import subprocess

    from conftest import psx_executable

    procs = [
        subprocess.Popen([psx_executable(), "train", "trainer.epochs=1", "model=mlp", f"seed={i}"], cwd=psx.cwd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(3)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert sorted(s["seed"] for s in summaries(psx.cwd / "outputs")) == [0, 1, 2]


def test_default_run_reaches_95_percent_on_digits(psx):
    result = psx("train")
    assert result.returncode == 0, result.stderr
    (summary,) = summaries(psx.cwd / "outputs")
    assert summary["epochs_completed"] == 20
    assert summary["metrics"]["test/acc"] >= 0.95


def test_bf16_autocast_trains_on_cpu(psx):
    result = psx("train", "trainer.precision=bf16", "trainer.epochs=2", "model=cnn_unshared", "dataset.train_size=200")
    assert result.returncode == 0, result.stderr
    (summary,) = summaries(psx.cwd / "outputs")
    assert summary["status"] == "completed" and summary["metrics"]["val/acc"] > 0.2
