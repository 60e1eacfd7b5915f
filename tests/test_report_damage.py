"""psx report on damaged sweeps: every kind of damage made here, in real files; each damaged run
is listed with its reason and left out of the numbers (or, for a damaged metrics.csv or config,
keeps its numbers and loses only its curve or config keys); never a traceback."""
import csv
import json
import os
import random
import shutil
import subprocess

import pytest
from conftest import psx_executable, run_psx
from test_report_stats import write_sweep

from psx.errors import PsxError
from psx.report.command import main as report


def edit_summary(change):
    def damage(run):
        summary = json.loads((run / "summary.json").read_text())
        change(summary)
        (run / "summary.json").write_text(json.dumps(summary))
    return damage


def write(name, content):
    def damage(run):
        path = run / name
        path.unlink()
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def set_metric(key, value):
    return edit_summary(lambda s: s["metrics"].__setitem__(key, value))


# kind: (damage, reason shown, whether the run still counts)
DAMAGE = {
    "summary is a list": (write("summary.json", "[1, 2]"), "summary.json is a JSON list, not an object", False),
    "metrics not a dict": (edit_summary(lambda s: s.__setitem__("metrics", [0.9])), "'metrics' is a list, not an object", False),
    "summary binary": (write("summary.json", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), "summary.json is not text (binary data)", False),
    "summary truncated": (write("summary.json", '{"status": "compl'), "summary.json is not valid JSON", False),
    "summary empty": (write("summary.json", ""), "summary.json is empty", False),
    "summary a folder": (write("summary.json", None), "summary.json is a folder, not a file", False),
    "no summary": (lambda run: (run / "summary.json").unlink(), "no summary.json (the run stopped before writing it)", False),
    "test metric NaN": (set_metric("test/acc", float("nan")), "test/acc is nan", False),
    "test metric text": (set_metric("test/acc", "0.9"), "test/acc is '0.9', not a number", False),
    "impossible accuracy": (set_metric("test/acc", 99.0), "test/acc = 99 is outside its possible range [0, 1]", False),
    "negative loss": (set_metric("val/loss", -0.5), "val/loss = -0.5 is outside its possible range [0, inf]", False),
    "no metrics": (edit_summary(lambda s: s.__setitem__("metrics", {})), "no val or test metric recorded", False),
    "params not a number": (edit_summary(lambda s: s.__setitem__("params/unique", "many")), "params/unique is 'many', not a count", False),
    "metrics.csv binary": (write("metrics.csv", b"\x00\x01\xff\xfe" * 10), "metrics.csv is not text (binary data) (learning curve left out)", True),
    "metrics.csv malformed": (write("metrics.csv", "epoch,val/acc\n1,0.5\n2,0.6,9,9\n"), "metrics.csv is malformed", True),
    "metrics.csv a folder": (write("metrics.csv", None), "metrics.csv is a folder, not a file (learning curve left out)", True),
    "metrics.csv text cell": (write("metrics.csv", "epoch,val/acc\n1,0.5\n2,oops\n"), "metrics.csv line 3: val/acc is 'oops', not a number", True),
    "config unparseable": (write(".hydra/config.yaml", "model: [unclosed\n  name: x: y\n"), ".hydra/config.yaml is not valid YAML", True),
    "config a list": (write(".hydra/config.yaml", "- 1\n- 2\n"), ".hydra/config.yaml is not a mapping", True),
}


@pytest.fixture
def damaged(tmp_path):
    """Two good runs per arm, then one run per kind of damage (cnn_shared, seeds from 10)."""
    runs = [dict(model=m, arm=a, seed=s, acc=0.8 + 0.01 * s, unique=u) for s in (0, 1)
            for m, a, u in (("cnn_shared", "shared", 53_002), ("cnn_unshared", "unshared", 350_602))]
    runs += [dict(model="cnn_shared", arm="shared", seed=10 + i, acc=0.85) for i in range(len(DAMAGE))]
    sweep = write_sweep(tmp_path / "sweep", runs)
    for job, (damage, _, _) in enumerate(DAMAGE.values(), start=4):
        damage(sweep / str(job))
    (sweep / "multirun.yaml").write_text("hydra: [unclosed\n")  # the sweep's own file too
    return sweep


