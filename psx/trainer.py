"""The training loop: plain PyTorch over in-memory tensors.

Batches are slices of a seeded random permutation (no DataLoader, no per-sample Python work);
the only host syncs are once per epoch (train loss, validation metrics). The loop's whole state
(weights, optimizer, scheduler, RNG streams, position in the epoch, best-so-far, history) is
checkpointed atomically at every epoch end and when a stop is requested (SIGTERM/SIGINT), so a
resumed CPU run ends with exactly the metrics of an unbroken one.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import nn

from psx.budget import Budget, budget_of
from psx.checkpoint import save_checkpoint
from psx.device import check_precision
from psx.data.tensors import Data
from psx.errors import PsxError, StopRequested
from psx.models.eager import compile_model
from psx.optim import make_optimizer, make_scheduler, rebuild_optimizer
from psx.penalty_decay import choose_penalty_path, param_groups, refresh_decays
from psx.progress import Progress

log = logging.getLogger("psx")


@dataclass
class LoopState:
    """Everything of the loop that must survive an interruption (saved in every checkpoint)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    stale: int = 0  # epochs since the best validation metric
    best_epoch: int = 0
    best_val: dict[str, float] | None = None
    best_model: dict[str, torch.Tensor] | None = None  # the weights at best_epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    in_epoch: dict[str, Any] | None = None  # where a stop request cut the current epoch short
    elapsed: float = 0.0  # training seconds before this process
    cursor: dict[str, Any] | None = None  # a step budget's pass over the data that runs on into the next round

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:  # checkpoints written before `cursor` existed (and the stacked trainer's) lack it
                setattr(self, f.name, state[f.name])


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict[str, float]
    test: dict[str, float]
    final: dict[str, float]
    epochs_completed: int
    stopped_early: bool
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def precision_context(precision: str, device: torch.device):
    """Mixed precision by autocast: bf16 on CPU or CUDA, fp16 on CUDA (with a gradient scaler)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(precision, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch gathered on the host goes to the model's device through pinned memory, asynchronously."""
    if t.device == device:
        return t
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


