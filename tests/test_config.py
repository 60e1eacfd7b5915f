import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from psx.config import validate
from psx.errors import PsxError
from psx.hydra_app import config_dir


def composed(*overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_defaults_are_cnn_shared_on_digits_on_auto_device_with_csv():
    cfg = composed()
    assert (cfg.model.name, cfg.dataset.name, cfg.device.type) == ("cnn_shared", "digits", "auto")
    assert "csv" in cfg.logger and cfg.seed == 0
    validate(cfg)


@pytest.mark.parametrize("model", ["cnn_shared", "cnn_unshared", "mlp"])
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "mps"])
def test_every_shipped_choice_validates(model, device):
    validate(composed(f"model={model}", f"device={device}"))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("scheduler", ["none", "cosine", "step", "plateau"])
def test_optimizers_and_schedulers_validate(optimizer, scheduler):
    validate(composed(f"trainer.optimizer={optimizer}", f"trainer.scheduler={scheduler}"))


def test_a_typo_inside_a_config_file_is_caught():
    cfg = composed()
    with open_dict(cfg):
        cfg.trainer.learning_rate = 0.1  # as if a YAML file had a misspelt key
    with pytest.raises(PsxError, match="learning_rate"):
        validate(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.lr=abc", "trainer"),
        ("trainer.optimizer=rmsprop", "rmsprop"),
        ("trainer.epochs=0", "epochs"),
        ("dataset.train_size=-5", "train_size"),
        ("model.dropout=1.5", "dropout"),
        ("device.num_threads=0", "num_threads"),
    ],
)
def test_bad_values_fail_validation(override, message):
    with pytest.raises(PsxError, match=message):
        validate(composed(override))


def test_config_dir_is_the_repositorys_conf_in_a_source_checkout():
    from pathlib import Path

    assert config_dir() == Path(__file__).resolve().parents[1] / "conf"
