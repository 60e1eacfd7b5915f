"""One run: config -> data -> model -> trainer -> run folder (metrics.csv, summary.json, checkpoint.pt)."""
from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import psx
from psx.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from psx.config import validate
from psx.data import build_data
from psx.device import available_cpus, configure_backends, place_data, resolve_device, reuse_host_memory, thread_reason
from psx.errors import PsxError
from psx.loggers import WandbLogger, build_loggers, flatten, write_json_atomic
from psx.models import build_model, param_counts
from psx.models.transfer import freeze, load_matching_weights
from psx.tasks import task_for
from psx.trainer import StopRequested, Trainer

log = logging.getLogger("psx")

# Run folders of jobs that failed in this process; the CLI exits non-zero if any did.
FAILED_RUNS: list[str] = []

# Overrides that may accompany trainer.resume: they change how, not what, is trained.
RESUME_COMPATIBLE = ("trainer.resume", "trainer.progress", "device", "hydra.", "hydra/")


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def sweep_id() -> str | None:
    """Names the sweep a job belongs to (its folder), so trackers and reports can group its runs."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    return "-".join(Path(hydra.sweep.dir).resolve().parts[-2:])


def parallel_context() -> dict[str, Any]:
    """How many jobs the launcher runs side by side on this machine (joblib), and this job's number."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return {}
    launcher = hydra.launcher
    jobs = 1
    if "joblib" in str(launcher.get("_target_", "")).lower():
        jobs = launcher.get("n_jobs") or 1
        jobs = available_cpus() if jobs < 0 else jobs
    return {"job_num": hydra.job.num, "parallel_jobs": jobs}


def base_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    hydra = HydraConfig.get()
    return {
        "status": "running",
        "error": None,
        "model": cfg.model.name,
        "family": cfg.model.get("family"),
        "shared": cfg.model.get("shared"),
        "dataset": cfg.dataset.name,
        "train_size": cfg.dataset.get("train_size"),
        "seed": cfg.seed,
        "overrides": list(hydra.overrides.task),
        "job_num": hydra.job.get("num"),
        "sweep_id": sweep_id(),
        "experiment": hydra.runtime.choices.get("experiment"),
        "run_dir": str(run_dir),
        "psx_version": psx.__version__,
        "torch_version": torch.__version__,
        "started_at": _now(),
    }


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


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


