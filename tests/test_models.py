"""Model families built from their typed configs (no Hydra): exact parameter accounting, the
sharing summary of every family and arm, and a family with a third arm and fractional reuse."""
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from psx.data.spec import MULTITASK, TOKENS, DataSpec
from psx.errors import PsxError
from psx.models import Family, ModelConfig, build_model, known_families, param_counts, register, sharing_summary
from psx.models.families.cnn import CNNConfig
from psx.models.families.mlp import MLPConfig
from psx.models.family import unregister
from psx.models.locally_connected import LocallyConnected2d

DIGITS = DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10)
TWO_DIGITS = DataSpec(name="multi_digits", input_shape=(1, 11, 11), num_classes=10, kind=MULTITASK, tasks=("left", "right"))
WORDS = DataSpec(name="ptb", input_shape=(), num_classes=50, kind=TOKENS, vocab_size=50, seq_len=6)
SPEC_FOR_KIND = {"images": DIGITS, "multitask": TWO_DIGITS, "tokens": WORDS}

# Default CNN on 8x8 digits: conv3x3(1->32, same) -> pool -> conv3x3(32->64, same) -> pool
# -> 2x2x64 = 256 features -> linear 128 -> linear 10.
CONV1 = 32 * (1 * 9 + 1)  # 320
CONV2 = 64 * (32 * 9 + 1)  # 18,496
HEAD = (256 * 128 + 128) + (128 * 10 + 10)  # 34,186
LC1 = 8 * 8 * CONV1  # an own filter at each of the 64 positions
LC2 = 4 * 4 * CONV2  # 16 positions after the first pool


def test_cnn_shared_counts_on_digits():
    summary = sharing_summary(build_model(CNNConfig(arm="shared"), DIGITS), CNNConfig(arm="shared"))
    assert summary["params/unique"] == CONV1 + CONV2 + HEAD == summary["params/trainable"] == 53_002
    assert summary["params/unshared_equiv"] == LC1 + LC2 + HEAD == 350_602
    assert summary["sharing/ratio"] == 350_602 / 53_002
    assert (summary["family"], summary["arm"], summary["reference_arm"], summary["shared"]) == ("cnn", "shared", "unshared", True)


def test_cnn_unshared_counts_on_digits_equal_the_shared_models_unshared_equivalent():
    config = CNNConfig(arm="unshared")
    model = build_model(config, DIGITS)
    assert sum(isinstance(m, LocallyConnected2d) for m in model.modules()) == 2
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    summary = sharing_summary(model, config)
    assert summary["params/unique"] == summary["params/unshared_equiv"] == LC1 + LC2 + HEAD == 350_602
    assert summary["sharing/ratio"] == 1.0 and summary["shared"] is False


def test_mlp_counts_on_digits():
    summary = sharing_summary(build_model(MLPConfig(), DIGITS), MLPConfig())
    expected = (64 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)
    assert summary["params/unique"] == summary["params/unshared_equiv"] == expected
    assert (summary["arm"], summary["reference_arm"], summary["shared"], summary["sharing/ratio"]) == ("dense", "dense", False, 1.0)


def test_unshared_cnn_equals_shared_cnn_given_its_weights():
    torch.manual_seed(0)
    shared = build_model(CNNConfig(arm="shared"), DIGITS).double()
    unshared = build_model(CNNConfig(arm="unshared"), DIGITS).double()
    for conv, lc in zip(
        [m for m in shared.modules() if isinstance(m, torch.nn.Conv2d)],
        [m for m in unshared.modules() if isinstance(m, LocallyConnected2d)],
    ):
        lc.copy_from_conv(conv)
    unshared.head.load_state_dict(shared.head.state_dict())
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(unshared(x), shared(x), rtol=1e-12, atol=1e-12)


def test_a_cnn_too_deep_for_its_input_is_a_clear_error():
    with pytest.raises(PsxError, match="pool"):
        build_model(CNNConfig(channels=[8, 8, 8, 8]), DIGITS)


def test_typed_configs_are_checked_when_built_too():
    with pytest.raises(PsxError, match="model.arm='hashed' is not an arm of the cnn family"):
        build_model(CNNConfig(arm="hashed"), DIGITS)
    with pytest.raises(PsxError, match="model.kernel_size must be >= 1"):
        build_model(CNNConfig(kernel_size=0), DIGITS)


FAMILY_ARMS = [(name, arm) for name, family in sorted(known_families().items()) for arm in family.arms]


def test_every_shipped_family_is_declared():
    assert {"cnn", "mlp", "rnn", "lm", "transformer", "mtl"} <= set(known_families())


