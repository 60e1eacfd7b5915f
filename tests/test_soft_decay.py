"""The soft penalty applied as the offsets' weight decay (psx.penalty_decay) trains the same weights
as the penalty in the loss, wherever the trainer takes that path, and resumes exactly."""
import pytest
import torch

from psx.checkpoint import load_checkpoint
from psx.cli import compose_checked
from psx.data import build_data
from psx.errors import StopRequested
from psx.models import build_model
from psx.tasks import task_for
from psx.trainer import Trainer

SOFT = ["model=cnn_soft", "model.channels=[4,8]", "dataset.train_size=200", "trainer.epochs=2",
        "trainer.batch_size=64", "model.soft.schedule=linear", "model.soft.strength=50", "model.soft.end=5",
        "model.soft.epochs=1", "seed=2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared


def fit(overrides, path=None, on_epoch=None, resume=None):
    cfg = compose_checked(SOFT + overrides)
    data = build_data(cfg.dataset)
    trainer = Trainer(cfg.trainer, cfg.seed, checkpoint_path=path)
    if on_epoch is not None:
        trainer.on_epoch = lambda row: on_epoch(trainer, row)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.spec)
    result = trainer.fit(model, data, task_for(data.spec, cfg.model), resume=resume)
    return model, result


@pytest.mark.parametrize("optimizer", ["trainer.optimizer=adam", "trainer.optimizer=sgd trainer.lr=0.05"])
def test_the_penalty_as_decay_takes_the_steps_of_the_penalty_in_the_loss(optimizer):
    as_decay, decay_result = fit(optimizer.split())
    # A clip at a norm no gradient reaches changes no step, but keeps the penalty in the loss.
    in_loss, loss_result = fit([*optimizer.split(), "trainer.grad_clip=1e9"])
    assert as_decay.penalty_in_optimizer and not in_loss.penalty_in_optimizer
    assert [row["soft/strength"] for row in decay_result.history] == [50.0, 5.0]
    moved = in_loss.features[0].offset.abs().max()
    assert moved > 1e-3  # the offsets trained (else equal weights would prove nothing)
    for name, tensor in in_loss.state_dict().items():
        torch.testing.assert_close(as_decay.state_dict()[name], tensor, rtol=1e-4, atol=1e-6)
    assert decay_result.test["acc"] == pytest.approx(loss_result.test["acc"], abs=0.01)


def test_adamw_keeps_the_penalty_in_the_loss():
    model, _ = fit(["trainer.optimizer=adamw", "trainer.epochs=1"])
    assert not model.penalty_in_optimizer and model.regularizer() is not None


def test_a_run_with_the_penalty_as_decay_resumes_exactly(tmp_path):
    _, unbroken = fit([], tmp_path / "unbroken.pt")

    def stop(trainer, row):
        if row["epoch"] == 1:
            trainer.stop_requested = "SIGTERM"  # lands after the first step of epoch 2, at the new strength

    with pytest.raises(StopRequested):
        fit([], tmp_path / "stopped.pt", on_epoch=stop)
    state = load_checkpoint(tmp_path / "stopped.pt")
    assert len(state["optimizer"]["param_groups"]) == 3  # the rest, and each soft layer's offsets
    _, resumed = fit([], tmp_path / "stopped.pt", resume=state)
    assert (resumed.best_epoch, resumed.best_val, resumed.test) == (unbroken.best_epoch, unbroken.best_val, unbroken.test)
