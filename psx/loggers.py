"""Where metrics go. CSV always; W&B and TensorBoard when asked, behind one small interface:

    log_epoch(row)      one row of epoch metrics (the same row that goes to metrics.csv)
    finish(summary)     final metrics, parameter counts and status; called on every exit path

A tracker that fails (no network, a broken install) prints one warning and turns itself off:
it never fails or slows the training.
"""
from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("psx")

SUMMARY_KEYS = ("status", "best_epoch", "epochs_completed", "params/unique", "params/unshared_equiv",
                "params/trainable", "sharing/ratio", "family", "arm", "reference_arm", "shared",
                "wall_seconds", "train_seconds", "train_examples", "val_examples", "device", "budget", "steps",
                "stopped_early")


class CSVLogger:
    """One row per epoch in metrics.csv, flushed as it is written so a killed run keeps its rows."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._writer = None

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Tracker:
    """Shared guard: the first error disables the tracker with one warning."""

    name = "tracker"

    def _guard(self, action, *args):
        if self.broken:
            return None
        try:
            return action(*args)
        except Exception as e:  # noqa: BLE001 - a tracker must never take the training down
            self.broken = True
            first_line = (str(e).strip().splitlines() or [""])[0]
            print(f"psx: warning: {self.name} disabled for this run: {type(e).__name__}: {first_line}", file=sys.stderr)
            return None


_WANDB_OFFLINE_HINT_SHOWN = False


def _say_offline_hint_once(run: dict[str, Any], run_dir: Path) -> None:
    """Where offline runs go and how to upload them: once per process for single runs, once per
    sweep for sweeps, whose jobs may run in several processes (joblib workers, SLURM tasks): the
    job that creates the marker file in the sweep folder says it."""
    global _WANDB_OFFLINE_HINT_SHOWN
    if _WANDB_OFFLINE_HINT_SHOWN:
        return
    _WANDB_OFFLINE_HINT_SHOWN = True
    where = f"{run_dir}/wandb/offline-run-*"
    if run.get("sweep_id"):
        where = f"{run_dir.parent}/*/wandb/offline-run-*"
        try:
            os.close(os.open(run_dir.parent / ".wandb_offline_hint_shown", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        except OSError:
            pass  # a read-only sweep folder: say it in this process
    print(f"psx: W&B runs offline (no API key or mode=offline); upload later with: wandb sync {where}", file=sys.stderr)


class WandbLogger(_Tracker):
    name = "W&B"

    def __init__(self, cfg, run: dict[str, Any], run_dir: Path):
        self.broken = False
        self.run = None
        self._guard(self._start, cfg, run, run_dir)

    def _start(self, cfg, run, run_dir):
        import wandb

        mode = cfg.mode or ("online" if _wandb_logged_in() else "offline")
        if mode == "offline":
            _say_offline_hint_once(run, run_dir)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=run.get("sweep_id"),
            job_type=cfg.job_type,
            name=run["name"],
            tags=run["tags"] + list(cfg.tags),
            config=run["config"],
            dir=str(run_dir),
            mode=mode,
            id=run.get("wandb_id"),
            resume="allow" if run.get("wandb_id") else None,
            reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.id = self.run.id
        for metric, best in (("val/acc", "max"), ("val/loss", "min"), ("val/ppl", "min"), ("train/loss", "min")):
            self.run.define_metric(metric, summary=best, step_metric="epoch")

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self.run is not None:
            self._guard(self.run.log, dict(row))

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        final = {key: summary[key] for key in SUMMARY_KEYS if summary.get(key) is not None}
        final.update(summary.get("metrics") or {})
        if summary.get("error"):
            final["error"] = summary["error"]
        self._guard(self.run.summary.update, final)
        self._guard(self.run.finish, 0 if summary.get("status") == "completed" else 1)
        self.run = None


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        hosts = netrc.netrc().hosts
        return any("wandb" in host for host in hosts)
    except (OSError, netrc.NetrcParseError):
        return False


class TensorBoardLogger(_Tracker):
    name = "TensorBoard"

    def __init__(self, cfg, run: dict[str, Any], run_dir: Path):
        self.broken = False
        self.writer = None
        self.hparams = {k: v for k, v in run["config"].items() if isinstance(v, (int, float, str, bool))}
        self._guard(self._start, run_dir / cfg.subdir)

    def _start(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "step"):
                self._guard(self.writer.add_scalar, key, value, row["epoch"])
        self._guard(self.writer.flush)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.writer is None:
            return
        metrics = {f"hparam/{k}": v for k, v in (summary.get("metrics") or {}).items()}
        metrics.update({f"hparam/{k}": summary[k] for k in ("params/unique", "params/unshared_equiv") if k in summary})
        if metrics:  # one hparams entry per run, in the run's own folder, so runs compare side by side
            self._guard(self.writer.add_hparams, self.hparams, metrics, None, ".")
        self._guard(self.writer.close)
        self.writer = None


class Loggers:
    """Fan-out to every configured logger."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def log_epoch(self, row: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_epoch(row)

    def finish(self, summary: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.finish(summary)

    def get(self, kind: type):
        return next((logger for logger in self.loggers if isinstance(logger, kind)), None)


def build_loggers(cfg, run: dict[str, Any], run_dir: Path) -> Loggers:
    loggers: list = [CSVLogger(run_dir / cfg.csv.filename)]
    if cfg.get("wandb") is not None:
        loggers.append(WandbLogger(cfg.wandb, run, run_dir))
    if cfg.get("tensorboard") is not None:
        loggers.append(TensorBoardLogger(cfg.tensorboard, run, run_dir))
    return Loggers(loggers)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'model': {'name': 'x'}} -> {'model.name': 'x'}. A list becomes its Hydra override spelling
    ("[8, 16]", "[features]"): tracker UIs group on scalars, and the text can be pasted back into
    a command line. The one flattening of configs: trackers and `psx report` both use it."""
    if not isinstance(config, dict):
        return {prefix[:-1]: hydra_text(config)} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = hydra_text(value)
    return flat


def hydra_text(value: Any) -> Any:
    """Lists (also nested, also inside dicts) as Hydra writes them; scalars unchanged."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_element(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_element(v)}" for k, v in value.items()) + "}"
    return value


def _element(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(hydra_text(value))