@pytest.mark.parametrize("name,arm", FAMILY_ARMS)
def test_every_family_and_arm_builds_trains_a_step_and_reports_its_sharing(name, arm):
    family = known_families()[name]
    config = family.config(name=f"{name}_{arm}", arm=arm)
    spec = SPEC_FOR_KIND[family.accepts[0]]
    torch.manual_seed(0)
    model = build_model(config, spec)
    if spec.kind == TOKENS:
        out = model(torch.randint(0, spec.vocab_size, (spec.seq_len, 2)))[0]
    else:
        out = model(torch.randn(3, *spec.input_shape))
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    summary = sharing_summary(model, config)
    assert (summary["family"], summary["arm"], summary["reference_arm"]) == (name, arm, family.reference_arm)
    assert summary["shared"] == (arm != family.reference_arm)
    assert summary["params/unique"] == sum(p.numel() for p in model.parameters())
    assert summary["sharing/ratio"] == summary["params/unshared_equiv"] / summary["params/unique"]


# Arms that reuse no tensor: soft sharing (a tensor per position or task, pulled together by a penalty,
# not reused) and the hashed family's equal-size dense baseline (a smaller network, not a sharing one).
NOT_REUSING = {("cnn", "soft"), ("mtl", "soft"), ("hashed", "equal")}


@pytest.mark.parametrize("name", sorted(known_families()))
def test_every_arm_that_shares_has_a_higher_sharing_ratio_than_its_reference_arm(name):
    family = known_families()[name]
    spec = SPEC_FOR_KIND[family.accepts[0]]
    ratios = {arm: sharing_summary(build_model(family.config(arm=arm), spec), family.config(arm=arm))["sharing/ratio"]
              for arm in family.arms}
    for arm in family.arms:
        if (name, arm) in NOT_REUSING:
            assert ratios[arm] <= ratios[family.reference_arm], ratios
        elif arm != family.reference_arm:
            assert ratios[arm] > ratios[family.reference_arm], ratios
    # The arms have the same unshared topology, so the same unshared equivalent (the equal-size
    # baseline is another, smaller topology by design).
    equivalents = {sharing_summary(build_model(family.config(arm=arm), spec), family.config(arm=arm))["params/unshared_equiv"]
                   for arm in family.arms if (name, arm) != ("hashed", "equal")}
    assert len(equivalents) == 1, equivalents


@pytest.mark.parametrize("name", sorted(known_families()))
def test_a_family_refuses_data_it_does_not_accept_with_one_line(name):
    family = known_families()[name]
    for kind, spec in SPEC_FOR_KIND.items():
        if kind not in family.accepts:
            with pytest.raises(PsxError, match=f"cannot train on {spec.name}: ") as error:
                build_model(family.config(name="m"), spec)
            assert "\n" not in str(error.value)


# --- a family psx does not ship: three arms, one of them with fractional reuse ----------------------


@dataclass
class HashedConfig(ModelConfig):
    family: str = "hashed_test"
    arm: str = "shared"
    virtual: int = 64  # weights the layer reads
    buckets: int = 24  # hashed arm: real weights they are read from


class HashedLinear(nn.Module):
    """One linear layer of `virtual` weights: `shared` reads them all from one weight, `hashed`
    from `buckets` real ones (each used virtual / buckets times on average), `unshared` owns them."""

    def __init__(self, config: HashedConfig, spec: DataSpec):
        super().__init__()
        real = {"shared": 1, "hashed": config.buckets, "unshared": config.virtual}[config.arm]
        self.real, self.virtual = real, config.virtual
        self.weight = nn.Parameter(torch.randn(real))
        self.register_buffer("index", torch.arange(config.virtual) % real)
        self.head = nn.Linear(8, spec.num_classes)

    def forward(self, x):
        virtual = self.weight[self.index].view(8, 8)
        return self.head((x.view(-1, 8, 8) @ virtual).sum(1))

    def parameter_reuse(self) -> dict[str, float]:
        return {"weight": self.virtual / self.real}


@pytest.fixture
def hashed_family():
    family = register(Family(name="hashed_test", config=HashedConfig, arms=("shared", "hashed", "unshared"),
                             reference_arm="unshared", accepts=("images",), network=HashedLinear))
    yield family
    unregister(family.name)


