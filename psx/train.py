"""One run: config -> data -> model -> trainer -> run folder (metrics.csv, summary.json, checkpoint.pt)."""
from __future__ import annotations

import gc
import logging
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psx.checkpoint import CHECKPOINT_NAME, DiskRefused, save_checkpoint
from psx.config import validate
from psx.data import build_data
from psx.device import configure_backends, place_data, resolve_device, reuse_host_memory, thread_reason
from psx import runlock
from psx.atomic import DISK_ERRNOS, disk_error, write_json_atomic
from psx.errors import PsxError, StopRequested
from psx.federated.schema import is_federated
from psx.loggers import WandbLogger, build_loggers
from psx.models import build_model, sharing_summary
from psx.models.transfer import freeze, load_matching_weights
from psx.progress import number_log_lines
from psx.resume import resume_state, stop_on_signals
from psx.resume_args import what_is_trained
from psx.tasks import task_for
from psx.trainer import FitResult, Trainer
from psx.run_summary import (base_summary, completed_fields, data_sizes, now_iso, parallel_context, params_text,
                              read_summary, startup_breakdown, tracker_run_info)

log = logging.getLogger("psx")


_LONG_LIVED_OBJECTS_FROZEN = False


def freeze_long_lived_objects() -> None:
    """Once per process, before its first job: move the objects that torch, torch._dynamo (which
    every optimizer imports) and psx create at import time, about 330,000, out of the garbage
    collector's reach (gc.freeze). A full collection scans them all otherwise, 0.16 s on the
    benchmark machine; Python runs one now and then during training, and joblib's workers
    (loky, without psutil) after every job."""
    global _LONG_LIVED_OBJECTS_FROZEN
    if not _LONG_LIVED_OBJECTS_FROZEN:
        import torch._dynamo  # noqa: F401 - the first optimizer would import it anyway

        gc.freeze()
        _LONG_LIVED_OBJECTS_FROZEN = True


@dataclass
class JobOutcome:
    """What a job reports to whoever launched it (psx.hydra_app): its status, folder and the
    value a sweeper optimizes (the best validation metric; None unless completed)."""

    status: str
    run_dir: str
    value: float | None = None


@dataclass
class JobRecord:
    """The run's summary.json as it is being filled in, and what must be closed at the end."""

    run_dir: Path
    summary: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    loggers: Any = None


def run(cfg: DictConfig, process_started: float | None = None) -> JobOutcome:
    """Train one configuration. Never raises for a failed run (a sweep goes on); the failure is
    written to summary.json and printed as one line. A stop request (SIGTERM/SIGINT) leaves a
    checkpoint, status "interrupted", and raises StopRequested.

    Re-running a sweep into the same folder finishes it: a job whose folder says completed is
    skipped, an interrupted one resumes from its checkpoint, a failed one starts over. The folder
    is locked for the whole job (psx.runlock): a second writer fails with one line and touches
    nothing. process_started: perf_counter() at the start of the process, for the start-up figures."""
    freeze_long_lived_objects()
    context = parallel_context()
    number_log_lines(context["job_num"] if context.get("parallel_jobs", 1) > 1 else None)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = runlock.acquire(run_dir, "train")
    except (PsxError, OSError) as e:  # FolderInUse, or a disk that refuses: this job writes nothing
        print(f"psx: error: {e if isinstance(e, PsxError) else disk_error(run_dir, e)}", file=sys.stderr, flush=True)
        return JobOutcome("failed", str(run_dir.resolve()))
    try:
        return run_locked(cfg, run_dir, process_started)
    finally:
        runlock.release(lock, run_dir)


