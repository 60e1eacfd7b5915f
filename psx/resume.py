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

from psx.checkpoint import DamagedCheckpoint, load_checkpoint
from psx.errors import PsxError
from psx.trainer import Trainer

log = logging.getLogger("psx")

# Trainer keys that change how a run is trained, not what it computes.
HOW_NOT_WHAT = ("progress", "resume", "resume_damaged", "stack_seeds")
# What a checkpoint saved before these keys existed trained with.
BEFORE_BUDGETS = {"budget": "epochs", "steps": None, "eval_every": None}


def resume_state(cfg: DictConfig, summary: dict[str, Any], previous: dict[str, Any] | None,
                 checkpoint_path: Path) -> dict[str, Any] | None:
    """The checkpoint to continue from when this folder's run was stopped or killed (a sweep
    re-run, or `psx train trainer.resume=<this folder>`, which the CLI turns into the run's own
    overrides in its own folder); None to start afresh."""
    if cfg.trainer.resume is not None:
        raise PsxError("trainer.resume continues one run from the command line: `psx train trainer.resume=<run folder>`")
    continuable = ("running", "interrupted") + (("failed",) if (previous or {}).get("resumable") else ())
    if previous is None or previous.get("status") not in continuable or not checkpoint_path.exists():
        return None
    state = checked_state(checkpoint_path, cfg.trainer.get("resume_damaged", "fail"))
    if state is None:
        return None
    differing = differing_settings(state.get("config") or {}, OmegaConf.to_container(cfg, resolve=True))
    if differing:
        raise PsxError(f"{checkpoint_path.parent} was started with other settings than its overrides give now "
                       f"({', '.join(differing)}); start it again in a new folder")
    if state.get("completed") or "loop" not in state:
        # Stopped after its final checkpoint (the selected weights only) but before its summary:
        # the training state is gone, and training again from the start gives the same run.
        log.warning("%s finished training but not its summary; training it again from the start", checkpoint_path.parent)
        return None
    summary["resumed_from"] = str(checkpoint_path)
    for key in ("sweep_id", "job_num"):  # a sweep's job continued on its own still belongs to its sweep
        if summary.get(key) is None:
            summary[key] = previous.get(key)
    log.info("resuming %s from epoch %d", checkpoint_path.parent, state["loop"]["epoch"])
    return state


def checked_state(checkpoint_path: Path, on_damage: str) -> dict[str, Any] | None:
    """The checkpoint's state; a damaged one fails the run with one line, unless the user said
    `trainer.resume_damaged=restart` (then None: the run starts over in its folder)."""
    try:
        return load_checkpoint(checkpoint_path)
    except DamagedCheckpoint as e:
        if on_damage != "restart":
            raise PsxError(f"{e}; to train this run again from the start, add trainer.resume_damaged=restart") from None
        log.warning("%s; starting the run again (trainer.resume_damaged=restart)", e)
        return None


def differing_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The config sections (model, dataset, trainer but its machine settings, seed) that differ."""
    def what_is_trained(config):
        trainer = {**BEFORE_BUDGETS, **(config.get("trainer") or {})}
        trainer = {k: v for k, v in trainer.items() if k not in HOW_NOT_WHAT}
        return {"model": config.get("model"), "dataset": config.get("dataset"), "trainer": trainer,
                "seed": config.get("seed")}

    saved, now = what_is_trained(saved), what_is_trained(now)
    return [key for key in saved if saved[key] != now[key]]


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