def run(cfg: DictConfig) -> float | None:
    """Train one configuration. Never raises for a failed run (a sweep goes on); the failure
    is written to summary.json, printed as one line, and recorded for the exit code.

    Re-running a sweep into the same folder finishes it: a job whose folder says completed is
    skipped, an interrupted one resumes from its checkpoint, a failed one starts over."""
    freeze_long_lived_objects()
    started = time.perf_counter()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_summary(run_dir)
    summary = base_summary(cfg, run_dir)
    if previous is not None and previous.get("overrides") != summary["overrides"]:
        return _fail(summary, run_dir, f"{run_dir} already holds a different run ({' '.join(previous.get('overrides') or [])}); "
                     "sweep into a new hydra.sweep.dir")
    if previous is not None and previous.get("status") == "completed":
        log.info("skipping %s: already completed", run_dir)
        return (previous.get("metrics") or {}).get(previous.get("selection_metric"))

    resume = None
    checkpoint_path = run_dir / CHECKPOINT_NAME
    loggers = None
    try:
        if cfg.trainer.resume is not None:
            resume, cfg = _resume_from(cfg, summary)
        elif previous is not None and previous.get("status") in ("running", "interrupted") and checkpoint_path.exists():
            resume = load_checkpoint(checkpoint_path)
            summary["resumed_from"] = str(checkpoint_path)
            log.info("resuming %s from epoch %d", run_dir, resume["loop"]["epoch"])
        write_json_atomic(run_dir / "summary.json", summary)
        validate(cfg)
        loggers = build_loggers(cfg.logger, tracker_run_info(cfg, summary, previous), run_dir)
        if loggers.get(WandbLogger) is not None:
            summary["wandb_id"] = getattr(loggers.get(WandbLogger), "id", None)
        device = resolve_device(cfg.device, **parallel_context())
        summary["device"] = str(device)
        summary["torch_threads"] = torch.get_num_threads()
        summary["torch_threads_reason"] = thread_reason()
        torch.manual_seed(cfg.seed)
        configure_backends(cfg.trainer.deterministic)
        summary["reused_host_memory"] = cfg.device.reuse_host_memory and reuse_host_memory()
        marks = {"job": time.perf_counter()}
        data = place_data(build_data(cfg.dataset, data_dir=cfg.paths.data_dir), device, cfg.device.data)
        marks["data"] = time.perf_counter()
        summary["train_examples"] = len(data.train)
        model = build_model(cfg.model, data.spec)
        if cfg.model.init_from is not None:
            summary["transfer"] = load_matching_weights(model, cfg.model.init_from)
        if cfg.model.freeze:
            summary["frozen"] = freeze(model, list(cfg.model.freeze))
        model = model.to(device)
        marks["model"] = time.perf_counter()
        summary.update(param_counts(model))
        task = task_for(data.spec, cfg.model)
        log.info(
            "%s on %s (%s training %s), %s unique parameters, device %s",
            cfg.model.name, cfg.dataset.name, f"{len(data.train):,}", task.unit, f"{summary['params/unique']:,}", device,
        )
        config = OmegaConf.to_container(cfg, resolve=True)
        trainer = Trainer(cfg.trainer, cfg.seed, on_epoch=loggers.log_epoch,
                          checkpoint_path=checkpoint_path, checkpoint_extra={"config": config})
        with _stop_on_signals(trainer):
            result = trainer.fit(model, data, task, resume=resume)
        summary["startup_s"] = startup_breakdown(marks, trainer.first_step_done_at)
        # The finished run keeps only what transfer and inspection need: the selected weights.
        save_checkpoint(checkpoint_path, {"completed": True, "model": model.state_dict(), "epoch": result.best_epoch, "config": config})
        key = f"val/{task.selection_metric}"
        summary.update(
            status="completed",
            selection_metric=key,
            best_epoch=result.best_epoch,
            epochs_completed=result.epochs_completed,
            stopped_early=result.stopped_early,
            metrics={
                **{f"val/{k}": v for k, v in result.best_val.items()},
                **{f"test/{k}": v for k, v in result.test.items()},
                "train/loss": result.final["train/loss"],
            },
            final=result.final,
            train_seconds=result.train_seconds,
        )
        log.info(
            "done: best %s %.4f at epoch %d, test/%s %.4f -> %s",
            key, result.best_val[task.selection_metric], result.best_epoch,
            task.selection_metric, result.test[task.selection_metric], run_dir,
        )
        return result.best_val[task.selection_metric]
    except PsxError as e:
        _fail(summary, run_dir, str(e))
    except StopRequested as e:
        summary.update(status="interrupted", error=f"stopped by {e.args[0] if e.args else 'a signal'}; continue with "
                       f"`psx train trainer.resume={run_dir}` (a sweep: re-run it with the same hydra.sweep.dir)")
        raise
    except KeyboardInterrupt:
        summary.update(status="interrupted", error="interrupted by the user")
        raise
    except Exception as e:  # a bug or an unexpected library error: keep the traceback in the summary
        summary["traceback"] = traceback.format_exc()
        if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e):
            _fail(summary, run_dir, f"out of memory on {summary.get('device', '?')}: reduce trainer.batch_size or the model")
        else:
            _fail(summary, run_dir, f"{type(e).__name__}: {e} (traceback in {run_dir / 'summary.json'})")
    finally:
        summary["wall_seconds"] = time.perf_counter() - started
        summary["finished_at"] = _now()
        if loggers is not None:
            loggers.finish(summary)
        write_json_atomic(run_dir / "summary.json", summary)
    return None


