"""The sharing methods as families, in-process: soft (cnn_soft, mtl_soft), dynamic (untie_at, the
strength schedule), hashed (mlp/cnn, the equal-size baseline); exact counts and equivalences.
kv_heads and adapters: test_kv_heads_and_adapters.py."""
import math

import pytest
import torch
from torch import nn

from psx.checkpoint import load_checkpoint
from psx.cli import compose_checked
from psx.data import build_data
from psx.data.spec import DataSpec
from psx.errors import PsxError, StopRequested
from psx.models import build_model, sharing_summary
from psx.models.families.cnn import CNNConfig, SoftConfig
from psx.models.families.hashed import HashedConfig
from psx.models.families.mtl import MTLConfig
from psx.models.hashed import HashedConv2d, HashedLinear
from psx.tasks import task_for
from psx.trainer import Trainer

DIGITS = DataSpec("digits", (1, 8, 8), 10)
MNIST = DataSpec("mnist", (1, 28, 28), 10)
PAIRS = DataSpec("multi_digits", (1, 8, 16), 10, kind="multitask", tasks=("left", "right"))


pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared


def built(config, spec, seed=0):
    torch.manual_seed(seed)
    return build_model(config, spec)


def counts(config, spec):
    return sharing_summary(built(config, spec), config)


def forward_backward(model, spec):
    x = torch.randn(4, *spec.input_shape)
    out = model(x)
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return out


@pytest.mark.parametrize("config, spec", [
    (CNNConfig(name="cnn_soft", arm="soft"), DIGITS),
    (MTLConfig(name="mtl_soft", arm="soft"), PAIRS),
    *[(HashedConfig(name=f"{base}_{arm}", arm=arm, base=base), MNIST)
      for base in ("mlp", "cnn") for arm in ("hashed", "equal", "dense")],
])
def test_every_new_arm_builds_from_its_typed_config_and_trains_a_step(config, spec):
    forward_backward(built(config, spec), spec)


def test_cnn_soft_counts_its_shared_filters_once_and_the_locally_connected_twin_as_its_equivalent():
    soft = counts(CNNConfig(name="s", arm="soft", channels=[4, 8], hidden=[16]), DIGITS)
    shared = counts(CNNConfig(name="c", arm="shared", channels=[4, 8], hidden=[16]), DIGITS)
    unshared = counts(CNNConfig(name="u", arm="unshared", channels=[4, 8], hidden=[16]), DIGITS)
    # conv 1: 4x1x3x3 + 4; conv 2: 8x4x3x3 + 8 (the shared W, b of the soft layers)
    conv_params = 4 * 9 + 4 + 8 * 4 * 9 + 8
    assert soft["params/unique"] == unshared["params/unique"] + conv_params
    assert soft["params/unshared_equiv"] == unshared["params/unique"] == unshared["params/unshared_equiv"]
    assert soft["sharing/ratio"] == unshared["params/unique"] / (unshared["params/unique"] + conv_params)
    assert shared["params/unique"] < soft["params/unique"]


def test_cnn_soft_with_zero_offsets_computes_cnn_shared_given_its_weights():
    config = dict(channels=[4, 8], hidden=[16])
    shared = built(CNNConfig(name="c", arm="shared", **config), DIGITS)
    soft = built(CNNConfig(name="s", arm="soft", **config), DIGITS, seed=1)
    missing = soft.load_state_dict(shared.state_dict(), strict=False).missing_keys
    assert all(key.endswith(("offset", "bias_offset")) for key in missing) and len(missing) == 4
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(soft(x), shared(x), rtol=1e-5, atol=1e-6)


def test_cnn_soft_penalty_is_strength_times_mean_squared_offsets_and_zero_strength_adds_nothing():
    model = built(CNNConfig(name="s", arm="soft", channels=[4], hidden=[], soft=SoftConfig(strength=0.5)), DIGITS)
    layer = model.features[0]
    with torch.no_grad():
        layer.offset.fill_(1.0)
        layer.bias_offset.fill_(2.0)
    expected = 0.5 * (layer.offset.numel() + 4 * layer.bias_offset.numel()) / 64
    assert model.regularizer().item() == pytest.approx(expected)
    model.strength = 0.0
    assert model.regularizer() is None


def test_the_strength_schedule_sets_the_strength_at_each_epoch_start():
    soft = SoftConfig(strength=10.0, schedule="linear", end=0.0, epochs=2)
    model = built(CNNConfig(name="s", arm="soft", channels=[4], hidden=[], soft=soft), DIGITS)
    strengths = []
    for epoch in (1, 2, 3, 4):
        assert model.on_epoch_start(epoch) is False  # no new parameters: the optimizer stays
        strengths.append(model.epoch_metrics()["soft/strength"])
    assert strengths == [10.0, 5.0, 0.0, 0.0]


