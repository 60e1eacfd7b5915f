"""Transfer with the real command: pretrain, then start another run from it, part of it frozen."""
import json
import logging

import pytest
import torch

from psx.checkpoint import save_checkpoint
from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models import build_model
from psx.models.families.cnn import CNNConfig
from psx.models.transfer import load_matching_weights

DIGITS = DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10)


def run_dirs(cwd):
    return sorted(p.parent for p in (cwd / "outputs").glob("*/*/summary.json"))


def test_init_from_loads_matching_weights_and_freeze_keeps_them_fixed(psx):
    assert psx("train", "model=cnn_shared", "trainer.epochs=2").returncode == 0
    (source,) = run_dirs(psx.cwd)
    tuned = psx("train", "model=cnn_shared", f"model.init_from={source}", "model.freeze=[features]",
                "dataset.train_size=100", "trainer.epochs=2")
    assert tuned.returncode == 0, tuned.stderr
    target = [d for d in run_dirs(psx.cwd) if d != source][0]
    summary = json.loads((target / "summary.json").read_text())
    assert set(summary["transfer"]["loaded"]) == set(torch.load(source / "checkpoint.pt", weights_only=True)["model"])
    assert summary["frozen"] == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    assert summary["params/trainable"] == summary["params/unique"] - (320 + 18_496)
    before = torch.load(source / "checkpoint.pt", weights_only=True)["model"]
    after = torch.load(target / "checkpoint.pt", weights_only=True)["model"]
    for name in summary["frozen"]:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["head.0.weight"], after["head.0.weight"])  # the head did train


def test_transfer_between_different_models_reports_what_did_not_load(psx):
    assert psx("train", "model=cnn_shared", "trainer.epochs=1").returncode == 0
    (source,) = run_dirs(psx.cwd)
    result = psx("train", "model=cnn_shared", "model.channels=[32,32]", f"model.init_from={source}", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    target = [d for d in run_dirs(psx.cwd) if d != source][0]
    transfer = json.loads((target / "summary.json").read_text())["transfer"]
    assert "features.0.weight" in transfer["loaded"]
    assert any(s.startswith("features.3.weight (shape") for s in transfer["skipped"])


def test_freezing_an_unknown_part_is_a_clear_error(psx):
    result = psx("train", "model=mlp", "model.freeze=[trunk]", "trainer.epochs=1")
    assert result.returncode == 2 and not (psx.cwd / "outputs").exists()  # found before the run starts
    assert "model.freeze: 'trunk' names no parameters (top-level parts: net)" in result.stderr


def test_inspect_lists_tensors_reuse_and_totals(psx):
    result = psx("inspect", "model=cnn_shared")
    assert result.returncode == 0, result.stderr
    assert "features.0.weight" in result.stdout and "x64" in result.stdout and "x16" in result.stdout
    assert "53,002" in result.stdout and "350,602" in result.stdout and "6.61x" in result.stdout
    unshared = psx("inspect", "model=rnn_unshared")
    assert unshared.returncode == 0 and "layers.0.weight_ih" in unshared.stdout and "1.00x" in unshared.stdout
    bad = psx("inspect", "model=nope")
    assert bad.returncode == 2 and bad.stderr.startswith("psx: error: no config 'model/nope'")


def test_tensors_of_another_shape_are_reported_as_keeping_their_initialisation(tmp_path, caplog):
    source = build_model(CNNConfig(name="cnn_shared", channels=[8, 16]), DIGITS)
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": source.state_dict()})
    target = build_model(CNNConfig(name="cnn_shared", channels=[8, 32]), DIGITS)
    with caplog.at_level(logging.INFO, logger="psx"):
        transfer = load_matching_weights(target, str(tmp_path))
    changed = ["features.3.weight", "features.3.bias", "head.0.weight"]  # the second conv and what reads it
    assert transfer["initialised"] == changed and [s.split()[0] for s in transfer["skipped"]] == changed
    assert torch.equal(target.state_dict()["features.0.weight"], source.state_dict()["features.0.weight"])
    assert f"3 start from their own initialisation ({', '.join(changed)})" in caplog.text
    assert "3 of the source's not used (features.3.weight (shape (16, 8, 3, 3) here (32, 8, 3, 3))" in caplog.text


def test_a_missing_init_from_names_the_key(tmp_path):
    with pytest.raises(PsxError, match=f"^model.init_from: no checkpoint at {tmp_path / 'nope'}"):
        load_matching_weights(build_model(CNNConfig(name="cnn_shared"), DIGITS), str(tmp_path / "nope"))
