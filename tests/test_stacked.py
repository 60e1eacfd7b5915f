"""Stacked seeds (psx.stacked): each seed of a stack ends where the same seed trained alone by
psx's Trainer ends: the same per-epoch metrics, best epoch, test metrics and weights.

Tolerance: the stacked step computes the same arithmetic with batched kernels (a grouped conv, a
batched matmul) that sum in another order, so each value differs by float32 rounding (~1e-7
relative) per op, and the steps carry that forward: measured, at most 6e-8 on weights and 3.4e-7 on
losses after these runs. 1e-5 relative / 1e-6 absolute leaves a margin of 10x and more, and is far
below any real difference (one batch from another seed's order, or a missed clip, changes weights
and losses by 1e-3 and more). Accuracies are counts over the same images and must match exactly unless a logit
tie is broken differently, which at these margins does not happen."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from psx.checkpoint import load_checkpoint, save_checkpoint
from psx.data import build_data
from psx.errors import PsxError
from psx.hydra_app import config_dir
from psx.stacked import CPU_MIN_SEEDS, StackedTrainer, build_seed_model, fit_stacked, stack_reason, stacking_pays
from psx.stacked.state import clip_per_seed
from psx.stacked.sweep import same_but_seed, seed_groups
from psx.tasks import task_for
from psx.trainer import StopRequested, Trainer

SEEDS = [0, 1, 2]
RTOL, ATOL = 1e-5, 1e-6


def composed(*overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["dataset=digits", "dataset.train_size=200", "trainer.epochs=3",
                                            "trainer.progress=none", "trainer.checkpoint=false", *overrides])


pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared


def alone(cfg, data, task, seed):
    model = build_seed_model(cfg.model, data.spec, seed, torch.device("cpu"))
    return Trainer(cfg.trainer, seed).fit(model, data, task), model


def assert_same_run(stacked, single):
    (result, model), (expected, expected_model) = stacked, single
    assert result.best_epoch == expected.best_epoch
    assert result.epochs_completed == expected.epochs_completed and result.stopped_early == expected.stopped_early
    for got, want in zip(result.history, expected.history, strict=True):
        for key in ("epoch", "step", "val/acc", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), key
        for key in ("train/loss", "val/loss"):
            assert got[key] == pytest.approx(want[key], rel=RTOL, abs=ATOL), key
    assert result.test["acc"] == expected.test["acc"]
    assert result.test["loss"] == pytest.approx(expected.test["loss"], rel=RTOL, abs=ATOL)
    want_state = expected_model.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, want_state[name], rtol=RTOL, atol=ATOL, msg=name)


def check_equivalence(*overrides):
    cfg = composed(*overrides)
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    task = task_for(data.spec, cfg.model)
    logged = {index: [] for index in range(len(SEEDS))}
    results, models = fit_stacked(cfg.model, cfg.trainer, data, task, SEEDS,
                                  on_epoch=lambda index, row: logged[index].append(row))
    singles = [alone(cfg, data, task, seed) for seed in SEEDS]
    assert [logged[index] for index in range(len(SEEDS))] == [r.history for r in results]  # each seed's own log
    for stacked, single in zip(zip(results, models), singles, strict=True):
        assert_same_run(stacked, single)
    # The seeds really differ (a stack that trained one seed K times would pass the checks above for seed 0).
    assert not torch.equal(next(models[0].parameters()), next(models[1].parameters()))
    return results


@pytest.mark.parametrize("model", ["cnn_shared", "cnn_unshared", "mlp"])
def test_each_stacked_seed_equals_the_seed_trained_alone(model):
    check_equivalence(f"model={model}", "model.channels=[8,16]" if model.startswith("cnn") else "model.hidden=[64]")


def test_per_seed_grad_clipping_sgd_weight_decay_and_early_stopping():
    results = check_equivalence("model=cnn_shared", "model.channels=[8]", "trainer.optimizer=sgd", "trainer.lr=0.5",
                                "trainer.weight_decay=0.01", "trainer.grad_clip=0.5", "trainer.scheduler=step",
                                "trainer.step_size=2", "trainer.epochs=6", "trainer.patience=1")
    # The seeds stop at different epochs (2, 6 and 4 here): a stopped seed's run ends while the others go on.
    assert len({r.epochs_completed for r in results}) > 1 and any(r.stopped_early for r in results)


def test_clip_per_seed_is_clip_grad_norm_of_each_seed():
    torch.manual_seed(0)
    scale = torch.tensor([0.01, 1.0, 10.0, 0.1])  # seeds 0 and 3 under the limit, 1 and 2 over it
    grads = [torch.randn(4, 3, 5) * scale.view(4, 1, 1), torch.randn(4, 7) * scale.view(4, 1)]
    stacked = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(stacked, grads):
        p.grad = g.clone()
    clip_per_seed(stacked, 1.0)
    for seed in range(4):
        alone_params = [torch.zeros_like(g[seed], requires_grad=True) for g in grads]
        for p, g in zip(alone_params, grads):
            p.grad = g[seed].clone()
        torch.nn.utils.clip_grad_norm_(alone_params, 1.0)
        for p, q in zip(stacked, alone_params):
            torch.testing.assert_close(p.grad[seed], q.grad, rtol=1e-6, atol=1e-7)
    assert torch.equal(stacked[1].grad[0], grads[1][0])  # a seed under the limit is left alone
    assert stacked[1].grad[2].norm() < grads[1][2].norm() / 5


def test_a_diverging_seed_ends_with_the_error_a_single_run_raises():
    cfg = composed("model=mlp", "model.hidden=[64]", "trainer.optimizer=sgd", "trainer.lr=1e12", "trainer.epochs=2")
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    task = task_for(data.spec, cfg.model)
    results, _ = fit_stacked(cfg.model, cfg.trainer, data, task, SEEDS)
    for seed, result in zip(SEEDS, results):
        with pytest.raises(PsxError) as single:
            alone(cfg, data, task, seed)
        assert isinstance(result, PsxError) and str(result) == str(single.value)


def test_what_cannot_be_stacked_is_refused_with_its_reason():
    cfg = composed("model=cnn_shared", "model.dropout=0.5")
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    task = task_for(data.spec, cfg.model)
    with pytest.raises(PsxError, match="dropout"):
        fit_stacked(cfg.model, cfg.trainer, data, task, SEEDS)
    models = [build_seed_model(composed("model=mlp").model, data.spec, seed, torch.device("cpu")) for seed in SEEDS]
    plateau = composed("trainer.scheduler=plateau").trainer
    assert "plateau" in stack_reason(plateau, models, task)
    assert stack_reason(cfg.trainer, models[:1], task) == "there is only one seed"
    rnn = [build_seed_model(composed("model=rnn_shared").model, data.spec, seed, torch.device("cpu")) for seed in SEEDS]
    assert "vmap" in stack_reason(cfg.trainer, rnn, task, data.val.batch(slice(0, 2))[0])


def test_stacking_is_chosen_where_it_was_measured_faster():
    data = build_data(composed().dataset, data_dir=composed().paths.data_dir)
    def build(name, seeds=CPU_MIN_SEEDS):
        return [build_seed_model(composed(f"model={name}").model, data.spec, seed, torch.device("cpu")) for seed in range(seeds)]

    assert stacking_pays(build("mlp"), torch.device("cpu")) and stacking_pays(build("cnn_shared"), torch.device("cpu"))
    assert not stacking_pays(build("mlp", CPU_MIN_SEEDS - 1), torch.device("cpu"))  # measured slower with few seeds
    assert not stacking_pays(build("cnn_unshared"), torch.device("cpu"))
    assert stacking_pays(build("cnn_unshared", 2), torch.device("cuda"))


def test_sweep_jobs_are_grouped_by_everything_but_the_seed():
    jobs = [["model=mlp", "seed=0"], ["model=mlp", "seed=1"], ["seed=0", "model=cnn_shared"],
            ["model=cnn_shared", "seed=1"], ["model=mlp", "seed=2", "trainer.lr=0.1"]]
    assert seed_groups(jobs) == [[0, 1], [2, 3], [4]]
    cfgs = [composed("model=mlp", f"seed={seed}") for seed in (0, 1, 2)]
    assert same_but_seed(cfgs)
    assert not same_but_seed([cfgs[0], composed("model=mlp", "seed=1", "trainer.lr=0.1")])
    assert not same_but_seed([cfgs[0], cfgs[0]])  # one seed twice is two runs of one seed, not a stack


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_seeds_checkpoint_resumes_alone_to_the_unbroken_run(tmp_path, optimizer):
    """An interrupted stacked job loses nothing: each seed's epoch-end checkpoint is a single run's,
    and Trainer resumed from it ends where the seed's unbroken single run ends."""
    cfg = composed("model=cnn_unshared", "model.channels=[8]", f"trainer.optimizer={optimizer}", "trainer.epochs=4",
                   "trainer.checkpoint=true")
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    task = task_for(data.spec, cfg.model)

    def keep_epoch_2(index, state):
        if state["loop"]["epoch"] == 2:
            save_checkpoint(tmp_path / f"{index}.pt", state)

    fit_stacked(cfg.model, cfg.trainer, data, task, SEEDS[:2], on_checkpoint=keep_epoch_2)
    for index, seed in enumerate(SEEDS[:2]):
        model = build_seed_model(cfg.model, data.spec, seed, torch.device("cpu"))
        resumed = Trainer(cfg.trainer, seed).fit(model, data, task, resume=load_checkpoint(tmp_path / f"{index}.pt"))
        assert_same_run((resumed, model), alone(cfg, data, task, seed))