@pytest.mark.parametrize("override, message", [
    (dict(arm="soft", soft=SoftConfig(schedule="cosine")), "needs model.soft.end"),
    (dict(arm="soft", soft=SoftConfig(schedule="exponential", strength=1.0, end=0.0, epochs=2)), "end > 0"),
    (dict(arm="soft", soft=SoftConfig(strength=-1.0)), "must be >= 0"),
    (dict(arm="unshared", untie_at=2), "unties the shared arm"),
    (dict(arm="shared", untie_at=1), "epoch >= 2"),
])
def test_bad_soft_and_untie_settings_are_one_line_errors(override, message):
    with pytest.raises(PsxError, match=message):
        build_model(CNNConfig(name="c", **override), DIGITS)


def test_untying_keeps_the_function_and_then_counts_the_locally_connected_twin():
    config = CNNConfig(name="c", arm="shared", channels=[4, 8], hidden=[16], untie_at=2)
    model = built(config, DIGITS)
    before_ratio = model.epoch_metrics()["sharing/ratio"]
    x = torch.randn(5, 1, 8, 8)
    before = model(x)
    assert model.on_epoch_start(1) is False
    assert model.on_epoch_start(2) is True and model.on_epoch_start(3) is False  # once, then it stays untied
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    unshared = counts(CNNConfig(name="u", arm="unshared", channels=[4, 8], hidden=[16]), DIGITS)
    assert sharing_summary(model, config)["params/unique"] == unshared["params/unique"]
    assert before_ratio > 1 and model.epoch_metrics()["sharing/ratio"] == 1.0


