"""The data set declarations (psx/data/sets/) are the one place a data set is described: configs
compose from them, checks and listings derive from them, and adding one is a module plus a YAML."""
import subprocess
import sys
import textwrap

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from psx.config import validate
from psx.data import build_data, describe, registry, sets
from psx.data.registry import dataset_entry, default_config, entries
from psx.errors import PsxError
from psx.hydra_app import config_dir

# What `dataset=<name>` composed to before the schemas moved into the data set modules (the
# YAML files then spelled out every key): the same values give the same data and metrics. Keys
# added since default to what psx did before them (ptb's val_tokens: null, validate on all).
COMPOSED_BEFORE = {
    "digits": dict(name="digits", test_size=360, val_size=180, split_seed=0, train_size=None, subset_seed=0),
    "mnist": dict(name="mnist", val_size=5000, split_seed=0, train_size=None, subset_seed=0, download=True, verify=True),
    "fashion_mnist": dict(name="fashion_mnist", val_size=5000, split_seed=0, train_size=None, subset_seed=0,
                          download=True, verify=True),
    "cifar10": dict(name="cifar10", val_size=5000, split_seed=0, train_size=None, subset_seed=0, augment=False,
                    download=True, verify=True),
    "ptb": dict(name="ptb", bptt=35, train_size=None, val_tokens=None, download=True, verify=True),
    "multi_mnist": dict(name="multi_mnist", shift=8, task=None, val_size=5000, split_seed=0, train_size=None,
                        subset_seed=0, download=True, verify=True),
    "multi_digits": dict(name="multi_digits", shift=3, task=None, test_size=360, val_size=180, split_seed=0,
                         train_size=None, subset_seed=0),
}


def composed(*overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_yaml_is_declared_once_and_composes_to_the_values_it_always_had():
    yamls = {p.stem for p in (config_dir() / "dataset").glob("*.yaml")}
    assert yamls == set(entries()) and set(COMPOSED_BEFORE) <= yamls  # plus the data sets added since
    for name, before in COMPOSED_BEFORE.items():
        cfg = composed(f"dataset={name}")
        assert OmegaConf.to_container(cfg.dataset) == before, name
        assert OmegaConf.to_container(default_config(name)) == before, name  # the same without Hydra
        validate(cfg)


def test_sources_list_the_files_and_md5s_torchvision_publishes():
    from torchvision.datasets import CIFAR10, MNIST, FashionMNIST

    assert dataset_entry("mnist").source.files == tuple(MNIST.resources)
    assert dataset_entry("fashion_mnist").source.files == tuple(FashionMNIST.resources)
    cifar = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    assert dataset_entry("cifar10").source.files == tuple(tuple(f) for f in cifar)
    assert dataset_entry("cifar10").source.folder == CIFAR10.base_folder
    assert dataset_entry("multi_mnist").source is dataset_entry("mnist").source  # built from MNIST's files


def test_listing_describing_and_checking_configs_never_import_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from psx import datacli
        from psx.config import validate
        from psx.data import describe
        from psx.data.registry import default_config, entries
        from psx.hydra_app import config_dir
        from hydra import compose, initialize_config_dir
        datacli.list_datasets({str(tmp_path)!r})
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            for name in entries():
                validate(compose("config", overrides=["dataset=" + name]))
                describe(default_config(name))
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10", "multi_mnist", "multi_digits"])
def test_the_holdout_rule_is_one_rule_before_loading_and_with_the_data(name):
    with pytest.raises(PsxError, match=r"^dataset.val_size must hold at least one example per class \(>= 10\), got 3$"):
        validate(composed(f"dataset={name}", "dataset.val_size=3"))


def test_holdouts_that_leave_nothing_to_train_on_fail_once_the_data_is_known():
    with pytest.raises(PsxError, match=r"dataset.test_size \+ dataset.val_size = 1790 leave too few of the 1797"):
        build_data(default_config("digits", test_size=1000, val_size=790))
    with pytest.raises(PsxError, match=r"dataset.test_size \+ dataset.val_size = 1790 leave too few of the 1797"):
        build_data(default_config("multi_digits", test_size=1000, val_size=790))


def test_typed_arguments_reject_unknown_keys_and_wrong_types_with_one_line():
    with pytest.raises(PsxError, match="invalid dataset config for digits: Key 'augment' not in 'DigitsConfig'"):
        describe(OmegaConf.create({"name": "digits", "augment": True}))
    with pytest.raises(PsxError, match="unknown dataset 'nope' \\(known: cifar10, digits, mnist"):
        describe(OmegaConf.create({"name": "nope"}))
    assert describe(OmegaConf.create({"name": "ptb", "bptt": 70})).seq_len == 70  # the rest from the defaults


NEW_MODULE = '''
"""digits with a smaller validation set: a data set added as one module plus its YAML."""
from dataclasses import dataclass

from psx.data.entry import DatasetEntry
from psx.data.sets import digits


@dataclass
class FewDigitsConfig(digits.DigitsConfig):
    name: str = "few_digits"
    val_size: int = 100


DATASETS = [DatasetEntry("few_digits", FewDigitsConfig, digits.spec, digits.build, "digits, 100 for validation",
                         check=digits.check)]
'''
NEW_YAML = "defaults:\n  - /schema/dataset/few_digits@_here_\n  - _self_\n\nname: few_digits\ntest_size: 300\n"


@pytest.fixture
def one_more_data_set(tmp_path, monkeypatch):
    """A new module in a folder that psx/data/sets/ also reads, and its YAML in a config folder
    Hydra also searches: nothing else is written anywhere."""
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "few_digits.py").write_text(NEW_MODULE)
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "few_digits.yaml").write_text(NEW_YAML)
    monkeypatch.setattr(sets, "__path__", [*sets.__path__, str(tmp_path / "sets")])
    registry.entries.cache_clear()
    registry.register_schemas()
    yield f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    monkeypatch.undo()
    registry.entries.cache_clear()
    sys.modules.pop("psx.data.sets.few_digits", None)