def test_a_stop_request_checkpoints_each_seed_mid_epoch_and_resumes_alone_exactly(tmp_path):
    cfg = composed("model=mlp", "model.hidden=[64]", "trainer.epochs=2")
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    task = task_for(data.spec, cfg.model)
    models = [build_seed_model(cfg.model, data.spec, seed, torch.device("cpu")) for seed in SEEDS[:2]]
    trainer = StackedTrainer(cfg.trainer, SEEDS[:2], on_checkpoint=lambda k, state: save_checkpoint(tmp_path / f"{k}.pt", state))
    trainer.stop_requested = "SIGTERM"  # as the signal handler sets it: stop after the step under way
    with pytest.raises(StopRequested):
        trainer.fit(models, data, task)
    for index, seed in enumerate(SEEDS[:2]):
        state = load_checkpoint(tmp_path / f"{index}.pt")
        assert state["loop"]["epoch"] == 0 and state["loop"]["step"] == 1 and state["loop"]["in_epoch"]["next_step"] == 1
        model = build_seed_model(cfg.model, data.spec, seed, torch.device("cpu"))
        resumed = Trainer(cfg.trainer, seed).fit(model, data, task, resume=state)
        assert_same_run((resumed, model), alone(cfg, data, task, seed))


# 200 examples at batch 32: passes of 7 steps; rounds of 3 steps run across them, the last one short.
STEP_BUDGET = ["trainer.budget=steps", "trainer.steps=17", "trainer.eval_every=3"]


