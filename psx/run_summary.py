"""What a run's summary.json and its trackers are told: who the run is, how it ended, how long it took."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import psx
from psx.device import available_cpus
from psx.loggers import flatten
from psx.models import arm_fields
from psx.trainer import FitResult


def now_iso() -> str:
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
        **arm_fields(cfg.model),  # family, arm, reference_arm, shared
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
        "started_at": now_iso(),
    }


def data_sizes(data) -> dict[str, int]:
    """How much data the run used: training examples (tokens for a corpus) and the validation examples
    (or tokens) evaluated every epoch, which dataset.val_tokens can make a part of the validation split."""
    return {"train_examples": len(data.train), "val_examples": len(data.val)}


def params_text(summary: dict[str, Any]) -> str:
    """The run's parameter counts for its first log line: unique, unshared-equivalent and their ratio."""
    equiv = summary["params/unshared_equiv"]
    equiv_text = f"{equiv:,}" if isinstance(equiv, int) else f"{equiv:,.0f}"  # hashed layers: fractional reuse
    ratio = summary.get("sharing/ratio")
    return (f"params/unique {summary['params/unique']:,}, params/unshared_equiv {equiv_text}"
            + (f" (sharing ratio {ratio:.2f}x)" if ratio else ""))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def budget_fields(result: FitResult, trainer_cfg: DictConfig) -> dict[str, Any]:
    """How long the run trained: its budget, the optimizer steps and evaluations (epochs) it made,
    and whether early stopping ended it (at which epoch and step). A federated run's rows are
    rounds, with no step of its own (each client steps on its own data): its steps are None."""
    last = result.final
    return {
        "budget": trainer_cfg.get("budget", "epochs"),
        "steps": last.get("step"),
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "stopped_at": {"epoch": last["epoch"], "step": last.get("step")} if result.stopped_early else None,
    }


def completed_fields(result: FitResult, task, trainer_cfg: DictConfig) -> dict[str, Any]:
    return {
        "status": "completed",
        "selection_metric": f"val/{task.selection_metric}",
        "best_epoch": result.best_epoch,
        **budget_fields(result, trainer_cfg),
        "metrics": {
            **{f"val/{k}": v for k, v in result.best_val.items()},
            **{f"test/{k}": v for k, v in result.test.items()},
            "train/loss": result.final["train/loss"],
        },
        "final": result.final,
        "train_seconds": result.train_seconds,
        # Dynamic sharing (model.untie_at): the epoch whose start untied the convs, null if it never did.
        **({"untied_at": result.final["sharing/untied_at"] or None} if "sharing/untied_at" in result.final else {}),
    }


def startup_breakdown(marks: dict[str, float], first_step_done_at: float | None,
                      process_started: float | None) -> dict[str, float]:
    """Seconds from process_started (the `psx` process start, given for the first job that process
    runs) or else from the job's own start, to the end of the first training step."""
    started = marks["job"] if process_started is None else process_started
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
    tags = [cfg.model.name, cfg.dataset.name, str(summary["family"])]
    tags.append("shared" if summary["shared"] else "unshared")
    return {
        "name": ",".join(summary["overrides"]) or cfg.model.name,
        "tags": tags,
        "config": config,
        "sweep_id": summary["sweep_id"],
        "wandb_id": (previous or {}).get("wandb_id") if summary.get("resumed_from") else None,
    }
