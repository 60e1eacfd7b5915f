"""`psx report` end to end: a real sweep through `psx train -m`, then the real `psx report` command.

Expected values are computed here, independently, from the runs' own summary.json files.
"""
import base64
import csv
import json
import re
import statistics
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_psx

# 12 jobs, about 15 s on a laptop CPU: two arms x three sizes x two seeds, small CNNs, two epochs.
# train_size=5 (fewer than one example per class) makes 4 jobs fail on purpose.
SWEEP = ["train", "-m", "model=cnn_shared,cnn_unshared", "dataset.train_size=5,40,80", "seed=0,1",
         "trainer.epochs=2", "trainer.lr=0.01", "model.channels=[8,16]", "model.hidden=[32]", "trainer.progress=none"]
FAILED_ERROR = "fewer than one example per class"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("report")
    trained = run_psx(SWEEP, cwd=cwd)
    assert trained.returncode == 1, trained.stderr  # the train_size=5 jobs failed, the sweep went on
    report = run_psx(["report"], cwd=cwd)  # no path: the latest sweep under ./outputs/multirun
    assert report.returncode == 0, report.stderr
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    return SimpleNamespace(cwd=cwd, dir=sweep_dir, out=sweep_dir / "report", stdout=report.stdout)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]


def test_aggregate_matches_mean_and_sample_std_of_the_run_summaries(sweep):
    runs = summaries(sweep.dir)
    assert len(runs) == 12
    expected = {}
    for run in runs:
        if run["status"] == "completed":
            expected.setdefault((run["model"], str(run["train_size"])), []).append(run["metrics"])
    assert len(expected) == 4 and all(len(v) == 2 for v in expected.values())

    rows = {(r["model"], r["train_size"]): r for r in read_csv(sweep.out / "aggregate.csv")}
    for key, metrics in expected.items():
        row = rows[key]
        assert int(row["n"]) == len(metrics) and int(row["not_completed"]) == 0
        for split in ("val", "test"):
            values = [m[f"{split}/acc"] for m in metrics]
            assert float(row[f"{split}/acc mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
            assert float(row[f"{split}/acc std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)  # ddof=1
        shown = f"{statistics.mean(m['test/acc'] for m in metrics):.3f} ± {statistics.stdev(m['test/acc'] for m in metrics):.3f}"
        assert shown in sweep.stdout and shown in (sweep.out / "aggregate.md").read_text()
    for model in ("cnn_shared", "cnn_unshared"):  # the failed size is a row too, with nothing to average
        assert rows[(model, "5")]["n"] == "0" and rows[(model, "5")]["not_completed"] == "2"

    gaps = {r["train_size"]: r for r in read_csv(sweep.out / "gaps.csv")}
    for size in ("40", "80"):
        shared = statistics.mean(m["test/acc"] for m in expected[("cnn_shared", size)])
        unshared = statistics.mean(m["test/acc"] for m in expected[("cnn_unshared", size)])
        assert float(gaps[size]["gap"]) == pytest.approx(shared - unshared, abs=1e-12)
        # real runs carry their arm; the same seed on the same subset makes the two arms a pair
        assert (gaps[size]["arm"], gaps[size]["reference_arm"], gaps[size]["method"]) == ("shared", "unshared", "paired")


def test_summary_csv_has_one_row_per_run_with_config_and_metrics(sweep):
    rows = read_csv(sweep.out / "summary.csv")
    assert len(rows) == 12
    assert {"trainer.lr", "model.channels", "dataset.train_size", "test/acc", "params/unique"} <= set(rows[0])
    assert {r["model.channels"] for r in rows} == {"[8, 16]"}
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 4 and all(FAILED_ERROR in r["error"] and r["train_size"] == "5" for r in failed)
    assert all(r["test/acc"] for r in rows if r["status"] == "completed")


def test_failed_runs_are_listed_in_the_terminal_and_the_html(sweep):
    assert "8 completed, 4 failed" in sweep.stdout
    assert "4 runs left out of the numbers" in sweep.stdout and FAILED_ERROR in sweep.stdout
    html = (sweep.out / "report.html").read_text()
    failed_table = re.search(r'<table id="failed">.*?</table>', html, re.S).group(0)
    assert failed_table.count('<tr class="failed">') == 4 and FAILED_ERROR in failed_table


def test_html_is_self_contained_and_its_images_are_pngs(sweep):
    html = (sweep.out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)  # nothing to fetch
    assert not re.search(r"url\(|@import|<script|<link", html, re.I)
    assert "psx train -m model=cnn_shared,cnn_unshared dataset.train_size=5,40,80" in html  # the sweep's command
    assert "torch version" in html and "trainer.lr: 0.01" in html
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width > 100 and height > 100
    for name in ("test_acc_vs_size.png", "gap_acc_vs_size.png", "learning_curves_acc.png", "test_acc_vs_params.png"):
        assert (sweep.out / name).stat().st_size > 1000


def test_by_metric_and_out_options(sweep, tmp_path):
    out = tmp_path / "by-size"
    result = run_psx(["report", str(sweep.dir), "--by", "dataset.train_size", "--metric", "loss", "--out", str(out)], cwd=sweep.cwd)
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "aggregate.csv")
    assert [r["dataset.train_size"] for r in rows] == ["5", "40", "80"]
    completed = [s for s in summaries(sweep.dir) if s["status"] == "completed" and s["train_size"] == 40]
    losses = [s["metrics"]["test/loss"] for s in completed]
    assert len(losses) == 4 and float(rows[1]["test/loss mean"]) == pytest.approx(statistics.mean(losses), abs=1e-12)
    assert "loss (lower is better)" in result.stdout
    assert re.search(r"runs in one row differ in [^;]*\bmodel\.name\b", result.stdout)  # the mix is said, not hidden
    assert not (out / "gaps.csv").exists()  # no model key: nothing to pair


@pytest.mark.parametrize(
    "args,message",
    [
        (["--by", "nope"], "unknown --by key 'nope'"),
        (["--metric", "ppl"], "unknown metric 'ppl' (available: acc, loss)"),
        (["--group", "g"], "--group needs --wandb"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_errors_are_one_line(sweep, args, message):
    result = run_psx(["report", str(sweep.dir), *args], cwd=sweep.cwd)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("psx: error:") and message in lines[0], result.stderr


def test_no_runs_is_one_line(psx):
    result = psx("report")
    assert result.returncode == 2 and result.stderr.startswith("psx: error: no runs found under"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_help_and_no_heavy_imports_for_psx_help(psx):
    result = psx("report", "--help")
    assert result.returncode == 0 and "--by" in result.stdout and "--wandb" in result.stdout
    import subprocess
    import sys

    probe = "import sys, psx.cli; psx.cli.main(['--help']); print(sorted({'pandas', 'matplotlib', 'torch'} & set(sys.modules)))"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "report" in shown.stdout and shown.stdout.strip().endswith("[]"), shown.stdout + shown.stderr
