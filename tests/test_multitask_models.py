"""Multi-task pair: shared trunk vs a network per task; exact counts; end to end on multi_digits."""
import json

import pytest
import torch

from psx.data.spec import MULTITASK, DataSpec
from psx.errors import PsxError
from psx.models import build_model, param_counts
from psx.models.families.cnn import CNNConfig
from psx.models.families.mtl import MTLConfig

TWO_DIGITS = DataSpec(name="multi_digits", input_shape=(1, 11, 11), num_classes=10, kind=MULTITASK, tasks=("left", "right"))
SINGLE = DataSpec(name="digits", input_shape=(1, 11, 11), num_classes=10)


def test_separate_has_exactly_tasks_times_the_single_network():
    single = param_counts(build_model(CNNConfig(), SINGLE))["params/unique"]
    separate = param_counts(build_model(MTLConfig(arm="separate"), TWO_DIGITS))
    assert separate["params/unique"] == 2 * single == separate["params/unshared_equiv"]


def test_shared_trunk_counts_once_and_its_unshared_equivalent_is_the_separate_model():
    single_model = build_model(CNNConfig(), SINGLE)
    trunk = sum(p.numel() for p in single_model.features.parameters())
    head = sum(p.numel() for p in single_model.head.parameters())
    shared = param_counts(build_model(MTLConfig(name="mtl_shared"), TWO_DIGITS))
    separate = param_counts(build_model(MTLConfig(arm="separate"), TWO_DIGITS))
    assert shared["params/unique"] == trunk + 2 * head
    assert shared["params/unshared_equiv"] == separate["params/unique"]


def test_outputs_one_prediction_per_task():
    for arm in ["shared", "separate"]:
        out = build_model(MTLConfig(arm=arm), TWO_DIGITS)(torch.randn(5, 1, 11, 11))
        assert out.shape == (5, 2, 10)


def test_multitask_model_on_single_task_data_is_a_clear_error():
    with pytest.raises(PsxError, match="multi_digits"):
        build_model(MTLConfig(name="mtl_shared"), SINGLE)


def test_mtl_pair_end_to_end_logs_per_task_accuracy(psx):
    result = psx("train", "-m", "model=mtl_shared,mtl_separate", "dataset=multi_digits", "trainer.epochs=2")
    assert result.returncode == 0, result.stderr
    for path in sorted((psx.cwd / "outputs").rglob("summary.json")):
        summary = json.loads(path.read_text())
        metrics = summary["metrics"]
        assert {"val/acc/left", "val/acc/right", "test/acc/left", "test/acc/right"} <= set(metrics)
        assert metrics["val/acc"] == pytest.approx((metrics["val/acc/left"] + metrics["val/acc/right"]) / 2)
        header = (path.parent / "metrics.csv").read_text().splitlines()[0].split(",")
        assert "val/acc/left" in header and "val/acc/right" in header