def run_locked(cfg: DictConfig, run_dir: Path, process_started: float | None) -> JobOutcome:
    """run() once the folder is this process's: skip, refuse, resume or start the job."""
    previous = read_summary(run_dir)
    job = JobRecord(run_dir, base_summary(cfg, run_dir))
    if previous is None and any((run_dir / name).exists() for name in (CHECKPOINT_NAME, "metrics.csv")):
        # Without a readable summary nothing says whose checkpoint and metrics these are: keep them.
        print(f"psx: error: {run_dir} holds a run whose summary.json is missing or damaged; move the folder "
              "away or run in a new one", file=sys.stderr, flush=True)
        return JobOutcome("failed", str(run_dir.resolve()))
    if previous is not None and what_is_trained(previous.get("overrides") or []) != what_is_trained(job.summary["overrides"]):
        _fail(job.summary, f"{run_dir} already holds a different run ({' '.join(previous.get('overrides') or [])}); "
              "sweep into a new hydra.sweep.dir")
        return JobOutcome("failed", str(run_dir.resolve()))
    if previous is not None and previous.get("status") == "completed":
        log.info("skipping %s: already completed", run_dir)
        return JobOutcome("completed", str(run_dir.resolve()), (previous.get("metrics") or {}).get(previous.get("selection_metric")))
    try:  # a damaged checkpoint or other settings: one line, and the folder stays as it was
        resume = resume_state(cfg, job.summary, previous, run_dir / CHECKPOINT_NAME)
    except PsxError as e:
        print(f"psx: error: {e}", file=sys.stderr, flush=True)
        return JobOutcome("failed", str(run_dir.resolve()))
    value = None
    with recorded_outcome(job):
        value = train_job(cfg, job, previous, resume, process_started)
    return JobOutcome(job.summary["status"], str(run_dir.resolve()), value)


def open_run(cfg: DictConfig, job: JobRecord, previous: dict[str, Any] | None) -> torch.device:
    """A run's start in its folder: summary.json saying running, the config checked, the trackers
    opened, the device ready."""
    summary = job.summary
    write_json_atomic(job.run_dir / "summary.json", summary)
    validate(cfg)
    job.loggers = build_loggers(cfg.logger, tracker_run_info(cfg, summary, previous), job.run_dir)
    if job.loggers.get(WandbLogger) is not None:
        summary["wandb_id"] = getattr(job.loggers.get(WandbLogger), "id", None)
    return prepare_device(cfg, summary)


def train_job(cfg: DictConfig, job: JobRecord, previous: dict[str, Any] | None, resume: dict[str, Any] | None,
              process_started: float | None) -> float:
    """config -> data -> model -> fit -> summary, for one run folder."""
    summary, checkpoint_path = job.summary, job.run_dir / CHECKPOINT_NAME
    device = open_run(cfg, job, previous)
    marks = {"job": time.perf_counter()}
    data = place_data(build_data(cfg.dataset, data_dir=cfg.paths.data_dir), device, cfg.device.data)
    marks["data"] = time.perf_counter()
    summary.update(data_sizes(data))
    model = build_run_model(cfg, data, device, summary)
    marks["model"] = time.perf_counter()
    task = task_for(data.spec, cfg.model)
    log.info("%s on %s (%s training %s), %s, device %s", cfg.model.name, cfg.dataset.name, f"{len(data.train):,}",
             task.unit, params_text(summary), device)
    config = OmegaConf.to_container(cfg, resolve=True)
    trainer = make_trainer(cfg, job, checkpoint_path, config)
    with stop_on_signals(trainer):
        result = trainer.fit(model, data, task, resume=resume)
    summary.update(getattr(result, "summary", {}))  # a federated run's own fields (comm/bytes, ...)
    summary["startup_s"] = startup_breakdown(marks, trainer.first_step_done_at, process_started)
    return close_run(cfg, job, model, result, task)


def close_run(cfg: DictConfig, job: JobRecord, model, result: FitResult, task) -> float:
    """A completed fit into its folder: the checkpoint keeps only what transfer and inspection
    need (the selected weights and the config), the summary its results; returns the best
    validation value."""
    summary = job.summary
    config = OmegaConf.to_container(cfg, resolve=True)
    save_checkpoint(job.run_dir / CHECKPOINT_NAME,
                    {"completed": True, "model": model.state_dict(), "epoch": result.best_epoch, "config": config})
    summary.update(completed_fields(result, task, cfg.trainer))
    log.info(
        "done: best %s %.4f at epoch %d, test/%s %.4f -> %s",
        summary["selection_metric"], result.best_val[task.selection_metric], result.best_epoch,
        task.selection_metric, result.test[task.selection_metric], job.run_dir,
    )
    return result.best_val[task.selection_metric]


