"""Untying on a validation plateau (model.untie_at=plateau): the convs untie at the start of the epoch
after `untie_patience` validations without improvement, training goes on unshared from the copied
filters, the epoch is recorded per epoch and in the summary, and a resumed run unties where the
unbroken one did."""
import pytest
import torch

from psx.checkpoint import load_checkpoint
from psx.cli import compose_checked
from psx.data import build_data
from psx.data.spec import DataSpec
from psx.errors import StopRequested
from psx.models import build_model
from psx.models.families.cnn import CNNConfig
from psx.models.locally_connected import LocallyConnected2d
from psx.tasks import task_for
from psx.trainer import Trainer

PLATEAU = ["model=cnn_shared", "model.untie_at=plateau", "model.untie_patience=1", "model.channels=[4,8]",
           "dataset.train_size=100", "trainer.epochs=6", "trainer.batch_size=32", "trainer.lr=0.01", "seed=1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared


def test_the_model_unties_after_patience_validations_without_improvement_and_keeps_its_function():
    torch.manual_seed(0)
    model = build_model(CNNConfig(name="c", arm="shared", channels=[4], hidden=[], untie_at="plateau", untie_patience=2),
                        DataSpec("digits", (1, 8, 8), 10))
    x = torch.randn(5, 1, 8, 8)
    before = model(x)
    assert not model.on_epoch_start(2, [0]) and not model.on_epoch_start(3, [0, 1])  # one stale validation: not yet
    assert not model.on_epoch_start(4, [0, 1, 0])  # improved again: the count starts over
    assert model.on_epoch_start(5, [0, 1, 0, 2]) and model.untied_at == 5
    assert isinstance(model.features[0], LocallyConnected2d)
    torch.testing.assert_close(model(x), before)  # the conv's filters at every position: the same function
    assert not model.on_epoch_start(6, [0, 1, 0, 2, 3]) and model.untied_at == 5  # once


def fit(path, on_epoch=None, resume=None):
    cfg = compose_checked(PLATEAU)
    data = build_data(cfg.dataset)
    trainer = Trainer(cfg.trainer, cfg.seed, checkpoint_path=path)
    if on_epoch is not None:
        trainer.on_epoch = lambda row: on_epoch(trainer, row)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.spec)
    return model, trainer.fit(model, data, task_for(data.spec, cfg.model), resume=resume)


def first_plateau(history):
    """The epoch after the first validation that did not beat the best before it."""
    best = history[0]["val/acc"]
    for row in history[1:]:
        if row["val/acc"] <= best:
            return row["epoch"] + 1
        best = row["val/acc"]
    return None


def test_a_fit_unties_on_its_first_plateau_and_trains_on_unshared(tmp_path):
    model, result = fit(tmp_path / "run.pt")
    at = first_plateau(result.history)
    assert at is not None and at <= 6, "this run's validation never stalled: choose a setting that plateaus"
    assert model.untied_at == at
    assert [row["sharing/untied_at"] for row in result.history] == [0 if e < at else at for e in range(1, 7)]
    ratios = [row["sharing/ratio"] for row in result.history]
    assert all(r > 1 for r in ratios[:at - 1]) and all(r == 1.0 for r in ratios[at - 1:])
    weight = model.features[0].weight  # (positions, patch, out): trained apart after the copy
    assert (weight - weight[:1]).abs().max() > 1e-4


def test_a_fit_resumed_in_the_untie_epoch_ends_as_the_unbroken_one(tmp_path):
    _, unbroken = fit(tmp_path / "unbroken.pt")
    at = first_plateau(unbroken.history)

    def stop(trainer, row):
        if row["epoch"] == at - 1:
            trainer.stop_requested = "SIGTERM"  # lands after the first step of the untie epoch

    with pytest.raises(StopRequested):
        fit(tmp_path / "stopped.pt", on_epoch=stop)
    state = load_checkpoint(tmp_path / "stopped.pt")
    assert state["model"]["features.0.weight"].dim() == 3  # saved untied
    model, resumed = fit(tmp_path / "stopped.pt", resume=state)
    assert model.untied_at == at
    assert (resumed.best_epoch, resumed.best_val, resumed.test) == (unbroken.best_epoch, unbroken.best_val, unbroken.test)
    strip = [{k: v for k, v in row.items() if not k.startswith("time/")} for row in unbroken.history]
    assert [{k: v for k, v in row.items() if not k.startswith("time/")} for row in resumed.history] == strip
