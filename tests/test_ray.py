"""Sweeps on a local Ray cluster through hydra-ray-launcher (`hydra/launcher=ray`, psx's `ray` extra),
with the real `psx` command: the jobs run in Ray's workers and end with the basic launcher's metrics."""
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import run_psx

# Ray 2.x writes an authentication token under the home folder unless told not to; a local test
# cluster needs none. No dashboard: it only slows the start.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def ray_launcher():
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        message = "hydra-ray-launcher is not installed (pip install -e '.[ray]')"
        if os.environ.get("PSX_TEST_RAY") == "1":  # .ci/run's Ray environment must have it
            pytest.fail(message + "; PSX_TEST_RAY=1 says this environment is for the Ray test")
        pytest.skip(message)


def metrics(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["metrics"] for p in sweep.glob("*/summary.json")}


@pytest.mark.slow
def test_two_job_sweep_on_a_local_ray_cluster_has_the_basic_launchers_metrics(ray_launcher, tmp_path):
    grid = ["model=mlp,cnn_shared", "trainer.epochs=1", "device.num_threads=1"]
    basic = run_psx(["train", "-m", *grid, f"hydra.sweep.dir={tmp_path / 'basic'}"], cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr
    started = time.perf_counter()
    on_ray = run_psx(["train", "-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.include_dashboard=false",
                      *grid, f"hydra.sweep.dir={tmp_path / 'ray'}"], cwd=tmp_path, extra_env=RAY_ENV)
    print(f"\n2-job sweep on a local Ray cluster: {time.perf_counter() - started:.1f} s")
    assert on_ray.returncode == 0, on_ray.stderr
    assert "Started a local Ray instance" in on_ray.stdout + on_ray.stderr
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "ray").glob("*/summary.json")]
    assert len(summaries) == 2 and {s["status"] for s in summaries} == {"completed"}
    assert metrics(tmp_path / "ray") == metrics(tmp_path / "basic")