def make_trainer(cfg: DictConfig, job: JobRecord, checkpoint_path: Path, config: dict[str, Any]):
    """psx's Trainer, or the same fit on Flower when clients share the model through a server."""
    if is_federated(cfg):
        from psx.federated.run import FederatedTrainer

        return FederatedTrainer(cfg, job.loggers.log_epoch, checkpoint_path, {"config": config})
    return Trainer(cfg.trainer, cfg.seed, on_epoch=job.loggers.log_epoch,
                   checkpoint_path=checkpoint_path, checkpoint_extra={"config": config})


@contextmanager
def recorded_outcome(job: JobRecord):
    """The one place where the way a run ended becomes its status: a PsxError or an unexpected
    exception fails the run (one line, and the traceback in summary.json for a bug) and is not
    re-raised, so a sweep goes on; a stop request or Ctrl-C marks it interrupted and propagates.
    Either way the trackers are closed and summary.json written last."""
    summary, run_dir = job.summary, job.run_dir
    try:
        yield
    except PsxError as e:
        _fail(summary, str(e))
        if isinstance(e, DiskRefused):
            summary["resumable"] = True
    except StopRequested as e:
        summary.update(status="interrupted", error=f"stopped by {e.args[0] if e.args else 'a signal'}; continue with "
                       f"`psx train trainer.resume={run_dir}` (a sweep: re-run it with the same hydra.sweep.dir)")
        raise
    except KeyboardInterrupt:
        summary.update(status="interrupted", error="interrupted by the user")
        raise
    except Exception as e:  # a bug or an unexpected library error: keep the traceback in the summary
        summary["traceback"] = traceback.format_exc()
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:  # a full or read-only disk: the path and why
            _fail(summary, disk_error(run_dir, e))
            summary["resumable"] = True  # its last checkpoint is whole: continue once the disk allows
        elif isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e):
            _fail(summary, f"out of memory on {summary.get('device', '?')}: reduce trainer.batch_size or the model")
        else:
            _fail(summary, f"{type(e).__name__}: {e} (traceback in {run_dir / 'summary.json'})")
    finally:
        summary["wall_seconds"] = time.perf_counter() - job.started
        summary["finished_at"] = now_iso()
        if job.loggers is not None:
            job.loggers.finish(summary)
        write_summary(run_dir, summary)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """The job's last write; if the disk refuses it, the previous summary.json stays whole."""
    try:
        write_json_atomic(run_dir / "summary.json", summary)
    except OSError as e:
        print(f"psx: error: {disk_error(run_dir / 'summary.json', e)}", file=sys.stderr, flush=True)


def prepare_device(cfg: DictConfig, summary: dict[str, Any]) -> torch.device:
    """The device, torch's threads, the seed and the backends' settings, recorded in the summary."""
    device = resolve_device(cfg.device, **parallel_context())
    summary["device"] = str(device)
    summary["torch_threads"] = torch.get_num_threads()
    summary["torch_threads_reason"] = thread_reason()
    torch.manual_seed(cfg.seed)
    configure_backends(cfg.trainer.deterministic)
    summary["reused_host_memory"] = cfg.device.reuse_host_memory and reuse_host_memory()
    return device


def build_run_model(cfg: DictConfig, data, device: torch.device, summary: dict[str, Any]):
    """The model, with transferred and frozen weights if asked, on the device; its counts recorded."""
    model = build_model(cfg.model, data.spec)
    if cfg.model.init_from is not None:
        summary["transfer"] = load_matching_weights(model, cfg.model.init_from)
    if cfg.model.freeze:
        summary["frozen"] = freeze(model, list(cfg.model.freeze))
    model = model.to(device)
    summary.update(sharing_summary(model, cfg.model))
    return model


def _fail(summary: dict[str, Any], message: str) -> None:
    summary.update(status="failed", error=message)
    print(f"psx: error: {message}", file=sys.stderr, flush=True)
