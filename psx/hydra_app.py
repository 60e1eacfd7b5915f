"""The Hydra application behind `psx train`, and what the launching process learns from its jobs."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from psx.conf_dir import CONFIG_NAME, config_dir
from psx.data.registry import register_schemas as register_dataset_schemas
from psx.models.family import register_schemas as register_model_schemas


def find_source_checkout_plugins() -> None:
    """psx's own Hydra plugins (hydra_plugins/psx_launchers: the SLURM launcher) beside a source
    checkout: an editable install hides that namespace package from Hydra's plugin scan, which
    walks the folders on sys.path, so the checkout's root joins sys.path, and PYTHONPATH for the
    processes a launcher starts (a SLURM job unpickles the launcher). A wheel installs the plugins
    into site-packages, where the scan finds them anyway."""
    root = Path(__file__).resolve().parent.parent
    if (root / "hydra_plugins" / "psx_launchers").is_dir() and str(root) not in sys.path:
        sys.path.append(str(root))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(root)) if p)


find_source_checkout_plugins()
# The model and data-set YAML files extend typed configs (Hydra's ConfigStore, schema/model/ and
# schema/dataset/): registered here, because every composition of conf/ (psx train, psx inspect,
# tests, and every launcher's worker, which imports this module to unpickle the task) imports this first.
register_model_schemas()
register_dataset_schemas()


@dataclass
class Launch:
    """Shared between the `psx train` process and the jobs it runs itself (the basic launcher);
    a copy travels with the task to other processes (joblib, submitit), where it stays unused."""

    process_started: float | None  # perf_counter() at the process start, for the first job's start-up figures
    pid: int = field(default_factory=os.getpid)
    failed_runs: list[str] = field(default_factory=list)  # run folders of jobs that failed in this process

    def in_launching_process(self) -> bool:
        return os.getpid() == self.pid

    def first_job_start(self) -> float | None:
        """The process start for the first job run in this process; None for the others."""
        if not self.in_launching_process():
            return None
        started, self.process_started = self.process_started, None
        return started


def train_app(launch: Launch) -> Callable[[], None]:
    """The `psx train` Hydra application, reporting its jobs' outcomes to `launch`."""

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=CONFIG_NAME)
    def hydra_train(cfg: DictConfig) -> float | None:
        from psx.errors import StopRequested, SweepStopped
        from psx.orphans import job_running, watch_parent
        from psx.train import run  # torch is imported only once a job actually runs

        if not launch.in_launching_process():  # a launcher's worker: it must not outlive this sweep
            watch_parent(launch.pid)
        try:
            with job_running():
                outcome = run(cfg, process_started=launch.first_job_start())
        except StopRequested as e:
            if launch.in_launching_process():  # the whole sweep stops with the signal
                raise SweepStopped(*e.args) from None
            raise
        if outcome.status == "failed" and launch.in_launching_process():
            launch.failed_runs.append(outcome.run_dir)
        return outcome.value

    return hydra_train


# Sweep folders started in this process: the CLI reads their summaries afterwards, because
# launchers such as joblib or submitit run the jobs (and record their failures) elsewhere.
SWEEP_DIRS: list[str] = []


class RecordSweepDir(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SWEEP_DIRS.append(str(config.hydra.sweep.dir))


def failed_in_sweeps(since: float) -> set[str]:
    """Run folders of this sweep whose summary.json, written since `since`, says failed."""
    failed = set()
    for summary in [p for d in SWEEP_DIRS for p in Path(d).glob("*/summary.json")]:
        try:
            if summary.stat().st_mtime >= since and json.loads(summary.read_text()).get("status") == "failed":
                failed.add(str(summary.parent.resolve()))
        except (OSError, ValueError):
            continue
    return failed


def hydra_arguments(args: list[str]):
    """What Hydra's own command line (`psx train` passes it on unchanged) says about the run: the
    flags that take a value are declared so that their values are not read as overrides."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--help/-h", "--hydra-help", "--version", "--resolve", "--run/-r", "--multirun/-m",
                 "--shell-completion/-sc"):
        parser.add_argument(*flag.split("/"), action="store_true")
    for flag in ("--cfg/-c", "--package/-p", "--config-path/-cp", "--config-name/-cn", "--config-dir/-cd",
                 "--experimental-rerun"):
        parser.add_argument(*flag.split("/"))
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("overrides", nargs="*")
    parsed, _ = parser.parse_known_args(args)
    return parsed