def test_a_family_with_a_third_arm_and_fractional_reuse_is_expressed(hashed_family):
    head = 8 * 10 + 10
    expected = {"shared": (1, 64), "hashed": (24, 64), "unshared": (64, 64)}
    for arm, (real, equiv) in expected.items():
        config = HashedConfig(name=f"hashed_{arm}", arm=arm)
        model = build_model(config, DIGITS)
        model(torch.randn(2, 1, 8, 8)).sum().backward()
        summary = sharing_summary(model, config)
        assert summary["params/unique"] == real + head
        assert summary["params/unshared_equiv"] == equiv + head  # 24 x 64/24: whole again, an int
        assert summary["sharing/ratio"] == pytest.approx((equiv + head) / (real + head))
        assert summary["shared"] == (arm != "unshared")
    assert model.parameter_reuse() == {"weight": 1.0}
    assert build_model(HashedConfig(arm="hashed"), DIGITS).parameter_reuse()["weight"] == pytest.approx(64 / 24)


def test_inspect_shows_fractional_reuse(hashed_family):
    from psx.inspect import parameter_rows, reuse_text

    rows = {row["name"]: row for row in parameter_rows(build_model(HashedConfig(arm="hashed"), DIGITS))}
    assert rows["weight"]["reuse"] == pytest.approx(64 / 24) and rows["head.weight"]["reuse"] == 1
    assert [reuse_text(r) for r in (64 / 24, 1, 64, 2.5, 25_088)] == ["x2.667", "", "x64", "x2.5", "x25,088"]


def test_fractional_unshared_equivalents_stay_fractional(hashed_family):
    model = build_model(HashedConfig(arm="hashed", virtual=64, buckets=24), DIGITS)
    model.parameter_reuse = lambda: {"weight": 2.5}
    assert param_counts(model)["params/unshared_equiv"] == 24 * 2.5 + 90
    model.parameter_reuse = lambda: {"weight": math.nan}
    with pytest.raises(ValueError, match="finite and >= 0"):
        param_counts(model)


def test_a_registered_family_is_validated_and_composed_like_a_shipped_one(hashed_family):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from psx.config import validate
    from psx.hydra_app import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config")
    with open_dict(cfg):  # as a conf/model/hashed.yaml extending /schema/model/hashed_test would give
        cfg.model = {"name": "hashed", "family": "hashed_test", "arm": "hashed", "dropout": 0.0, "init_from": None,
                     "freeze": [], "virtual": 64, "buckets": 24}
    validate(cfg)
    cfg.model.arm = "soft"
    with pytest.raises(PsxError, match="'soft' is not an arm of the hashed_test family"):
        validate(cfg)


def test_summaries_from_before_arms_read_as_shared_or_unshared():
    from psx.models import arm_fields

    assert arm_fields({"family": "cnn", "shared": True}) == {
        "family": "cnn", "arm": "shared", "reference_arm": "unshared", "shared": True}
    assert arm_fields({"family": "cnn", "shared": False})["arm"] == "unshared"


LEGACY_CNN_UNSHARED = {  # conf/model/cnn_unshared.yaml before arms, as a checkpoint saved it
    "name": "cnn_unshared", "family": "cnn", "shared": False, "channels": [32, 64], "kernel_size": 3, "stride": 1,
    "padding": None, "pool": 2, "hidden": [128], "dropout": 0.0, "init_from": None, "freeze": []}
LEGACY_TRANSFORMER = {
    "name": "lm_transformer", "family": "lm", "arch": "transformer", "shared": True, "share_layers": True, "tied": True,
    "tie_projection": False, "layers": 3, "hidden_size": 32, "embedding_size": 32, "heads": 4, "feedforward_size": 64,
    "dropout": 0.1, "init_from": None, "freeze": []}


def test_a_run_saved_before_arms_still_validates_and_builds_the_same_model():
    from omegaconf import OmegaConf

    from psx.models.family import from_before_arms

    unshared = build_model(OmegaConf.create(LEGACY_CNN_UNSHARED), DIGITS)
    assert sum(isinstance(m, LocallyConnected2d) for m in unshared.modules()) == 2
    assert param_counts(unshared)["params/unique"] == 350_602
    transformer = from_before_arms(LEGACY_TRANSFORMER)
    assert (transformer["family"], transformer["arm"], transformer["tied"]) == ("transformer", "shared", True)
    assert "share_layers" not in transformer and "arch" not in transformer
    model = build_model(OmegaConf.create(LEGACY_TRANSFORMER), WORDS)
    assert model.share_layers and model.decoder.weight is model.encoder.weight
    lm = from_before_arms({**LEGACY_TRANSFORMER, "arch": "lstm", "shared": False, "tied": False})
    assert (lm["family"], lm["arm"], "tied" in lm) == ("lm", "untied", False)
