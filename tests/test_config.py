import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

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


def shipped(group):
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("model", shipped("model"))
@pytest.mark.parametrize("device", shipped("device"))
def test_every_shipped_choice_validates(model, device):
    validate(composed(f"model={model}", f"device={device}"))


@pytest.mark.parametrize("model", shipped("model"))
def test_every_model_file_names_an_arm_of_its_family_and_gives_only_known_keys(model):
    from psx.models import known_families

    cfg = composed(f"model={model}").model
    family = known_families()[cfg.family]
    assert cfg.name == model and cfg.arm in family.arms


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"arm": "loose"}, "model.arm='loose' is not an arm of the cnn family (shared, soft, unshared)"),
        ({"family": "nope"}, "unknown model family 'nope' (known: cnn, hashed, lm, mlp, mtl, rnn, transformer"),
        ({"arm": "???"}, "config 'model' is missing: arm"),
        ({"hidden": [64, 0]}, "model.hidden must hold positive integers, got [64, 0]"),
        ({"channels": []}, "model.channels must list at least one layer"),
    ],
)
def test_a_bad_model_file_is_one_line(edit, message):
    cfg = composed()
    with open_dict(cfg):  # as if conf/model/cnn_shared.yaml said so
        for key, value in edit.items():
            cfg.model[key] = value
    with pytest.raises(PsxError) as error:
        validate(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model=rnn_shared model.num_layers=0", "model.num_layers must be >= 1, got 0"),
        ("model=lm_tied model.size=huge", "invalid model"),
        ("model=lm_transformer model.heads=3", "not divisible by heads 3"),
        ("model=mtl_shared model.task_weights={left:-1}", "model.task_weights must map task names to weights >= 0"),
        ("model=lm_transformer model.kv_heads=3", "model.kv_heads=3 must divide model.heads=4"),
        ("model=mlp_hashed model.compression=2", "model.compression must be in (0, 1]"),
        ("model=cnn_soft model.soft.schedule=linear", "model.soft.schedule=linear needs model.soft.end"),
        ("model=cnn_unshared model.untie_at=3", "model.untie_at unties the shared arm's convs"),
        ("model=mtl_shared model.untie_at=3", "the mtl family shares across tasks"),
        ("model=lm_tied dataset=ptb dataset.val_tokens=1", "dataset.val_tokens must be >= 2"),
        ("model=lm_tied dataset=ptb dataset.val_tokens=2000",
         "dataset.val_tokens=2000 cannot fill trainer.eval_batch_size=1024 evaluation streams"),
    ],
)
def test_each_family_checks_its_own_values(override, message):
    with pytest.raises(PsxError, match=re.escape(message)):
        validate(composed(*override.split()))


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


def test_a_config_saved_before_arms_validates_as_resume_gives_it():
    cfg = composed()
    with open_dict(cfg):
        cfg.model = {"name": "cnn_unshared", "family": "cnn", "shared": False, "channels": [32, 64], "kernel_size": 3,
                     "stride": 1, "padding": None, "pool": 2, "hidden": [128], "dropout": 0.0, "init_from": None,
                     "freeze": []}
    validate(cfg)
