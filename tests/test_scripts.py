"""Benchmarks are not timed tests: only check that each script runs end to end on a tiny size."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_bench_lc_quick(tmp_path):
    out = tmp_path / "lc.json"
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_lc.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    assert rows and rows[0]["lc_over_conv"] > 0 and rows[0]["ms"]["conv2d"] > 0
    # No intermediate of psx's layer is larger than the unfolded input.
    assert rows[0]["largest_alloc_mb"]["psx_lc"] <= rows[0]["unfolded_input_mb"] * 1.01


def test_bench_data_quick(tmp_path):
    from conftest import MNIST_LAYOUT, copy_into

    root = copy_into(tmp_path / "data", MNIST_LAYOUT)
    out = tmp_path / "data.json"
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_data.py"), "--quick", "--data-dir", str(root), "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["psx_img_s"] > 0 and row["torchvision_img_s"] > 0 and report["load_s"] > 0


def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench.py"), "--quick", "--device", "cpu", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    whats = " ".join(row["what"] for row in rows)
    for part in ["trainer cnn_shared/digits", "LC vs conv", "rnn_unshared vs rnn_shared", "psx --help", "first step",
                 "cnn_unshared/digits on cpu", "bf16 autocast"]:
        assert part in whats
    assert all(row["psx"] > 0 for row in rows)
