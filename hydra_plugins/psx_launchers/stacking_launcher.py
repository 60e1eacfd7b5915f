"""Hydra's basic launcher, with the jobs of a sweep that differ only in `seed` trained as one
stacked model where that is possible and pays (trainer.stack_seeds=auto; false: never; true:
wherever possible). Everything else runs as the basic launcher runs it: one job after another in
this process. Written against Hydra's public plugin API (hydra.plugins.launcher.Launcher,
hydra.core.utils), as hydra._internal's BasicLauncher is.

Only fresh jobs (no run in their folder yet) are stacked: a job whose folder says completed is
skipped by psx.train.run, an interrupted one resumes from its own checkpoint, alone, and a failed one
starts over alone, so a re-run of a stacked sweep finishes it seed by seed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


class StackingLauncher(Launcher):
    def __init__(self) -> None:
        super().__init__()
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if not isinstance(hydra_context.config_loader, ComposedOnce):
            # The sweeper that made this launcher holds the same context: its checks now go through it too.
            hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from psx.stacked.sweep import seed_groups

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        configs = []
        for index, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
            configs.append(self._job_config(overrides, index))
        returns: List[Optional[JobReturn]] = [None] * len(configs)
        for group in seed_groups(job_overrides):
            if len(group) > 1:
                returns_of_stack = self._run_stacked([configs[i] for i in group])
                for i, ret in zip(group, returns_of_stack):
                    returns[i] = ret
            for i in group:
                if returns[i] is None:
                    returns[i] = self._run(configs[i], self.task_function)
        return returns

    def _job_config(self, overrides: Sequence[str], index: int) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.take_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = index
            sweep_config.hydra.job.num = index
        return sweep_config

    def _run(self, config: DictConfig, task_function: TaskFunction) -> JobReturn:
        ret = run_job(hydra_context=self.hydra_context, task_function=task_function, config=config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if ret.status == JobStatus.FAILED:
            # psx's jobs record their own failures; what escapes is a stop request (a signal, Ctrl-C),
            # which ends the sweep here (return_value re-raises it), leaving the later jobs unstarted.
            ret.return_value  # noqa: B018
        return ret

    def _run_stacked(self, configs: List[DictConfig]) -> List[Optional[JobReturn]]:
        """The returns of the group's jobs that trained stacked (None for the others)."""
        from psx.stacked.jobs import open_stacked_job, plan_stack, run_stacked
        from psx.stacked.sweep import same_but_seed

        fresh = [k for k, config in enumerate(configs) if _is_fresh(config)]
        if configs[0].trainer.stack_seeds is False or len(fresh) < 2 or not same_but_seed(configs):
            return [None] * len(configs)
        try:
            plan = plan_stack([_without_hydra(configs[k]) for k in fresh])
        except Exception as error:  # noqa: BLE001 - e.g. data that cannot load: each job records it alone
            log.info(f"seeds train one by one: {error}")
            plan = None
        if plan is None:
            return [None] * len(configs)
        returns: List[Optional[JobReturn]] = [None] * len(configs)
        opened, models = [], []
        for k, model in zip(fresh, plan.models):
            returns[k] = self._run(configs[k], open_stacked_job)
            if returns[k].status == JobStatus.COMPLETED and returns[k].return_value is not None:
                opened.append(k)
                models.append(model)
            else:  # it could not start; its folder says why
                returns[k].return_value = None
        if opened:
            values = run_stacked([returns[k].return_value for k in opened], plan, models)
            for k, value in zip(opened, values):
                returns[k].return_value = value
        return returns


class ComposedOnce:
    """The sweep's config loader, composing each job's config once instead of twice.

    Hydra's sweepers compose every job's config to check the batch before launching it
    (Sweeper.validate_batch_is_legal), for launchers that compose again in another process; this
    launcher composes in the same process, from the same master config, so it takes the config the
    check made (a full composition per job, the largest per-job cost of a short run besides training).
    A config is kept only from a check until the launcher takes it; everything else is the loader's."""

    def __init__(self, loader) -> None:
        self._loader = loader
        self._checked: dict = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        config = self._loader.load_sweep_config(master_config, sweep_overrides)
        self._checked[(id(master_config), tuple(sweep_overrides))] = config
        return config

    def take_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """The config a check composed for these overrides (once), or a new composition."""
        config = self._checked.pop((id(master_config), tuple(sweep_overrides)), None)
        return config if config is not None else self._loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


def _without_hydra(config: DictConfig) -> DictConfig:
    config = config.copy()
    with open_dict(config):
        del config["hydra"]
    return config


def _is_fresh(config: DictConfig) -> bool:
    """A job whose folder holds no run yet. Any other (completed: skipped; interrupted: resumed;
    failed: started over; another run's: refused) goes through psx.train.run alone."""
    run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    return not (run_dir / "summary.json").exists()
