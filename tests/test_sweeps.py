"""Sweeps through Hydra's real launchers and sweepers, with the real `psx` command."""
import json
from pathlib import Path

import yaml


def job_summaries(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]


def test_experiment_grid_runs_every_job_and_records_the_sweep(psx):
    sweep = psx.cwd / "sweep"
    result = psx("train", "-m", "experiment=cnn_sharing_vs_datasize", "trainer.steps=4", "trainer.eval_every=2",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    runs = job_summaries(sweep)
    assert len(runs) == 30 and {r["status"] for r in runs} == {"completed"}
    # The experiment's equal-steps budget: the same steps and evaluations at every size.
    assert {(r["budget"], r["steps"], r["epochs_completed"]) for r in runs} == {("steps", 4, 2)}
    assert {(r["model"], r["train_size"], r["seed"]) for r in runs} == {
        (m, n, s) for m in ["cnn_shared", "cnn_unshared"] for n in [50, 100, 200, 500, None] for s in [0, 1, 2]
    }
    assert {r["experiment"] for r in runs} == {"cnn_sharing_vs_datasize"}
    assert len({r["sweep_id"] for r in runs}) == 1
    # Start-up: the first job counts from the process start (imports, composing), the others,
    # run in the same process by the basic launcher, from their own start.
    # (Three seeds are too few to stack on a CPU: every job trains alone.)
    assert not any(r.get("stacked") for r in runs)
    first, *others = [r["startup_s"] for r in sorted(runs, key=lambda r: r["job_num"]) if "startup_s" in r]
    assert first["imports_and_compose"] > 0.1
    assert all(s["imports_and_compose"] == 0 for s in others)


def test_joblib_launcher_runs_two_jobs_side_by_side_with_split_threads(psx):
    sweep = psx.cwd / "sweep"
    result = psx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=mlp,cnn_shared",
                 "trainer.epochs=1", "device.num_threads=null", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    runs = job_summaries(sweep)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    import os

    cores = len(os.sched_getaffinity(0))
    assert all(r["torch_threads"] == max(1, cores // 2) for r in runs)
    # Their interleaved lines say whose they are: every psx line of a job starts with its number.
    for num in (0, 1):
        assert f"[psx][INFO] - #{num} done: best val/acc" in result.stderr + result.stdout


def test_submitit_local_launcher_runs_two_jobs(psx):
    sweep = psx.cwd / "sweep"
    result = psx("train", "-m", "hydra/launcher=submitit_local", "model=mlp,cnn_shared", "trainer.epochs=1",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in job_summaries(sweep)] == ["completed", "completed"]


def test_optuna_sweep_of_three_trials_reports_a_best_value(psx):
    sweep = psx.cwd / "sweep"
    result = psx("train", "-m", "experiment=optuna_cnn_digits", "hydra.sweeper.n_trials=3", "trainer.epochs=1",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = job_summaries(sweep)
    assert len(runs) == 3
    assert best["best_value"] == max(r["metrics"]["val/acc"] for r in runs)
    assert set(best["best_params"]) == {"trainer.lr", "trainer.weight_decay", "model.channels"}


def test_a_job_failing_in_a_joblib_worker_still_fails_the_command(psx):
    sweep = psx.cwd / "sweep"
    result = psx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=mlp",
                 "dataset.train_size=5,100", "trainer.epochs=1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr
    assert [r["status"] for r in job_summaries(sweep)] == ["failed", "completed"]