class Trainer:
    """Trains one model: `fit` restores, then per epoch trains, evaluates, ends the epoch (best
    weights, scheduler, early stop) and checkpoints, then tests the best-validation weights."""

    def __init__(
        self,
        cfg: DictConfig,
        seed: int,
        on_epoch: Callable[[dict], None] | None = None,
        checkpoint_path: Path | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.seed = seed
        self.on_epoch = on_epoch or (lambda row: None)
        self.checkpoint_path = checkpoint_path
        self.checkpoint_extra = checkpoint_extra or {}
        self.stop_requested: str | bool = False  # a signal's name, set from its handler; checked after every step
        self.first_step_done_at: float | None = None  # perf_counter() after the first optimizer step

    def fit(self, model: nn.Module, data: Data, task, resume: dict[str, Any] | None = None) -> FitResult:
        loop = EpochLoop(self, model, data, task)
        if resume is not None:
            loop.restore(resume)
        budget = loop.budget
        loop.progress = Progress(self.cfg.progress, budget.rounds, budget.round_steps or loop.steps_per_epoch,
                                 done_steps=loop.state.step)
        loop.started = time.perf_counter() - loop.state.elapsed
        stopped_early = False
        try:
            for epoch in range(loop.state.epoch + 1, budget.rounds + 1):
                epoch_start = time.perf_counter()
                loop.start_epoch(epoch)
                train_loss, items = loop.train_epoch(epoch)
                train_seconds = time.perf_counter() - epoch_start
                loop.progress.phase("validating...")
                val = loop.evaluate(data.val)
                loop.record_epoch(epoch, train_loss, val, items / train_seconds, time.perf_counter() - epoch_start)
                if loop.end_epoch(epoch, val):
                    stopped_early = True
                    break
                if self.cfg.checkpoint:
                    loop.checkpoint()
        finally:
            loop.progress.close()
        if self.cfg.progress != "none":
            log.info("testing the best-validation weights (epoch %d) on the test split", loop.state.best_epoch)
        return loop.result(data.test, stopped_early)


class EpochLoop:
    """One fit's moving parts (model, optimizer, scheduler, scaler, random streams) and its LoopState."""

    def __init__(self, trainer: Trainer, model: nn.Module, data: Data, task):
        cfg = self.cfg = trainer.cfg
        self.trainer, self.model, self.data, self.task = trainer, model, data, task
        self.device = next(model.parameters()).device
        # Compiled forward for speed; state dicts always from the plain module (no "_orig_mod." keys).
        self.forward = compile_model(model) if cfg.compile else model
        self.autocast = precision_context(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        choose_penalty_path(model, cfg)
        self.optimizer = make_optimizer(cfg, param_groups(model, cfg))
        self.scheduler = make_scheduler(cfg, self.optimizer, task.mode)
        self.steps_per_epoch = task.steps_per_epoch(data.train, cfg.batch_size)
        self.budget: Budget = budget_of(cfg, self.steps_per_epoch)
        self.shuffler = torch.Generator().manual_seed(trainer.seed)  # on the CPU: same order on every device
        self.augmenter = torch.Generator().manual_seed(trainer.seed + 1)  # data augmentation draws, if any
        self.state = LoopState()
        self.progress: Progress | None = None
        self.started = time.perf_counter()

    def restore(self, resume: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, scheduler, random streams, loop state;
        the epochs already done are passed to on_epoch again (the loggers of a new run folder)."""
        self.state.load_state_dict(resume["loop"])  # first: the model's form may follow from its history
        if len(resume["optimizer"]["param_groups"]) != len(self.optimizer.param_groups):
            self.model.penalty_in_optimizer = False  # a run started with the penalty in its loss keeps it there
            self.optimizer, self.scheduler = rebuild_optimizer(self.cfg, self.model, self.task.mode)
        # The model's form at the checkpoint: that of the last epoch started.
        self.start_epoch(self.state.epoch + (1 if self.state.in_epoch else 0))
        self.model.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(resume["scheduler"])
        rng = resume["rng"]
        self.shuffler.set_state(rng["shuffler"])
        self.augmenter.set_state(rng["augmenter"])
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng.get("cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])
        for row in self.state.history:
            self.trainer.on_epoch(row)

    def start_epoch(self, epoch: int) -> None:
        """The model's own hook at an epoch's start, `on_epoch_start(epoch, stale) -> changed` (idempotent:
        bring the model to its form for that epoch, e.g. untie its convolutions, set a penalty's strength;
        `stale`: after each finished epoch, the validations since the best). When its parameters changed,
        the optimizer is rebuilt over them, keeping the lr, the scheduler's state and the optimizer state
        of every parameter that survived."""
        if not (hasattr(self.model, "on_epoch_start") and self.model.on_epoch_start(epoch, self.stale_history())):
            refresh_decays(self.optimizer, self.model, self.cfg)  # a scheduled strength moves the offsets' decay
            return
        self.optimizer, self.scheduler = rebuild_optimizer(self.cfg, self.model, self.task.mode,
                                                           self.optimizer, self.scheduler)

    def stale_history(self) -> list[int]:
        """After each finished epoch, how many validations had passed since the best (as end_epoch counts)."""
        key, best, stale, counts = f"val/{self.task.selection_metric}", None, 0, []
        for row in self.state.history:
            if best is None or self._better(row[key], best):
                best, stale = row[key], 0
            else:
                stale += 1
            counts.append(stale)
        return counts

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One round: a pass over the training data (epoch budget) or the round's share of a step
        budget, continuing the pass the last round left (or the rest of a round a stop request cut
        short); returns the mean training loss and the number of examples (or tokens). A stop
        request checkpoints the position after the current step and raises StopRequested."""
        s = self.state
        self.model.train()
        partial = s.in_epoch or s.cursor
        batches, i = (self._pass(partial["batches"]), partial["next_step"]) if partial else (None, 0)
        done = s.in_epoch.get("round_step", i) if s.in_epoch else 0  # steps of this round already taken
        loss_sum = s.in_epoch["loss_sum"].to(self.device) if s.in_epoch else torch.zeros((), device=self.device)
        items = s.in_epoch["items"] if s.in_epoch else 0
        target = self.budget.steps_in_round(epoch)
        while done < target if target is not None else (batches is None or i < batches.steps):
            if batches is None or i >= batches.steps:
                batches, i = self._pass(None), 0
            x, y, count = batches.batch(i)
            loss = self.train_step(to_device(x, self.device), to_device(y, self.device), batches)
            loss_sum += loss.detach() * count
            items, i, done, s.step = items + count, i + 1, done + 1, s.step + 1
            self.progress.step()
            if self.trainer.first_step_done_at is None:
                self.trainer.first_step_done_at = time.perf_counter()
            if self.trainer.stop_requested:
                s.elapsed = time.perf_counter() - self.started
                self.checkpoint({"batches": batches.state(), "next_step": i, "round_step": done,
                                 "loss_sum": loss_sum.cpu(), "items": items})
                raise StopRequested(self.trainer.stop_requested)
        s.in_epoch = None
        s.cursor = {"batches": batches.state(), "next_step": i} if i < batches.steps else None
        train_loss = loss_sum.item() / items
        if not math.isfinite(train_loss):
            raise PsxError(f"training diverged: train/loss is {train_loss} in epoch {epoch} (try a lower trainer.lr)")
        return train_loss, items

    def _pass(self, state: dict[str, Any] | None):
        """A pass over the training data: a new seeded shuffle, or the one `state` saved."""
        return self.task.epoch(self.data.train, self.cfg.batch_size, self.shuffler, self.data.augment, self.augmenter,
                               state=state)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, batches) -> torch.Tensor:
        with self.autocast:
            loss = self.task.loss(self.forward, x, y, batches)
            penalty = self.model.regularizer() if hasattr(self.model, "regularizer") else None
        self.optimizer.zero_grad(set_to_none=True)
        # train/loss stays the task's loss (comparable across arms); the penalty only steers the gradient.
        self.scaler.scale(loss if penalty is None else loss + penalty).backward()
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.budget.per_step_schedule and self.scheduler is not None and not self._plateau():
            self.scheduler.step()
        return loss

    def evaluate(self, split) -> dict[str, float]:
        with self.autocast:
            return self.task.evaluate(self.forward, split, self.cfg.eval_batch_size)

    def record_epoch(self, epoch: int, train_loss: float, val: dict[str, float], per_second: float, seconds: float) -> None:
        """The epoch's row: into the history, to on_epoch (the loggers) and the progress display."""
        task, key = self.task, self.task.selection_metric
        throughput = f"time/{task.unit}_per_s"
        row = {
            "epoch": epoch,
            "step": self.state.step,
            "train/loss": train_loss,
            **task.train_metrics(train_loss),
            **{f"val/{k}": v for k, v in val.items()},
            "lr": self.optimizer.param_groups[0]["lr"],
            "time/epoch_s": seconds,
            throughput: per_second,
            **(self.model.epoch_metrics() if hasattr(self.model, "epoch_metrics") else {}),
        }
        self.state.history.append(row)
        self.trainer.on_epoch(row)
        self.progress.epoch_end(epoch, f"loss {train_loss:.4f}  val/{key} {val[key]:.4f}  {per_second:,.0f} {task.unit}/s")

    def end_epoch(self, epoch: int, val: dict[str, float]) -> bool:
        """Keep the best weights, step the scheduler; True when patience has run out (stop early)."""
        s, key = self.state, self.task.selection_metric
        if s.best_val is None or self._better(val[key], s.best_val[key]):
            s.best_val, s.best_epoch, s.stale = val, epoch, 0
            s.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            s.stale += 1
        if self._plateau():
            self.scheduler.step(val[key])
        elif self.scheduler is not None and not self.budget.per_step_schedule:
            self.scheduler.step()
        s.epoch = epoch
        s.elapsed = time.perf_counter() - self.started
        return self.cfg.patience is not None and s.stale >= self.cfg.patience

    def _plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def _better(self, value: float, best: float) -> bool:
        return value > best if self.task.mode == "max" else value < best

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {
                "shuffler": self.shuffler.get_state(),
                "augmenter": self.augmenter.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "loop": self.state.state_dict(),
        }

    def checkpoint(self, in_epoch: dict[str, Any] | None = None) -> None:
        path = self.trainer.checkpoint_path
        if path is None:
            return
        self.state.in_epoch = in_epoch
        save_checkpoint(path, {**self.trainer.checkpoint_extra, "completed": False, **self.state_dict()})

    def result(self, test_split, stopped_early: bool) -> FitResult:
        """Test at the best-validation epoch: restore those weights, then evaluate once."""
        s = self.state
        self.model.load_state_dict(s.best_model)
        test = self.evaluate(test_split)
        return FitResult(
            best_epoch=s.best_epoch,
            best_val=s.best_val,
            test=test,
            final=s.history[-1],
            epochs_completed=len(s.history),
            stopped_early=stopped_early,
            train_seconds=time.perf_counter() - self.started,
            history=s.history,
        )
