"""The joblib launcher's workers, started early by `psx train -m`: real joblib, real Hydra config."""
import os

import pytest
from joblib import Parallel, delayed

from psx.joblib_workers import WorkerStart, parallel_arguments, start_for_sweep, sweep_size

GRID = {"model": "cnn_unshared,cnn_shared", "dataset.train_size": "null,500,200,100,50", "seed": "0,1,2"}


@pytest.mark.parametrize("overrides,size", [
    (["experiment=cnn_sharing_vs_datasize"], 30),
    (["seed=0"], 10),                      # a command-line value replaces the listed ones
    (["seed=0,1", "trainer.lr=0.1,0.01"], 40),
])
def test_sweep_size_is_the_product_of_the_value_counts(overrides, size):
    assert sweep_size(GRID, overrides) == size


def hydra_node(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from psx.hydra_app import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra, resolve=False)


def test_only_a_joblib_sweep_with_several_jobs_gets_workers_started():
    assert start_for_sweep(hydra_node(), ["model=mlp,cnn_shared"]) is None  # the basic launcher
    one_job = start_for_sweep(hydra_node("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ["model=mlp"])
    one_job.wait()
    assert one_job.pids == []  # joblib runs a single job in the calling process


@pytest.mark.slow  # real loky workers, each importing torch
@pytest.mark.parametrize("n_jobs", [2, 3])  # 3: more workers than the sweep's 2 jobs
def test_the_launchers_parallel_call_reuses_the_started_workers(n_jobs):
    hydra = hydra_node("hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}")
    workers = start_for_sweep(hydra, ["model=mlp,cnn_shared"])
    try:
        workers.wait()
        assert workers.error is None
        assert len(workers.pids) == 2 and os.getpid() not in workers.pids  # one import task per job
        # What Hydra's joblib launcher then calls, with the arguments it builds from the same config:
        job_pids = Parallel(**parallel_arguments(hydra["launcher"]))(delayed(os.getpid)() for _ in range(6))
        # The same pool of n_jobs processes (a new pool would add new pids to the started ones):
        assert len(set(job_pids) | set(workers.pids)) <= n_jobs
    finally:
        workers.cancel()


def test_a_sweep_failing_its_checks_stops_the_started_workers_and_says_why(psx):
    result = psx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "dataset=ptb", "model=cnn_shared,mlp")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "psx: error: model cnn_shared cannot train on ptb: ptb is a word-level token stream and cnn_shared "
        "takes images; choose a language model"]


CHECK_IN_A_FRESH_PROCESS = """
import json, sys
from psx.cli import _composed
from psx.joblib_workers import start_for_sweep

sweep = [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"model={m}", "dataset=" + sys.argv[1]]
         for m in ("mlp", "cnn_shared")]
started = []
configs = list(_composed("config", sweep, on_hydra=lambda h: started.append(start_for_sweep(h, ["model=mlp,cnn_shared"]))))
reason = started[0].check(configs)
started[0].cancel()
print(json.dumps({"reason": reason, "torch_here": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("dataset,reason", [
    ("digits", None),
    ("ptb", "model mlp cannot train on ptb: ptb is a word-level token stream and mlp takes images; "
            "choose a language model"),
])
def test_a_worker_makes_the_checks_that_need_torch_and_the_main_process_never_imports_it(dataset, reason):
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", CHECK_IN_A_FRESH_PROCESS, dataset], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"reason": reason, "torch_here": False}


def test_with_a_single_job_the_checks_run_in_the_calling_process():
    from psx.cli import _composed

    one_job = start_for_sweep(hydra_node("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ["model=mlp"])
    (cfg,) = _composed("config", [["model=lm_tied", "dataset=digits"]])
    assert one_job.check([cfg]).startswith("model lm_tied cannot train on digits")
    assert one_job.pids == []


FREEZE_IN_A_FRESH_PROCESS = """
import gc, json
from psx.joblib_workers import finish_warm_up, import_job_modules

import_job_modules()  # what a started worker runs: torch first, for psx's checks
assert gc.get_freeze_count() == 0
finish_warm_up()  # then torch._dynamo, and the freeze
frozen = gc.get_freeze_count()
import psx.train
psx.train.freeze_long_lived_objects()  # once per process: a second call freezes nothing more

class Cycle:
    pass

a, b = Cycle(), Cycle()
a.other, b.other = b, a  # garbage only a collection can free: it must stay collectable
del a, b
print(json.dumps({"frozen": frozen, "again": gc.get_freeze_count(), "collected": gc.collect()}))
"""


def test_a_workers_imports_are_frozen_out_of_the_garbage_collectors_reach_and_jobs_objects_are_not():
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", FREEZE_IN_A_FRESH_PROCESS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["frozen"] > 100_000  # torch, torch._dynamo and psx's module state
    assert out["again"] == out["frozen"]
    assert out["collected"] >= 2
