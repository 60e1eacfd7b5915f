"""`psx report` on W&B runs: folders written by the real W&B client in offline mode (no server
can be reached here), read back through the same conversion the --wandb API path uses."""
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap

import pytest
from conftest import run_psx

pytest.importorskip("wandb", reason="the W&B tests need the wandb package (pip install -e '.[dev]')")

# Four runs of a 2 x 2 grid (two arms, two seeds) and one failed run, logged as the psx W&B
# logger is expected to log them (see psx/report/from_wandb.py). The unshared arm logs its config
# nested (as OmegaConf.to_container gives it) to show both spellings read the same.
WRITE_RUNS = textwrap.dedent("""
    import json, sys, wandb
    root, runs = sys.argv[1], json.loads(sys.argv[2])
    for spec in runs:
        model, seed = spec["model"], spec["seed"]
        flat = {"model.name": model, "model.family": "cnn", "model.shared": model == "cnn_shared",
                "dataset.name": "digits", "dataset.train_size": 100, "seed": seed, "trainer.lr": 0.001}
        nested = {"model": {"name": model, "family": "cnn", "shared": False}, "dataset": {"name": "digits",
                  "train_size": 100}, "seed": seed, "trainer": {"lr": 0.001}}
        run = wandb.init(dir=root, project="psx", group="sweep-1", name=f"{model}-{seed}",
                         config=flat if model == "cnn_shared" else nested)
        for epoch, acc in enumerate(spec["val_curve"], start=1):
            run.log({"epoch": epoch, "val/acc": acc, "train/loss": 1.0 / epoch})
        run.summary.update(spec["summary"])
        run.finish()
""")


def grid():
    runs = []
    for i, (model, seed) in enumerate([("cnn_shared", 0), ("cnn_shared", 1), ("cnn_unshared", 0), ("cnn_unshared", 1)]):
        val = 0.70 + 0.05 * i
        runs.append({"model": model, "seed": seed, "val_curve": [val - 0.2, val - 0.05, val],
                     "summary": {"status": "completed", "val/acc": val, "test/acc": val - 0.01 * (i + 1),
                                 "params/unique": 53002 if model == "cnn_shared" else 350602,
                                 "params/unshared_equiv": 350602, "train_examples": 100, "wall_seconds": 3.0 + i,
                                 "psx_version": "0.1.0", "torch_version": "2.x", "device": "cpu"}})
    runs.append({"model": "cnn_unshared", "seed": 2, "val_curve": [],
                 "summary": {"status": "failed", "error": "CUDA out of memory <on gpu0> & more"}})
    return runs


@pytest.fixture(scope="module")
def wandb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb-runs")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root)}
    written = subprocess.run([sys.executable, "-c", WRITE_RUNS, str(root), json.dumps(grid())],
                             env=env, capture_output=True, text=True, timeout=180)
    assert written.returncode == 0, written.stderr
    assert len(list((root / "wandb").glob("offline-run-*"))) == 5
    return root


def test_report_reads_offline_wandb_runs(wandb_root, tmp_path):
    out = tmp_path / "out"
    result = run_psx(["report", str(wandb_root / "wandb"), "--out", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 runs" in result.stdout and "4 completed, 1 failed" in result.stdout

    with open(out / "aggregate.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    for model in ("cnn_shared", "cnn_unshared"):
        logged = [s["summary"] for s in grid() if s["model"] == model and s["summary"]["status"] == "completed"]
        row = rows[model]
        assert row["train_size"] == "100" and row["n"] == "2"
        for key in ("val/acc", "test/acc"):
            assert float(row[f"{key} mean"]) == pytest.approx(statistics.mean(s[key] for s in logged))
            assert float(row[f"{key} std"]) == pytest.approx(statistics.stdev(s[key] for s in logged))
        assert float(row["params/unique"]) == logged[0]["params/unique"]
    assert rows["cnn_unshared"]["not_completed"] == "1"

    with open(out / "summary.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert {r["source"] for r in runs} == {"wandb"} and {r["trainer.lr"] for r in runs} == {"0.001"}
    assert all(r["run"].startswith(("cnn_shared-", "cnn_unshared-")) for r in runs)
    html = (out / "report.html").read_text()
    assert "CUDA out of memory &lt;on gpu0&gt; &amp; more" in html  # the error, escaped
    assert (out / "learning_curves_acc.png").exists()  # from the runs' logged history
    assert (out / "gaps.csv").exists()


def test_a_torn_transaction_log_keeps_what_was_written(wandb_root, tmp_path):
    """A run killed mid-write leaves a truncated run-<id>.wandb: read what is there, do not fail."""
    from psx.report.from_wandb import load_wandb_dir

    source = sorted((wandb_root / "wandb").glob("offline-run-*"))[0]
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    (log,) = copy.glob("*.wandb")
    data = log.read_bytes()
    log.write_bytes(data[: len(data) // 2])
    record, _ = load_wandb_dir(copy, "torn")
    assert record["model"] in ("cnn_shared", "cnn_unshared") and record["status"] in ("running", "completed")


def test_wandb_api_path_makes_a_real_call_and_fails_in_one_line(tmp_path):
    """No server and no key here: the real client must refuse, as one psx error line."""
    env = {"WANDB_API_KEY": "", "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path), "WANDB_BASE_URL": "http://127.0.0.1:9"}
    result = run_psx(["report", "--wandb", "team/psx", "--group", "sweep-1"], cwd=tmp_path, extra_env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("psx: error: W&B: could not read runs of team/psx"), result.stderr
