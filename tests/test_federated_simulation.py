"""Federated learning, slow tier: Flower's real simulation engine (Ray), 4 clients, 2 rounds.
Each test starts the engine once (about 40 s on 2 cores, most of it Ray's start)."""
import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

pytest.importorskip("flwr", reason='the federated extra is not installed (pip install -e ".[federated]")')

from psx.data import build_data  # noqa: E402
from psx.errors import PsxError  # noqa: E402
from psx.hydra_app import config_dir  # noqa: E402
from psx.models import build_model  # noqa: E402
from psx.tasks import task_for  # noqa: E402

pytestmark = pytest.mark.slow


def test_fedavg_on_four_simulated_clients_learns(psx):
    result = psx("train", "federated=fedavg", "federated.clients=4", "federated.rounds=2", "trainer.progress=none",
                 "device.num_threads=1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary_file] = psx.cwd.glob("outputs/*/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "completed"
    assert summary["metrics"]["test/acc"] > 0.5  # ten classes: chance is 0.1
    assert summary["params/shared_across_clients"] == summary["params/unique"]
    assert summary["epochs_completed"] == 2 and summary["steps"] is None  # rows are rounds, not optimizer steps
    rows = list(csv.DictReader((summary_file.parent / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2]
    # every round sends the model to 4 clients and gets 4 back: bytes grow by the same amount each round
    per_round = [int(r["comm/bytes"]) for r in rows]
    assert per_round[1] == 2 * per_round[0] >= 8 * 4 * summary["params/unique"]
    assert float(rows[0]["val/acc/client_worst"]) <= float(rows[0]["val/acc/client_mean"])

    from psx.federated.figures import load_runs, plot

    rounds, central = load_runs(sorted(p.parent for p in (psx.cwd / "outputs").rglob("summary.json")))
    assert list(rounds["arm"]) == ["fedavg", "fedavg"] and central.empty
    figure = plot(rounds, central, psx.cwd / "federated.png")
    assert figure.stat().st_size > 10_000


def test_a_client_that_raises_fails_the_run(tmp_path):
    from psx.federated.run import federated_fit

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["federated=fedavg", "federated.clients=4", "federated.rounds=2",
                                           "device.num_threads=1"])
    data = build_data(cfg.dataset)
    data.train.y[0] = 99  # one client holds an example with a label its model cannot have
    rows = []
    with pytest.raises(PsxError, match=r"1 of 4 clients failed in training: .*Target 99 is out of bounds"):
        federated_fit(cfg, data, lambda: build_model(cfg.model, data.spec), tmp_path, rows.append,
                      task_for(data.spec, cfg.model))
    assert rows == []  # no round was recorded as done
    assert not (tmp_path / "checkpoint.pt").exists()
    assert torch.equal(data.train.y[0], torch.tensor(99))
