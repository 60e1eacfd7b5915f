"""`psx report`'s federated figure: accuracy per round and per byte, read from the run folders."""
import json

import pytest

from psx.federated.figures import load_runs, plot


def _run(folder, federated, accs, bytes_per_round=1000, seed=0):
    folder.mkdir(parents=True)
    summary = {"status": "completed", "seed": seed, "federated": federated, "overrides": [],
               "metrics": {"test/acc": accs[-1]}}
    (folder / "summary.json").write_text(json.dumps(summary))
    rows = ["epoch,round,test/acc,test/acc/client_mean,comm/bytes"]
    rows += [f"{r},{r},{a},{a},{r * bytes_per_round}" for r, a in enumerate(accs, 1)]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_rounds_per_arm_and_the_centralised_reference(tmp_path):
    fedavg = {"name": "fedavg", "partition": "iid", "alpha": 1.0}
    runs = [_run(tmp_path / "0", fedavg, [0.5, 0.7]), _run(tmp_path / "1", fedavg, [0.6, 0.9], seed=1),
            _run(tmp_path / "2", None, [0.95])]
    damaged = tmp_path / "3"
    damaged.mkdir()
    (damaged / "summary.json").write_text("[not a summary")
    rounds, central = load_runs([*runs, damaged])
    assert sorted(rounds["seed"].unique()) == [0, 1]
    assert rounds.groupby("round")["test/acc"].mean().tolist() == pytest.approx([0.55, 0.8])
    assert rounds["comm/bytes"].max() == 2000
    assert central["test/acc"].tolist() == [0.95] and central["split"].tolist() == ["IID"]
    png = plot(rounds, central, tmp_path / "out" / "federated.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
