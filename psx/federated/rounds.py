"""The server's record of a federated run: one metrics row per round, the best round so far, and
the round checkpoint that `trainer.resume` (or re-running a sweep) continues from."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from psx.checkpoint import save_checkpoint
from psx.trainer import FitResult


def fresh_state() -> dict[str, Any]:
    return {"round": 0, "history": [], "best_round": 0, "best_val": None, "best_test": None,
            "best_arrays": None, "arrays": None, "bytes_sent": 0, "bytes_received": 0, "elapsed": 0.0,
            "clients_dir": None}


class Rounds:
    def __init__(self, on_round: Callable[[dict], None], checkpoint_path: Path | None,
                 checkpoint_extra: dict[str, Any], resume: dict[str, Any] | None):
        self.on_round = on_round
        self.checkpoint_path = checkpoint_path
        self.checkpoint_extra = checkpoint_extra
        self.s = resume["federated"] if resume is not None else fresh_state()
        for row in self.s["history"]:  # the trackers get the whole curve again, as the trainer does
            on_round(row)
        self.started = time.perf_counter() - self.s["elapsed"]
        self.first_round_done_at: float | None = None

    def adopt_client_state(self, folder: Path) -> None:
        """A run resumed into a new folder continues with the clients' own tensors of the old one
        (in a deployment each client keeps them on its own machine)."""
        previous = self.s.get("clients_dir")
        if previous and Path(previous) != folder and Path(previous).is_dir():
            shutil.copytree(previous, folder, dirs_exist_ok=True)
        self.s["clients_dir"] = str(folder)

    @property
    def done(self) -> int:
        return self.s["round"]

    def end(self, psx_round: int, arrays: dict[str, torch.Tensor], row: dict[str, float], checkpoint: bool) -> None:
        """Record a finished round (its evaluation done) and checkpoint it."""
        s = self.s
        s["history"].append(row)
        self.on_round(row)
        if s["best_val"] is None or row["val/acc"] > s["best_val"]["acc"]:
            s["best_round"] = psx_round
            s["best_val"] = _split(row, "val")
            s["best_test"] = _split(row, "test")
            s["best_arrays"] = {k: v.clone() for k, v in arrays.items()}
        s.update(round=psx_round, arrays=arrays, bytes_sent=int(row["comm/bytes_sent"]),
                 bytes_received=int(row["comm/bytes_received"]), elapsed=time.perf_counter() - self.started)
        if self.first_round_done_at is None:
            self.first_round_done_at = time.perf_counter()
        if checkpoint and self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, {**self.checkpoint_extra, "completed": False,
                                                   "loop": {"epoch": psx_round}, "federated": s})

    def result(self, summary: dict[str, Any]) -> "FederatedResult":
        s = self.s
        return FederatedResult(
            best_epoch=s["best_round"], best_val=s["best_val"], test=s["best_test"], final=s["history"][-1],
            epochs_completed=len(s["history"]), stopped_early=False,
            train_seconds=time.perf_counter() - self.started, history=s["history"], summary=summary,
            first_round_done_at=self.first_round_done_at,
        )


def _split(row: dict[str, float], split: str) -> dict[str, float]:
    prefix = split + "/"
    return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}


class FederatedResult(FitResult):
    """The trainer's result plus the summary.json fields a federated run adds."""

    def __init__(self, summary: dict[str, Any], first_round_done_at: float | None, **fit):
        super().__init__(**fit)
        self.summary = summary
        self.first_round_done_at = first_round_done_at  # perf_counter(), like Trainer.first_step_done_at
