"""A sweep's seeds of one configuration trained as one stacked job, each recorded as a single run.

The launcher (hydra_plugins/psx_stacking_launcher) asks plan_stack whether a group of fresh jobs
that differ only in `seed` should train stacked; if so it opens each job in its own Hydra job
context with open_stacked_job (folder, .hydra/, summary.json saying running, trackers), then
run_stacked trains them together and closes each job as psx.train closes a single run: the same
metrics.csv rows, checkpoints (per seed, in the single run's format, so an interrupted job resumes
alone), summary.json, plus "stacked": {"seeds": [...], "position": k}.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psx.checkpoint import CHECKPOINT_NAME, save_checkpoint
from psx.data import build_data
from psx.data.spec import Data
from psx.device import place_data, resolve_device
from psx.errors import PsxError, StopRequested
from psx.models import sharing_summary
from psx.resume import stop_on_signals
from psx.stacked import StackedTrainer, build_seed_model, stack_reason, stacking_pays
from psx.tasks import task_for
from psx.train import JobRecord, base_summary, close_run, freeze_long_lived_objects, open_run, read_summary, recorded_outcome

log = logging.getLogger("psx")


@dataclass
class StackPlan:
    """What the seeds of a group share: the data (built once), the task, each seed's model."""

    data: Data
    task: object
    models: list[torch.nn.Module]


@dataclass
class StackedJob:
    cfg: DictConfig
    job: JobRecord


def plan_stack(cfgs: list[DictConfig]) -> StackPlan | None:
    """The stack for these job configs (same but for seed), or None, with the reason logged, where
    they are better trained one by one: stack_reason says they cannot, or (trainer.stack_seeds=auto)
    stacking_pays says it is not faster on this device."""
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    data = place_data(build_data(cfg.dataset, data_dir=cfg.paths.data_dir), device, cfg.device.data)
    task = task_for(data.spec, cfg.model)
    models = [build_seed_model(c.model, data.spec, c.seed, device) for c in cfgs]
    seeds = ", ".join(str(c.seed) for c in cfgs)
    reason = stack_reason(cfg.trainer, models, task, data.val.batch(slice(0, 2))[0].to(device))
    if reason is None and cfg.trainer.stack_seeds == "auto" and not stacking_pays(models, device):
        reason = f"stacking {cfg.model.name} is not faster on {device.type} (trainer.stack_seeds=true forces it)"
    if reason is not None:
        log.info("seeds %s train one by one: %s", seeds, reason)
        return None
    log.info("seeds %s of %s train as one stacked model", seeds, cfg.model.name)
    return StackPlan(data, task, models)


def open_stacked_job(cfg: DictConfig) -> StackedJob | None:
    """Hydra's task function for a job of a stack (run inside its job context): the job's folder
    and summary opened as psx.train.run opens a fresh run; None if that failed (then recorded)."""
    freeze_long_lived_objects()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    job = JobRecord(run_dir, base_summary(cfg, run_dir))
    try:
        open_run(cfg, job, read_summary(run_dir))
    except Exception as error:  # noqa: BLE001 - recorded as a single run records it
        _record(job, error)
        return None
    return StackedJob(cfg, job)


def run_stacked(jobs: list[StackedJob], plan: StackPlan, models: list[torch.nn.Module]) -> list[float | None]:
    """Train the jobs' seeds together (models[k]: job k's), then close each job as a single run;
    per job its best validation value (None if it failed). A stop request marks every job
    interrupted (each keeps its own checkpoint) and propagates."""
    seeds = [j.cfg.seed for j in jobs]
    configs = [OmegaConf.to_container(j.cfg, resolve=True) for j in jobs]
    for k, (stacked_job, model) in enumerate(zip(jobs, models)):
        stacked_job.job.summary.update(train_examples=len(plan.data.train), stacked={"seeds": seeds, "position": k},
                                       **sharing_summary(model, stacked_job.cfg.model))

    def checkpoint(k: int, state: dict) -> None:
        save_checkpoint(jobs[k].job.run_dir / CHECKPOINT_NAME, {"config": configs[k], **state})

    trainer = StackedTrainer(jobs[0].cfg.trainer, seeds, on_epoch=lambda k, row: jobs[k].job.loggers.log_epoch(row),
                             on_checkpoint=checkpoint)
    try:
        with stop_on_signals(trainer):
            results = trainer.fit(models, plan.data, plan.task)
    except BaseException as error:
        for stacked_job in jobs:
            _record(stacked_job.job, error)
        raise
    values: list[float | None] = []
    for stacked_job, model, result in zip(jobs, models, results):
        value = None
        with recorded_outcome(stacked_job.job):
            if isinstance(result, PsxError):
                raise result
            value = close_run(stacked_job.cfg, stacked_job.job, model, result, plan.task)
        values.append(value)
    return values


def _record(job: JobRecord, error: BaseException) -> None:
    """The job's status from `error`, as psx.train.recorded_outcome decides it for a single run."""
    try:
        with recorded_outcome(job):
            raise error
    except (StopRequested, KeyboardInterrupt):
        pass
