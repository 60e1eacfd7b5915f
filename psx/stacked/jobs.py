"""A sweep's seeds of one configuration trained as one stacked job, each recorded as a single run.

The launcher (hydra_plugins/psx_launchers) asks plan_stack whether a group of fresh jobs
that differ only in `seed` should train stacked; if so it opens each job in its own Hydra job
context with open_stacked_job (folder, .hydra/, summary.json saying running, trackers), then
run_stacked trains them together and closes each job as psx.train closes a single run: the same
metrics.csv rows, checkpoints (per seed, in the single run's format, so an interrupted job resumes
alone), summary.json, plus "stacked": {"seeds": [...], "position": k}.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psx import runlock
from psx.atomic import disk_error
from psx.checkpoint import CHECKPOINT_NAME, save_checkpoint
from psx.data import build_data
from psx.data.tensors import Data
from psx.device import place_data, resolve_device
from psx.errors import PsxError, StopRequested
from psx.federated.schema import is_federated
from psx.models import sharing_summary
from psx.resume import stop_on_signals
from psx.stacked import StackedTrainer, build_seed_model, stack_reason, stacking_pays
from psx.tasks import task_for
from psx.run_summary import base_summary, data_sizes, params_text, read_summary
from psx.train import JobRecord, close_run, freeze_long_lived_objects, open_run, recorded_outcome

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
    lock: int  # psx.runlock's handle: the folder is this process's until the job is closed


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
    reason = config_reason(cfg) or stack_reason(cfg.trainer, models, task, data.val.batch(slice(0, 2))[0].to(device))
    if reason is None and cfg.trainer.stack_seeds == "auto" and not stacking_pays(models, device):
        reason = (f"stacking {len(models)} seeds of {cfg.model.name} is not faster on {device.type} "
                  "(trainer.stack_seeds=true forces it)")
    if reason is not None:
        log.info("seeds %s train one by one: %s", seeds, reason)
        return None
    log.info("seeds %s of %s train as one stacked model", seeds, cfg.model.name)
    return StackPlan(data, task, models)


def config_reason(cfg: DictConfig) -> str | None:
    """Why runs of this config train one by one whatever the models: clients on Flower, or weights
    transferred or frozen (recorded per run by psx.train, which the stack does not repeat)."""
    if is_federated(cfg):
        return "a federated run trains its clients on Flower"
    if cfg.model.get("init_from") is not None or cfg.model.get("freeze"):
        return "runs with model.init_from or model.freeze train one by one"
    return None


def open_stacked_job(cfg: DictConfig) -> StackedJob | None:
    """Hydra's task function for a job of a stack (run inside its job context): the job's folder
    locked and its summary opened as psx.train.run opens a fresh run; None if that failed (then
    printed as one line, and recorded in the folder if the folder is this process's)."""
    freeze_long_lived_objects()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = runlock.acquire(run_dir, "train")
    except (PsxError, OSError) as e:  # another writer, or a disk that refuses: nothing written
        print(f"psx: error: {e if isinstance(e, PsxError) else disk_error(run_dir, e)}", file=sys.stderr, flush=True)
        return None
    if read_summary(run_dir) is not None:  # another process started it since the launcher looked
        runlock.release(lock, run_dir)
        print(f"psx: error: {run_dir} was started by another process meanwhile; re-run the sweep to finish it",
              file=sys.stderr, flush=True)
        return None
    job = JobRecord(run_dir, base_summary(cfg, run_dir))
    try:
        open_run(cfg, job, None)
    except Exception as error:  # noqa: BLE001 - recorded as a single run records it
        _record(job, error)
        runlock.release(lock, run_dir)
        return None
    return StackedJob(cfg, job, lock)


def run_stacked(jobs: list[StackedJob], plan: StackPlan, models: list[torch.nn.Module]) -> list[float | None]:
    """Train the jobs' seeds together (models[k]: job k's), then close each job as a single run;
    per job its best validation value (None if it failed). A stop request marks every job
    interrupted (each keeps its own checkpoint) and propagates."""
    seeds = [j.cfg.seed for j in jobs]
    configs = [OmegaConf.to_container(j.cfg, resolve=True) for j in jobs]
    for k, (stacked_job, model) in enumerate(zip(jobs, models)):
        stacked_job.job.summary.update(**data_sizes(plan.data), stacked={"seeds": seeds, "position": k},
                                       **sharing_summary(model, stacked_job.cfg.model))
    first = jobs[0]
    log.info("%s on %s (%s training examples), %s", first.cfg.model.name, first.cfg.dataset.name,
             f"{len(plan.data.train):,}", params_text(first.job.summary))

    def checkpoint(k: int, state: dict) -> None:
        save_checkpoint(jobs[k].job.run_dir / CHECKPOINT_NAME, {"config": configs[k], **state})

    try:
        return _train_and_close(jobs, plan, models, checkpoint)
    finally:
        for stacked_job in jobs:
            runlock.release(stacked_job.lock, stacked_job.job.run_dir)


def _train_and_close(jobs: list[StackedJob], plan: StackPlan, models: list[torch.nn.Module], checkpoint) -> list[float | None]:
    seeds = [j.cfg.seed for j in jobs]
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
