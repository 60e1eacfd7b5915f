"""W&B (offline, the real client) and TensorBoard: what they write is read back from disk."""
import json
from pathlib import Path

import pytest

from psx.report.from_wandb import read_transaction_log

NO_WANDB_ACCOUNT = {"WANDB_API_KEY": None, "WANDB_MODE": None, "WANDB_DIR": None}


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"])
def test_wandb_offline_sweep_writes_one_finished_run_per_job(psx, launcher):
    """With joblib, the runs are written by worker processes that psx kills once the sweep is done:
    they must be complete by then."""
    sweep = psx.cwd / "sweep"
    result = psx("train", "-m", *launcher, "logger=wandb", "model=mlp,cnn_shared", "trainer.epochs=2",
                 f"hydra.sweep.dir={sweep}", extra_env={**NO_WANDB_ACCOUNT, "HOME": str(psx.cwd)})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("wandb sync") == 1  # the offline hint is said once per sweep
    for job in ["0", "1"]:
        summary = json.loads((sweep / job / "summary.json").read_text())
        (offline,) = (sweep / job / "wandb").glob("offline-run-*")  # exactly one run per job: none leaked
        (log_file,) = offline.glob("run-*.wandb")
        config, run_summary, history, meta = read_transaction_log(log_file)
        config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
        assert meta["id"] == summary["wandb_id"] and meta["state"] == "finished"
        assert meta["group"] == summary["sweep_id"] and summary["sweep_id"].endswith("sweep")
        assert config["model"] == summary["model"] and config["model.name"] == summary["model"]
        assert config["dataset.train_size"] is None and config["seed"] == 0
        for key in ["test/acc", "test/loss", "val/acc"]:
            assert run_summary[key] == summary["metrics"][key]
        assert run_summary["params/unique"] == summary["params/unique"]
        assert run_summary["params/unshared_equiv"] == summary["params/unshared_equiv"]
        assert run_summary["status"] == "completed"
        assert [row["epoch"] for row in history] == [1, 2]


def test_wandb_failure_never_fails_the_run(psx):
    # mode=online with no API key: wandb.init refuses; training must go on without it.
    result = psx("train", "logger=wandb", "logger.wandb.mode=online", "model=mlp", "trainer.epochs=1",
                 extra_env={**NO_WANDB_ACCOUNT, "HOME": str(psx.cwd)})
    assert result.returncode == 0, result.stderr
    assert "W&B disabled for this run" in result.stderr
    (summary,) = [json.loads(p.read_text()) for p in (psx.cwd / "outputs").rglob("summary.json")]
    assert summary["status"] == "completed"


def test_tensorboard_scalars_and_hparams_read_back_with_tensorboards_reader(psx):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = psx("train", "logger=tensorboard", "model=mlp", "trainer.epochs=3")
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p.parent for p in (psx.cwd / "outputs").rglob("summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2, 3]
    assert {"train/loss", "val/loss", "lr"} <= set(events.Tags()["scalars"])
    assert abs(events.Scalars("hparam/test/acc")[0].value - summary["metrics"]["test/acc"]) < 1e-6
    assert events.Scalars("hparam/params/unique")[0].value == summary["params/unique"]
    assert events.PluginTagToContent("hparams")  # the hparams entry that compares runs
