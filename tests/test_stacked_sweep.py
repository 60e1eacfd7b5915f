"""Seeds of one config in a real `psx train -m` sweep train as one stacked model (psx's default
launcher), each recorded in its own job folder as if trained alone; a re-run skips or resumes them."""
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import psx_executable
from psx.stacked import CPU_MIN_SEEDS

SEEDS = list(range(CPU_MIN_SEEDS))  # as few as psx stacks by default on a CPU
SWEEP = ["model=mlp,cnn_unshared", f"seed={','.join(map(str, SEEDS))}", "dataset.train_size=200", "trainer.epochs=3",
         "device.num_threads=1", "trainer.progress=none"]


def jobs(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"), key=lambda p: int(p.parent.name))]


def rows(run_dir: str) -> list[list[str]]:
    """metrics.csv without the timing columns."""
    lines = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    return [line.split(",")[:6] for line in lines]


def assert_same_runs(stacked: list[dict], alone: list[dict]) -> None:
    for a, b in zip(stacked, alone):
        assert (a["model"], a["seed"], a["best_epoch"], a["steps"]) == (b["model"], b["seed"], b["best_epoch"], b["steps"])
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-5, abs=1e-6)
        assert [r[:2] for r in rows(a["run_dir"])] == [r[:2] for r in rows(b["run_dir"])]
        assert [float(r[4]) for r in rows(a["run_dir"])[1:]] == pytest.approx([float(r[4]) for r in rows(b["run_dir"])[1:]])


def test_a_seed_sweep_trains_stacked_with_each_jobs_metrics_as_alone_and_a_rerun_skips_it(psx):
    stacked_dir, alone_dir = psx.cwd / "stacked", psx.cwd / "alone"
    result = psx("train", "-m", *SWEEP, f"hydra.sweep.dir={stacked_dir}")
    assert result.returncode == 0, result.stderr
    assert psx("train", "-m", *SWEEP, "trainer.stack_seeds=false", f"hydra.sweep.dir={alone_dir}").returncode == 0
    stacked, alone = jobs(stacked_dir), jobs(alone_dir)
    n = len(SEEDS)
    assert len(stacked) == 2 * n and {r["status"] for r in stacked + alone} == {"completed"}
    # mlp's seeds stacked; cnn_unshared's (per-position layers: no faster stacked on a CPU) one by one.
    assert [r.get("stacked") for r in stacked] == [{"seeds": SEEDS, "position": k} for k in range(n)] + [None] * n
    assert f"seeds {', '.join(map(str, SEEDS))} train one by one: stacking {n} seeds of cnn_unshared is not faster on cpu" in result.stdout
    assert all(r.get("stacked") is None for r in alone)
    assert_same_runs(stacked, alone)
    for r in stacked[:n]:  # each job folder as a single run leaves it
        folder = Path(r["run_dir"])
        assert (folder / ".hydra" / "config.yaml").is_file() and (folder / "checkpoint.pt").is_file()
        assert r["params/unique"] == alone[0]["params/unique"] and r["train_examples"] == 200
    again = psx("train", "-m", *SWEEP, f"hydra.sweep.dir={stacked_dir}")
    assert again.returncode == 0 and f"all {2 * n} jobs in {stacked_dir} have completed; nothing to run" in again.stderr
    assert jobs(stacked_dir) == stacked


def test_a_stacked_sweep_stopped_by_sigterm_resumes_seed_by_seed_to_the_unbroken_metrics(psx):
    sweep = ["model=mlp", "seed=0,1", "trainer.epochs=20", "device.num_threads=1", "trainer.progress=none",
             "trainer.stack_seeds=true"]  # two seeds: stacked only when asked on a CPU
    assert psx("train", "-m", *sweep, f"hydra.sweep.dir={psx.cwd / 'unbroken'}").returncode == 0
    broken = psx.cwd / "broken"
    proc = subprocess.Popen([psx_executable(), "train", "-m", *sweep, f"hydra.sweep.dir={broken}"], cwd=psx.cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (broken / "1" / "metrics.csv").exists() or len(rows(str(broken / "1"))) < 3:  # 2 epochs logged
        assert time.time() < deadline and proc.poll() is None, "the sweep did not get to its second epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert [r["status"] for r in jobs(broken)] == ["interrupted", "interrupted"]
    resumed = psx("train", "-m", *sweep, f"hydra.sweep.dir={broken}")
    assert resumed.returncode == 0, resumed.stderr
    finished = jobs(broken)
    assert all(r["status"] == "completed" and r["resumed_from"] for r in finished)
    assert_same_runs(finished, jobs(psx.cwd / "unbroken"))


def test_the_launcher_takes_the_config_the_sweepers_check_composed_once():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    import psx.hydra_app  # noqa: F401 - registers the schemas the YAML files extend
    from hydra_plugins.psx_launchers.stacking_launcher import ComposedOnce
    from psx.conf_dir import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        real = GlobalHydra.instance().hydra.config_loader
        master = real.load_configuration("config", ["trainer.epochs=1"], RunMode.MULTIRUN)
        loader = ComposedOnce(real)
        checked = loader.load_sweep_config(master, ["trainer.epochs=1", "seed=3"])  # the sweeper's check
        assert checked.seed == 3
        assert loader.take_sweep_config(master, ["trainer.epochs=1", "seed=3"]) is checked  # the launcher's
        again = loader.take_sweep_config(master, ["trainer.epochs=1", "seed=3"])  # taken once only: composed anew
        assert again is not checked and OmegaConf.to_container(again) == OmegaConf.to_container(checked)
        assert loader.get_search_path() is real.get_search_path()  # the rest is the loader's own