def test_an_untied_model_loads_the_weights_it_had_before_it_untied():
    config = CNNConfig(name="c", arm="shared", channels=[4], hidden=[], untie_at=2)
    model = built(config, DIGITS)
    conv_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 1, 8, 8)
    before = model(x)
    model.on_epoch_start(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.load_state_dict(conv_state)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_mtl_soft_penalty_is_strength_times_the_squared_distance_between_the_trunks():
    model = built(MTLConfig(name="m", arm="soft", channels=[4], hidden=[8], soft=SoftConfig(strength=0.25)), PAIRS)
    left, right = model.networks["left"].features, model.networks["right"].features
    by_hand = sum((a - b).square().sum() for a, b in zip(left.parameters(), right.parameters()))
    assert model.regularizer().item() == pytest.approx(0.25 * by_hand.item(), rel=1e-6)
    right.load_state_dict(left.state_dict())
    assert model.regularizer().item() == 0.0
    model.regularizer().backward()  # identical trunks: nothing pulls
    assert all(p.grad.abs().max() == 0 for p in left.parameters())
    separate = counts(MTLConfig(name="s", arm="separate", channels=[4], hidden=[8]), PAIRS)
    soft = counts(MTLConfig(name="m", arm="soft", channels=[4], hidden=[8]), PAIRS)
    assert soft["params/unique"] == separate["params/unique"] and soft["sharing/ratio"] == 1.0


@pytest.mark.parametrize("base", ["mlp", "cnn"])
@pytest.mark.parametrize("compression", [0.125, 0.015625])
def test_hashed_counts_buckets_and_biases_as_unique_and_the_virtual_weights_as_unshared(base, compression):
    config = dict(base=base, compression=compression, hidden=[32], channels=[4, 8])
    hashed_model = built(HashedConfig(name="h", arm="hashed", **config), MNIST)
    hashed = sharing_summary(hashed_model, HashedConfig(name="h", arm="hashed", **config))
    dense = counts(HashedConfig(name="d", arm="dense", **config), MNIST)
    layers = [m for m in hashed_model.modules() if isinstance(m, (HashedLinear, HashedConv2d))]
    virtual = sum(math.prod(m.virtual_shape) for m in layers)
    buckets = sum(m.buckets.numel() for m in layers)
    biases = sum(m.bias.numel() for m in layers)
    assert buckets == sum(max(1, round(math.prod(m.virtual_shape) * compression)) for m in layers)
    assert hashed["params/unique"] == buckets + biases
    assert hashed["params/unshared_equiv"] == virtual + biases == dense["params/unique"]
    assert hashed["sharing/ratio"] == (virtual + biases) / (buckets + biases)
    assert dense["sharing/ratio"] == 1.0


@pytest.mark.parametrize("base", ["mlp", "cnn"])
def test_the_equal_arm_is_dense_at_the_hashed_networks_real_size(base):
    config = dict(base=base, compression=0.125, hidden=[64, 32], channels=[8, 16])
    hashed = counts(HashedConfig(name="h", arm="hashed", **config), MNIST)["params/unique"]
    equal_model = built(HashedConfig(name="e", arm="equal", **config), MNIST)
    equal = counts(HashedConfig(name="e", arm="equal", **config), MNIST)
    assert not any(isinstance(m, (HashedLinear, HashedConv2d)) for m in equal_model.modules())
    assert equal["sharing/ratio"] == 1.0
    assert abs(equal["params/unique"] - hashed) / hashed < 0.05  # as near as whole widths allow
    assert equal_model.widths["hidden"][0] < 64


@pytest.fixture(scope="module")
def untie_setup():
    cfg = compose_checked(["model=cnn_shared", "model.untie_at=2", "model.channels=[4,8]", "dataset.train_size=300",
                           "trainer.epochs=3", "trainer.batch_size=64", "trainer.scheduler=cosine",
                           "trainer.optimizer=adam", "seed=3"])
    data = build_data(cfg.dataset)
    return cfg, data, task_for(data.spec, cfg.model)


def fit(cfg, data, task, path, on_epoch=None, resume=None):
    trainer = Trainer(cfg.trainer, cfg.seed, checkpoint_path=path)
    if on_epoch is not None:
        trainer.on_epoch = lambda row: on_epoch(trainer, row)
    torch.manual_seed(cfg.seed)
    return trainer.fit(build_model(cfg.model, data.spec), data, task, resume=resume)


def without_timings(rows):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def test_a_fit_that_unties_records_the_ratio_per_epoch_and_keeps_training(untie_setup, tmp_path):
    cfg, data, task = untie_setup
    result = fit(cfg, data, task, tmp_path / "run.pt")
    ratios = [row["sharing/ratio"] for row in result.history]
    assert ratios[0] > 1 and ratios[1:] == [1.0, 1.0]
    losses = [row["train/loss"] for row in result.history]
    assert losses[2] < losses[1] < losses[0]


@pytest.mark.parametrize("stop_at", ["mid_epoch_2", "after_epoch_2"])
def test_a_fit_resumed_across_the_untie_epoch_ends_as_the_unbroken_one(untie_setup, tmp_path, stop_at):
    cfg, data, task = untie_setup
    unbroken = fit(cfg, data, task, tmp_path / "unbroken.pt")

    class Killed(Exception):
        pass

    def stop(trainer, row):
        if stop_at == "mid_epoch_2" and row["epoch"] == 1:
            trainer.stop_requested = "SIGTERM"  # lands after the first step of epoch 2, untied
        if stop_at == "after_epoch_2" and row["epoch"] == 3:
            raise Killed  # before epoch 3's checkpoint: the file holds epoch 2, untied

    with pytest.raises((StopRequested, Killed)):
        fit(cfg, data, task, tmp_path / "stopped.pt", on_epoch=stop)
    state = load_checkpoint(tmp_path / "stopped.pt")
    assert any(key.endswith("features.0.weight") and value.dim() == 3 for key, value in state["model"].items())
    resumed = fit(cfg, data, task, tmp_path / "stopped.pt", resume=state)
    assert (resumed.best_epoch, resumed.best_val, resumed.test) == (unbroken.best_epoch, unbroken.best_val, unbroken.test)
    assert without_timings(resumed.history) == without_timings(unbroken.history)


def test_stacked_training_refuses_models_whose_trainer_hooks_matter():
    from omegaconf import OmegaConf

    from psx.stacked import stack_reason
    from psx.tasks import Classification

    trainer = OmegaConf.create({"scheduler": "none", "precision": "fp32", "compile": False, "resume": None})
    soft = [built(CNNConfig(name="s", arm="soft", channels=[4], hidden=[]), DIGITS, seed=s) for s in (0, 1)]
    assert "penalty" in stack_reason(trainer, soft, Classification())
    untie = [built(CNNConfig(name="c", arm="shared", channels=[4], hidden=[], untie_at=2), DIGITS, seed=s) for s in (0, 1)]
    assert "untie_at" in stack_reason(trainer, untie, Classification())
    plain = [built(CNNConfig(name="c", arm="shared", channels=[4], hidden=[]), DIGITS, seed=s) for s in (0, 1)]
    assert stack_reason(trainer, plain, Classification()) is None


def test_inspect_names_the_kind_of_sharing_of_each_tensor():
    from psx.inspect import parameter_rows

    soft = {r["name"]: r for r in parameter_rows(built(CNNConfig(name="s", arm="soft", channels=[4], hidden=[]), DIGITS))}
    assert soft["features.0.weight"]["kind"] == "soft: shared W" and soft["features.0.weight"]["reuse"] == 0
    assert soft["features.0.offset"]["kind"] == "soft: offsets D_p"
    hashed = built(HashedConfig(name="h", arm="hashed", hidden=[16], compression=0.125), DIGITS)
    rows = {r["name"]: r for r in parameter_rows(hashed)}
    assert rows["net.1.buckets"]["kind"] == "hashed 16x64" and rows["net.1.buckets"]["reuse"] == pytest.approx(8)
    mtl = {r["name"]: r["kind"] for r in parameter_rows(built(MTLConfig(name="m", arm="soft", channels=[4]), PAIRS))}
    assert mtl["networks.left.features.0.weight"] == "soft-tied: right" and mtl["networks.left.head.0.weight"] == ""
    frozen = built(CNNConfig(name="c", arm="shared", channels=[4], hidden=[]), DIGITS)
    frozen.features.requires_grad_(False)
    assert {r["name"]: r["kind"] for r in parameter_rows(frozen)}["features.0.weight"] == "frozen"

