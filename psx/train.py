"""One run: config -> data -> model -> trainer -> run folder (metrics.csv, summary.json, checkpoint.pt)."""
from __future__ import annotations

import datetime as dt
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import psx
from psx.config import validate
from psx.data import build_data
from psx.device import resolve_device
from psx.errors import PsxError
from psx.loggers import CSVLogger, write_json_atomic
from psx.models import build_model, param_counts
from psx.tasks import Classification
from psx.trainer import Trainer

log = logging.getLogger("psx")

# Run folders of jobs that failed in this process; the CLI exits non-zero if any did.
FAILED_RUNS: list[str] = []


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


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
        "run_dir": str(run_dir),
        "psx_version": psx.__version__,
        "torch_version": torch.__version__,
        "started_at": _now(),
    }


def run(cfg: DictConfig) -> float | None:
    """Train one configuration. Never raises for a failed run (a sweep goes on); the failure
    is written to summary.json, printed as one line, and recorded for the exit code."""
    started = time.perf_counter()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = base_summary(cfg, run_dir)
    write_json_atomic(run_dir / "summary.json", summary)
    csv_logger = CSVLogger(run_dir / cfg.logger.csv.filename)
    try:
        validate(cfg)
        device = resolve_device(cfg.device)
        summary["device"] = str(device)
        torch.manual_seed(cfg.seed)
        data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir).to(device)
        summary["train_examples"] = len(data.train)
        model = build_model(cfg.model, data.spec).to(device)
        summary.update(param_counts(model))
        log.info(
            "%s on %s (%d training examples), %s unique parameters, device %s",
            cfg.model.name, cfg.dataset.name, len(data.train), f"{summary['params/unique']:,}", device,
        )
        task = Classification()
        result = Trainer(cfg.trainer, cfg.seed, on_epoch=csv_logger.log).fit(model, data, task)
        torch.save(
            {"model": model.state_dict(), "epoch": result.best_epoch, "config": OmegaConf.to_container(cfg, resolve=True)},
            run_dir / "checkpoint.pt",
        )
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
    except KeyboardInterrupt:
        summary.update(status="interrupted", error="interrupted by the user (Ctrl-C)")
        raise
    except Exception as e:  # a bug or an unexpected library error: keep the traceback in the summary
        summary["traceback"] = traceback.format_exc()
        _fail(summary, run_dir, f"{type(e).__name__}: {e} (traceback in {run_dir / 'summary.json'})")
    finally:
        csv_logger.close()
        summary["wall_seconds"] = time.perf_counter() - started
        summary["finished_at"] = _now()
        write_json_atomic(run_dir / "summary.json", summary)
    return None


def _fail(summary: dict[str, Any], run_dir: Path, message: str) -> None:
    summary.update(status="failed", error=message)
    FAILED_RUNS.append(str(run_dir))
    print(f"psx: error: {message}", file=sys.stderr, flush=True)