@pytest.mark.parametrize("model", ["cnn_shared", "mlp"])
def test_under_a_step_budget_each_stacked_seed_equals_the_seed_trained_alone(model):
    results = check_equivalence(f"model={model}", "model.channels=[8,16]" if model.startswith("cnn") else "model.hidden=[64]",
                                *STEP_BUDGET)
    assert [row["step"] for row in results[0].history] == [3, 6, 9, 12, 15, 17]


def test_a_stacked_seeds_mid_pass_checkpoint_under_a_step_budget_resumes_alone_exactly(tmp_path):
    cfg = composed("model=mlp", "model.hidden=[64]", "trainer.checkpoint=true", *STEP_BUDGET)
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    task = task_for(data.spec, cfg.model)

    def keep_round_3(index, state):  # 9 steps: 2 into the second pass
        if state["loop"]["epoch"] == 3:
            save_checkpoint(tmp_path / f"{index}.pt", state)

    fit_stacked(cfg.model, cfg.trainer, data, task, SEEDS[:2], on_checkpoint=keep_round_3)
    for index, seed in enumerate(SEEDS[:2]):
        state = load_checkpoint(tmp_path / f"{index}.pt")
        assert state["loop"]["step"] == 9 and state["loop"]["cursor"]["next_step"] == 2
        model = build_seed_model(cfg.model, data.spec, seed, torch.device("cpu"))
        resumed = Trainer(cfg.trainer, seed).fit(model, data, task, resume=state)
        assert_same_run((resumed, model), alone(cfg, data, task, seed))