def test_every_damaged_run_is_listed_with_its_reason_and_left_out(damaged, capsys):
    assert report([str(damaged)]) == 0
    shown = capsys.readouterr().out
    lines = shown.splitlines()
    for job, (kind, (_, reason, counts)) in enumerate(DAMAGE.items(), start=4):
        line = next((line for line in lines if line.startswith(f"  {job} (")), None)
        assert line is not None, f"{kind}: run {job} not listed\n{shown}"
        assert reason in line and (": completed: " if counts else ": damaged: ") in line, (kind, line)
    with open(damaged / "report" / "aggregate.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f) if r["model"]}
    kept = sum(counts for _, _, counts in DAMAGE.values())
    assert rows["cnn_shared"]["n"] == str(2 + kept) and rows["cnn_unshared"]["n"] == "2"
    assert float(rows["cnn_shared"]["test/acc mean"]) <= 1.0  # 99.0 was not averaged in
    damaged_count = sum(not counts for _, _, counts in DAMAGE.values())
    assert f"{damaged_count} damaged" in lines[0]
    assert f"{len(DAMAGE)} runs left out of the numbers or with damaged files" in shown
    html = (damaged / "report" / "report.html").read_text()
    assert all(reason.replace("'", "&#x27;") in html for _, reason, _ in DAMAGE.values())


def test_real_psx_report_on_the_damaged_sweep_prints_no_traceback(damaged):
    result = run_psx(["report", str(damaged)], cwd=damaged.parent)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(damaged.glob(".report*")) and (damaged / "report" / "report.html").exists()


def test_randomly_corrupted_files_never_raise_anything_but_a_psx_error(damaged):
    rng = random.Random(0)
    files = sorted(p for p in damaged.rglob("*") if p.is_file() and "report" not in p.parts)
    for path in rng.sample(files, 12):
        data = bytearray(path.read_bytes() or b"x")
        for _ in range(3):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data[: rng.randrange(1, len(data) + 1)]))
    try:
        assert report([str(damaged), "--out", str(damaged.parent / "out")]) == 0
    except PsxError:
        pass  # one line at the command line; anything else would be a traceback


def test_latest_sweep_skips_a_sweep_that_failed_inside_hydra(tmp_path):
    good = write_sweep(tmp_path / "outputs" / "multirun" / "2026-12-01" / "10-00-00-000000", [
        dict(model="cnn_shared", arm="shared", seed=0, acc=0.8)])
    failed = tmp_path / "outputs" / "multirun" / "2026-12-01" / "11-00-00-000000"
    failed.mkdir(parents=True)
    (failed / "multirun.yaml").write_text("hydra: {}\n")  # Hydra stopped before any job
    result = run_psx(["report"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (good / "report" / "report.html").exists() and not (failed / "report").exists()


def test_an_existing_report_is_replaced_whole(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [dict(model="cnn_shared", arm="shared", seed=0, acc=0.8)])
    (sweep / "report").mkdir()
    (sweep / "report" / "stale.png").write_text("from an older report")
    assert report([str(sweep)]) == 0
    assert not (sweep / "report" / "stale.png").exists() and (sweep / "report" / "report.html").exists()
    assert sorted(p.name for p in sweep.iterdir() if p.name.startswith(".")) == []  # no staging left behind


def read_only(sweep, args):
    """`psx report` with `sweep` on a read-only mount (root ignores file modes; a mount it cannot)."""
    command = [psx_executable(), "report", *args]
    if os.geteuid() != 0:
        sweep.chmod(0o555)
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: no way to make a read-only folder")
    script = f'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(sweep), *command],
                            capture_output=True, text=True, timeout=300)
    if "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    return result


def test_a_read_only_sweep_is_one_line_and_out_works(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [dict(model="cnn_shared", arm="shared", seed=0, acc=0.8)])
    result = read_only(sweep, [str(sweep)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"psx: error: cannot write the report to {sweep}/report"), result.stderr
    assert "--out DIR" in lines[0] and not (sweep / "report").exists()
    result = read_only(sweep, [str(sweep), "--out", str(tmp_path / "elsewhere")])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere" / "report.html").exists()


def test_a_sweep_where_no_run_completed_lists_every_run_then_one_error_line(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", [dict(model="cnn_shared", arm="shared", seed=s, acc=0.8) for s in (0, 1)])
    (sweep / "0" / "summary.json").write_text("[]")
    (sweep / "1" / "summary.json").write_bytes(b"\xff\x00")
    result = run_psx(["report", str(sweep)], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip() == "psx: error: no run completed, nothing to compare (2 runs, listed above)"
    assert "  0 (model cnn_shared, train size 100, seed 0): damaged: summary.json is a JSON list" in result.stdout
    assert "  1 (model cnn_shared, train size 100, seed 1): damaged: summary.json is not text" in result.stdout
    assert not (sweep / "report").exists()
