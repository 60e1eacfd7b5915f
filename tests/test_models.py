import pytest
import torch
from omegaconf import OmegaConf

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models import build_model, param_counts
from psx.models.locally_connected import LocallyConnected2d

DIGITS = DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10)


def model_cfg(name, **overrides):
    from hydra import compose, initialize_config_dir

    from psx.hydra_app import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}", *[f"model.{k}={v}" for k, v in overrides.items()]])
    return cfg.model


# Default CNN on 8x8 digits: conv3x3(1->32, same) -> pool -> conv3x3(32->64, same) -> pool
# -> 2x2x64 = 256 features -> linear 128 -> linear 10.
CONV1 = 32 * (1 * 9 + 1)  # 320
CONV2 = 64 * (32 * 9 + 1)  # 18,496
HEAD = (256 * 128 + 128) + (128 * 10 + 10)  # 34,186
LC1 = 8 * 8 * CONV1  # an own filter at each of the 64 positions
LC2 = 4 * 4 * CONV2  # 16 positions after the first pool


def test_cnn_shared_counts_on_digits():
    counts = param_counts(build_model(model_cfg("cnn_shared"), DIGITS))
    assert counts.pop("params/trainable") == counts["params/unique"]
    assert counts == {"params/unique": CONV1 + CONV2 + HEAD, "params/unshared_equiv": LC1 + LC2 + HEAD}
    assert counts["params/unique"] == 53_002


def test_cnn_unshared_counts_on_digits_equal_the_shared_models_unshared_equivalent():
    model = build_model(model_cfg("cnn_unshared"), DIGITS)
    assert sum(isinstance(m, LocallyConnected2d) for m in model.modules()) == 2
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    counts = param_counts(model)
    assert counts.pop("params/trainable") == counts["params/unique"]
    assert counts == {"params/unique": LC1 + LC2 + HEAD, "params/unshared_equiv": LC1 + LC2 + HEAD}
    assert counts["params/unique"] == 350_602


def test_mlp_counts_on_digits():
    counts = param_counts(build_model(model_cfg("mlp"), DIGITS))
    counts.pop("params/trainable")
    expected = (64 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)
    assert counts == {"params/unique": expected, "params/unshared_equiv": expected}


def test_unshared_cnn_equals_shared_cnn_given_its_weights():
    torch.manual_seed(0)
    shared = build_model(model_cfg("cnn_shared"), DIGITS).double()
    unshared = build_model(model_cfg("cnn_unshared"), DIGITS).double()
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
        build_model(model_cfg("cnn_shared", channels="[8,8,8,8]"), DIGITS)
