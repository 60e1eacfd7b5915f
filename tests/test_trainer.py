"""The training loop in-process on the bundled digits: a stopped or killed fit resumed from its
checkpoint ends exactly as an unbroken one; how a run's end becomes its status in summary.json."""
import json
from pathlib import Path

import pytest
import torch

from psx.checkpoint import load_checkpoint
from psx.cli import compose_checked
from psx.data import build_data
from psx.errors import PsxError, StopRequested
from psx.models import build_model
from psx.tasks import task_for
from psx.train import JobRecord, recorded_outcome
from psx.trainer import Trainer

OVERRIDES = ["model=cnn_shared", "dataset.train_size=300", "trainer.epochs=3", "trainer.batch_size=64",
             "trainer.scheduler=cosine", "seed=3"]


@pytest.fixture(scope="module")
def setup():
    cfg = compose_checked(OVERRIDES)
    data = build_data(cfg.dataset)
    return cfg, data, task_for(data.spec, cfg.model)


pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared


def new_model(cfg, data):
    torch.manual_seed(cfg.seed)  # as psx.train does before building the model
    return build_model(cfg.model, data.spec)


def without_timings(rows):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def fit(cfg, data, task, path: Path, on_epoch=None, resume=None):
    trainer = Trainer(cfg.trainer, cfg.seed, checkpoint_path=path)
    if on_epoch is not None:
        trainer.on_epoch = lambda row: on_epoch(trainer, row)
    return trainer.fit(new_model(cfg, data), data, task, resume=resume)


def assert_same_fit(resumed, unbroken):
    assert (resumed.best_epoch, resumed.best_val, resumed.test) == (unbroken.best_epoch, unbroken.best_val, unbroken.test)
    assert without_timings(resumed.history) == without_timings(unbroken.history)


def test_a_fit_stopped_mid_epoch_resumes_to_exactly_the_unbroken_result(setup, tmp_path):
    cfg, data, task = setup
    unbroken = fit(cfg, data, task, tmp_path / "unbroken.pt")

    def stop_after_epoch_1(trainer, row):  # the stop lands after the first step of epoch 2
        if row["epoch"] == 1:
            trainer.stop_requested = "SIGTERM"

    with pytest.raises(StopRequested) as stopped:
        fit(cfg, data, task, tmp_path / "stopped.pt", on_epoch=stop_after_epoch_1)
    assert not isinstance(stopped.value, KeyboardInterrupt) and stopped.value.args == ("SIGTERM",)
    state = load_checkpoint(tmp_path / "stopped.pt")
    assert state["loop"]["epoch"] == 1 and state["loop"]["in_epoch"]["next_step"] == 1

    replayed = []
    resumed = fit(cfg, data, task, tmp_path / "stopped.pt", resume=state,
                  on_epoch=lambda trainer, row: replayed.append(row["epoch"]))
    assert_same_fit(resumed, unbroken)
    assert replayed == [1, 2, 3]  # the new run's loggers get the epochs done before the stop too


def test_a_fit_killed_between_checkpoints_resumes_from_the_last_epoch_to_the_same_result(setup, tmp_path):
    cfg, data, task = setup
    unbroken = fit(cfg, data, task, tmp_path / "unbroken.pt")

    class Killed(Exception):
        pass

    def die_in_epoch_2(trainer, row):  # before epoch 2's checkpoint: the file still holds epoch 1
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, data, task, tmp_path / "killed.pt", on_epoch=die_in_epoch_2)
    state = load_checkpoint(tmp_path / "killed.pt")
    assert state["loop"]["epoch"] == 1 and state["loop"]["in_epoch"] is None
    assert_same_fit(fit(cfg, data, task, tmp_path / "killed.pt", resume=state), unbroken)
    assert not list(tmp_path.glob("*.tmp"))  # every checkpoint write replaced its file


def record(tmp_path: Path) -> JobRecord:
    return JobRecord(tmp_path, {"status": "running", "error": None})


def summary_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "summary.json").read_text())


def test_a_psx_error_or_a_bug_fails_the_run_in_summary_json_and_goes_no_further(tmp_path, capsys):
    with recorded_outcome(record(tmp_path)):
        raise PsxError("training diverged")
    assert summary_of(tmp_path)["status"] == "failed" and summary_of(tmp_path)["error"] == "training diverged"
    assert capsys.readouterr().err == "psx: error: training diverged\n"

    with recorded_outcome(record(tmp_path)):
        {}["missing"]
    assert summary_of(tmp_path)["error"].startswith("KeyError: 'missing' (traceback in")
    assert "Traceback" in summary_of(tmp_path)["traceback"]


def test_a_stop_request_marks_the_run_interrupted_and_propagates(tmp_path):
    with pytest.raises(StopRequested):
        with recorded_outcome(record(tmp_path)):
            raise StopRequested("SIGTERM")
    info = summary_of(tmp_path)
    assert info["status"] == "interrupted" and "stopped by SIGTERM" in info["error"]
    assert f"trainer.resume={tmp_path}" in info["error"] and info["wall_seconds"] >= 0
