"""Errors that can be found before a run starts end with one line, a non-zero exit, and no
run or sweep folder left behind (issue 15, items 4 and 7)."""
import pytest

from psx.checkpoint import save_checkpoint
from test_checkpoint_digest import flip_bytes_inside_a_weight

BAD_RUNS = [
    (["trainer.scheduler=step", "trainer.gamma=-1"], "trainer.gamma (the step scheduler's decay factor) must be > 0"),
    (["trainer.scheduler=plateau", "trainer.gamma=1.5"], "trainer.gamma (the plateau scheduler's decay factor)"),
    (["trainer.lr=nan"], "trainer.lr must be a finite number, got nan"),
    (["trainer.lr=inf"], "trainer.lr must be a finite number, got inf"),
    (["trainer.momentum=-1"], "trainer.momentum must be >= 0 and < 1, got -1.0"),
    (["model.kernel_size=100"], "kernel_size=100 is larger than the 8x8 images of digits"),
    (["model.hidden=[2000000,2000000]"], "parameters: training it needs about"),
    (["dataset.train_size=5000"], "dataset.train_size=5000 but digits has only 1257 training examples"),
    (["model.freeze=[nothing]"], "model.freeze: 'nothing' names no parameters"),
    (["model.init_from=/nonexistent/run"], "model.init_from: no checkpoint at /nonexistent/run"),
]


@pytest.mark.parametrize("overrides,message", BAD_RUNS, ids=[" ".join(o) for o, _ in BAD_RUNS])
def test_a_run_that_cannot_work_fails_before_its_folder_exists(psx, overrides, message):
    result = psx("train", *overrides, "device.num_threads=1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("psx: error:")]
    assert message in line
    assert not (psx.cwd / "outputs").exists()


def test_init_from_a_damaged_checkpoint_fails_before_the_run(psx):
    import torch

    source = psx.cwd / "source"
    source.mkdir()
    save_checkpoint(source / "checkpoint.pt", {"model": {"head.0.weight": torch.randn(16, 16)}})
    flip_bytes_inside_a_weight(source / "checkpoint.pt")
    result = psx("train", f"model.init_from={source}", "device.num_threads=1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"psx: error: model.init_from: checkpoint {source / 'checkpoint.pt'} is damaged: "
                                     "its tensors do not match their digest")
    assert not (psx.cwd / "outputs").exists()


def test_inspect_refuses_a_filter_larger_than_the_input(psx):
    result = psx("inspect", "model.kernel_size=100")
    assert result.returncode != 0
    assert result.stderr.strip() == ("psx: error: model cnn_shared: kernel_size=100 is larger than the 8x8 images "
                                     "of digits; use a kernel that fits the input")


def test_cfg_job_prints_the_config_then_says_what_would_not_run(psx):
    result = psx("train", "--cfg", "job", "trainer.epochs=1e9")
    assert "epochs: 1000000000.0" in result.stdout  # printed, as asked
    assert result.returncode != 0
    assert result.stderr.strip().startswith("psx: error: this config would not run: invalid trainer.epochs")
    assert psx("train", "--cfg", "job", "trainer.epochs=3").returncode == 0


def test_joblib_n_jobs_zero_is_one_line_and_no_sweep_folder(psx):
    result = psx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("psx: error: hydra.launcher.n_jobs must be a number of jobs")
    assert not (psx.cwd / "multirun").exists() and not (psx.cwd / "outputs").exists()


def test_psx_data_usage_is_printed_once_and_spaced_values_get_a_hint(psx):
    result = psx("data", "lst")
    assert result.returncode != 0 and "usage: usage:" not in result.stderr
    assert result.stderr.startswith("usage: psx data list")
    spaced = psx("train", "hydra.run.dir=/tmp/my", "runs")
    assert spaced.returncode != 0
    assert spaced.stderr.strip().endswith("a value with spaces must be quoted as a whole: 'hydra.run.dir=/tmp/my runs'")
