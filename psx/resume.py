"""Continuing a run: from a checkpoint (trainer.resume=<run>, or a sweep re-run finding its job
interrupted or killed), and stopping on SIGTERM/SIGINT with a checkpoint to continue from."""
from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from psx.checkpoint import load_checkpoint
from psx.errors import PsxError
from psx.trainer import Trainer

log = logging.getLogger("psx")

# Overrides that may accompany trainer.resume: they change how, not what, is trained.
RESUME_COMPATIBLE = ("trainer.resume", "trainer.progress", "device", "hydra.", "hydra/")


def resume_state(cfg: DictConfig, summary: dict[str, Any], previous: dict[str, Any] | None,
                 checkpoint_path: Path) -> tuple[dict[str, Any] | None, DictConfig]:
    """The checkpoint to continue from, if any, and the config to train with: trainer.resume=<run>,
    or this folder's own checkpoint when a sweep re-run finds the job interrupted (or killed)."""
    if cfg.trainer.resume is not None:
        return _resume_from(cfg, summary)
    if previous is not None and previous.get("status") in ("running", "interrupted") and checkpoint_path.exists():
        resume = load_checkpoint(checkpoint_path)
        summary["resumed_from"] = str(checkpoint_path)
        log.info("resuming %s from epoch %d", checkpoint_path.parent, resume["loop"]["epoch"])
        return resume, cfg
    return None, cfg


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
def stop_on_signals(trainer: Trainer):
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
