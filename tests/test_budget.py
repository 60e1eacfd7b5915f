"""Step budgets in-process on the bundled digits: every training-set size gets the same optimizer
steps and schedule, rounds of eval_every steps run across passes over the data, a fit stopped or
killed mid-budget resumes to exactly the unbroken result, and early stopping is reported."""
import math
from pathlib import Path

import pytest
import torch

from psx.checkpoint import load_checkpoint
from psx.cli import compose_checked
from psx.data import build_data
from psx.errors import PsxError, StopRequested
from psx.models import build_model
from psx.tasks import Classification, task_for
from psx.run_summary import budget_fields
from psx.trainer import Trainer

# 100 examples at batch 32: passes of 4 steps; rounds of 3 steps: 3, 3, 3, 1 (the last one short).
STEPS = ["model=mlp", "dataset.train_size=100", "trainer.batch_size=32", "trainer.budget=steps",
         "trainer.steps=10", "trainer.eval_every=3", "trainer.scheduler=cosine", "seed=4"]


pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared


def setup(overrides):
    cfg = compose_checked(overrides)
    data = build_data(cfg.dataset)
    return cfg, data


def fit(cfg, data, path: Path | None = None, resume=None, on_epoch=None, task=None):
    trainer = Trainer(cfg.trainer, cfg.seed, checkpoint_path=path)
    if on_epoch is not None:
        trainer.on_epoch = lambda row: on_epoch(trainer, row)
    torch.manual_seed(cfg.seed)  # as psx.train does before building the model
    model = build_model(cfg.model, data.spec)
    return trainer, trainer.fit(model, data, task or task_for(data.spec, cfg.model), resume=resume)


def without_timings(rows):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def assert_same_fit(resumed, unbroken):
    assert (resumed.best_epoch, resumed.best_val, resumed.test) == (unbroken.best_epoch, unbroken.best_val, unbroken.test)
    assert without_timings(resumed.history) == without_timings(unbroken.history)


@pytest.mark.parametrize("train_size", [40, 100, 300])
def test_every_training_set_size_gets_the_same_steps_rounds_and_schedule(train_size):
    cfg, data = setup([*STEPS, f"dataset.train_size={train_size}"])
    _, result = fit(cfg, data)
    assert [row["step"] for row in result.history] == [3, 6, 9, 10]
    # Cosine over the 10 steps, advanced after each step: lr(t) = lr0 (1 + cos(pi t / 10)) / 2.
    expected = [cfg.trainer.lr * (1 + math.cos(math.pi * t / 10)) / 2 for t in (3, 6, 9, 10)]
    assert [row["lr"] for row in result.history] == pytest.approx(expected, abs=1e-12)
    fields = budget_fields(result, cfg.trainer)
    assert fields == {"budget": "steps", "steps": 10, "epochs_completed": 4, "stopped_early": False, "stopped_at": None}


def test_without_eval_every_a_round_is_one_pass_and_the_last_one_is_partial():
    cfg, data = setup([o for o in STEPS if not o.startswith("trainer.eval_every")])
    _, result = fit(cfg, data)
    assert [row["step"] for row in result.history] == [4, 8, 10]  # passes of 4 steps; 2 of the third


class StopAtStep(Classification):
    """Asks the trainer to stop after optimizer step `at` (the loss of a step is computed before it)."""

    def __init__(self, at: int):
        self.at, self.calls, self.trainer = at, 0, None

    def loss(self, model, x, y, batches=None):
        self.calls += 1
        if self.calls == self.at:
            self.trainer.stop_requested = "SIGTERM"
        return super().loss(model, x, y, batches)


@pytest.mark.parametrize("stop_at", [4, 5, 7])  # at a pass's end (and mid-round); a pass in; a round's start
def test_a_fit_stopped_mid_budget_resumes_to_exactly_the_unbroken_result(tmp_path, stop_at):
    cfg, data = setup(STEPS)
    _, unbroken = fit(cfg, data)
    task = StopAtStep(stop_at)
    trainer = Trainer(cfg.trainer, cfg.seed, checkpoint_path=tmp_path / "stopped.pt")
    task.trainer = trainer
    torch.manual_seed(cfg.seed)
    with pytest.raises(StopRequested):
        trainer.fit(build_model(cfg.model, data.spec), data, task)
    state = load_checkpoint(tmp_path / "stopped.pt")
    assert state["loop"]["step"] == stop_at and state["loop"]["in_epoch"]["round_step"] == (stop_at - 1) % 3 + 1
    _, resumed = fit(cfg, data, tmp_path / "stopped.pt", resume=state)
    assert_same_fit(resumed, unbroken)


def test_a_fit_killed_between_rounds_resumes_mid_pass_to_the_same_result(tmp_path):
    cfg, data = setup(STEPS)
    _, unbroken = fit(cfg, data)

    class Killed(Exception):
        pass

    def die_in_round_3(trainer, row):  # before round 3's checkpoint: the file holds round 2, 2 steps into a pass
        if row["epoch"] == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, data, tmp_path / "killed.pt", on_epoch=die_in_round_3)
    state = load_checkpoint(tmp_path / "killed.pt")
    assert state["loop"]["epoch"] == 2 and state["loop"]["cursor"]["next_step"] == 2
    _, resumed = fit(cfg, data, tmp_path / "killed.pt", resume=state)
    assert_same_fit(resumed, unbroken)


def test_early_stopping_is_reported_with_its_round_and_step():
    # A learning rate too small to move the weights: validation stops improving within a few rounds.
    cfg, data = setup([*STEPS, "trainer.steps=60", "trainer.patience=2", "trainer.lr=1e-9", "trainer.scheduler=none"])
    _, result = fit(cfg, data)
    fields = budget_fields(result, cfg.trainer)
    assert result.stopped_early and fields["stopped_early"]
    last = result.history[-1]
    assert fields["stopped_at"] == {"epoch": last["epoch"], "step": last["step"]} and last["step"] < 60
    assert last["epoch"] == result.best_epoch + 2  # two evaluations without improvement


@pytest.mark.parametrize("overrides, message", [
    (["trainer.budget=steps"], "trainer.budget=steps needs trainer.steps >= 1"),
    (["trainer.steps=100"], "trainer.steps is for trainer.budget=steps"),
    (["trainer.eval_every=10"], "trainer.eval_every is for trainer.budget=steps"),
    (["trainer.budget=steps", "trainer.steps=10", "trainer.eval_every=0"], "trainer.eval_every must be >= 1"),
    (["trainer.budget=days"], "trainer.budget"),
    (["trainer.stack_seeds=sometimes"], "trainer.stack_seeds must be auto, false or true"),
])
def test_a_budget_that_cannot_work_is_one_line_before_training(overrides, message):
    with pytest.raises(PsxError, match=message.replace(".", r"\.").replace("+", r"\+")):
        compose_checked(overrides)