_PROCESS_START_REPORTED = False


def startup_breakdown(marks: dict[str, float], first_step_done_at: float | None) -> dict[str, float]:
    """Seconds from the `psx` process start (the CLI's import) to the end of the first training step,
    for the first job in the process; later jobs of a sweep in the same process (the basic
    launcher), and jobs that launchers start elsewhere, count from the job's own start."""
    global _PROCESS_START_REPORTED
    cli = sys.modules.get("psx.cli")
    started = marks["job"] if _PROCESS_START_REPORTED else getattr(cli, "STARTED", marks["job"])
    _PROCESS_START_REPORTED = True
    breakdown = {
        "imports_and_compose": marks["job"] - started,
        "data": marks["data"] - marks["job"],
        "model": marks["model"] - marks["data"],
    }
    if first_step_done_at is not None:
        breakdown["first_step"] = first_step_done_at - marks["model"]
        breakdown["total"] = first_step_done_at - started
    return breakdown


def tracker_run_info(cfg: DictConfig, summary: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """What W&B / TensorBoard are told about a run: a readable name, tags and the flat config."""
    config = flatten(OmegaConf.to_container(cfg, resolve=True))
    # Short top-level keys so a tracker UI can group by "model" and "dataset" directly.
    config.update(model=cfg.model.name, dataset=cfg.dataset.name, sweep_id=summary["sweep_id"],
                  experiment=summary["experiment"])
    shared = cfg.model.get("shared")
    tags = [cfg.model.name, cfg.dataset.name, str(cfg.model.get("family"))]
    tags.append("shared" if shared else "unshared")
    return {
        "name": ",".join(summary["overrides"]) or cfg.model.name,
        "tags": tags,
        "config": config,
        "sweep_id": summary["sweep_id"],
        "wandb_id": (previous or {}).get("wandb_id") if summary.get("resumed_from") else None,
    }


def _resume_from(cfg: DictConfig, summary: dict[str, Any]) -> tuple[dict[str, Any], DictConfig]:
    """trainer.resume=<run folder>: continue that run with its own saved config."""
    extra = [o for o in summary["overrides"] if not o.lstrip("+~").startswith(RESUME_COMPATIBLE)]
    if extra:
        raise PsxError(f"trainer.resume continues a run with its own config; drop the other overrides: {' '.join(extra)}")
    state = load_checkpoint(cfg.trainer.resume)
    if state.get("completed"):
        raise PsxError(f"the run in {cfg.trainer.resume} already completed; nothing to resume")
    saved = OmegaConf.create(state["config"])
    saved.trainer.resume = cfg.trainer.resume
    saved.trainer.progress = cfg.trainer.progress
    saved.device = cfg.device
    summary.update(model=saved.model.name, family=saved.model.get("family"), shared=saved.model.get("shared"),
                   dataset=saved.dataset.name, train_size=saved.dataset.get("train_size"), seed=saved.seed,
                   resumed_from=str(Path(cfg.trainer.resume).resolve()))
    log.info("resuming %s from epoch %d", cfg.trainer.resume, state["loop"]["epoch"])
    return state, saved


@contextmanager
def _stop_on_signals(trainer: Trainer):
    """First SIGTERM/SIGINT: finish the current step, checkpoint, stop. A second one stops at once."""
    def request_stop(signum, frame):
        name = signal.Signals(signum).name
        print(f"psx: {name}: saving a checkpoint after this step (again to stop at once)", file=sys.stderr, flush=True)
        trainer.stop_requested = name
        signal.signal(signum, previous[signum])

    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
    except ValueError:  # not the main thread (e.g. a threaded launcher): no handlers, no graceful stop
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _fail(summary: dict[str, Any], run_dir: Path, message: str) -> None:
    summary.update(status="failed", error=message)
    FAILED_RUNS.append(str(run_dir.resolve()))
    print(f"psx: error: {message}", file=sys.stderr, flush=True)