def test_a_new_data_set_is_one_module_plus_its_yaml(one_more_data_set, tmp_path, capsys):
    cfg = composed("dataset=few_digits", one_more_data_set)
    assert (cfg.dataset.val_size, cfg.dataset.test_size, cfg.dataset.split_seed) == (100, 300, 0)
    validate(cfg)
    data = build_data(cfg.dataset)
    assert (len(data.train), len(data.val), len(data.test)) == (1397, 100, 300)
    with pytest.raises(PsxError, match="dataset.val_size must hold at least one example per class"):
        validate(composed("dataset=few_digits", "dataset.val_size=5", one_more_data_set))
    from psx import datacli

    datacli.list_datasets(tmp_path)
    assert "few_digits" in capsys.readouterr().out


def test_missing_real_data_skips_naming_what_to_put_where_and_fails_in_ci(tmp_path, monkeypatch):
    import conftest

    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "no-ci-copy")
    monkeypatch.setenv("PSX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"fashion_mnist not found: put train-images-idx3-ubyte.gz, .* in "
                                                    f"{tmp_path / 'FashionMNIST/raw'} \\(torchvision's layout"):
        conftest.real_files("fashion_mnist")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="ptb not found: .*CI must provide it"):
        conftest.real_files("ptb")
    (tmp_path / "PennTreebank").mkdir()
    for name, _ in dataset_entry("ptb").source.files:
        (tmp_path / "PennTreebank" / name).write_text("a b\n")  # the user's folder is used as it is
    assert conftest.real_files("ptb") == {name: tmp_path / "PennTreebank" / name for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")}


def test_a_value_the_typed_schema_rejects_is_one_line_naming_the_key():
    from psx.cli import compose_checked

    with pytest.raises(PsxError, match=r"^invalid dataset.val_size: Value 'abc' of type 'str' could not be converted to Integer$"):
        compose_checked(["dataset=mnist", "dataset.val_size=abc"])
