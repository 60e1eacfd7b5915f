"""Several seeds of one configuration trained together as one stacked model.

Seed k's weights are slice k of stacked tensors (torch.func.stack_module_state); one training step
runs every seed's forward and backward at once (torch.func.vmap over weights, batch and labels),
each seed on its own batch order and augmentation draws. The result per seed is what
psx.trainer.Trainer gives for that seed alone, to float tolerance (batched kernels sum in another
order): the models are built by the caller exactly as a single run builds them, and the optimizer,
updating the stacked tensors elementwise (SGD, Adam, AdamW, weight decay), gives each slice the
update it would get alone. What is per seed is done per seed: gradient clipping (each seed's own
global norm), best-validation selection, early stopping, the test at the best epoch. What cannot be
per seed here is refused by stack_reason() so the caller trains those seeds one by one instead.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from psx.budget import Budget, budget_of
from psx.data.tensors import Data
from psx.errors import PsxError
from psx.progress import Progress
from psx.stacked.checkpoints import seed_checkpoint
from psx.stacked.eval import evaluate_stacked
from psx.stacked.layers import MemoryFormatAsIs, stackable_template
from psx.stacked.state import SeedRecord, clip_per_seed, per_seed_rows, seed_state
from psx.optim import make_optimizer, make_scheduler
from psx.trainer import FitResult, StopRequested, to_device


@dataclass
class _Stack:
    """A stacked run's state: the seeds' stacked weights, their one optimizer, and each seed's record."""

    template: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    records: list[SeedRecord]
    budget: Budget
    step: int = 0  # optimizer steps taken
    passes: list | None = None  # each seed's pass over the data in progress (a step budget runs it across rounds)
    next_step: int = 0  # the position of every seed in its pass (the seeds' passes are equally long)
    torch_rng: torch.Tensor = field(default_factory=torch.get_rng_state)
    started: float = field(default_factory=time.perf_counter)

    def checkpoints(self, epoch: int, in_epoch: Callable[[int], dict] | None = None):
        """(position in seeds, Trainer checkpoint) of each seed still training."""
        loop = {"epoch": epoch, "step": self.step, "elapsed": time.perf_counter() - self.started}
        mid_pass = self.passes is not None and self.next_step < self.passes[0].steps
        for index, record in enumerate(self.records):
            if record.active:
                state = seed_checkpoint(record, index, self.params, self.buffers, self.optimizer, self.scheduler,
                                        loop, self.torch_rng)
                state["loop"]["in_epoch"] = in_epoch(index) if in_epoch else None
                state["loop"]["cursor"] = ({"batches": self.passes[index].state(), "next_step": self.next_step}
                                           if mid_pass and in_epoch is None else None)
                yield index, state


class StackedTrainer:
    """Trains len(seeds) models of one configuration together; models[k] was built after
    torch.manual_seed(seeds[k]), as a single run builds it, and ends with its best-validation weights.

    on_epoch(k, row): seed k's metrics row at each epoch end. on_checkpoint(k, state): seed k's
    checkpoint, in Trainer's format, at each epoch end (if cfg.checkpoint) and when a stop is
    requested (stop_requested set, e.g. from a signal handler; then StopRequested is raised)."""

    def __init__(self, cfg: DictConfig, seeds: list[int], on_epoch: Callable[[int, dict], None] | None = None,
                 on_checkpoint: Callable[[int, dict], None] | None = None):
        self.cfg = cfg
        self.seeds = list(seeds)
        self.on_epoch = on_epoch or (lambda index, row: None)
        self.on_checkpoint = on_checkpoint or (lambda index, state: None)
        self.stop_requested = False
        self.first_step_done_at: float | None = None

    def fit(self, models: list[nn.Module], data: Data, task) -> list[FitResult | PsxError]:
        """One FitResult per seed, or the PsxError that ended that seed (divergence) while the others went on."""
        cfg = self.cfg
        params, buffers = stack_module_state(models)
        optimizer = make_optimizer(cfg, [p for p in params.values() if p.requires_grad])
        run = _Stack(stackable_template(models[0]).train(), params, buffers, optimizer,
                     make_scheduler(cfg, optimizer, task.mode), [SeedRecord(seed) for seed in self.seeds],
                     budget_of(cfg, task.steps_per_epoch(data.train, cfg.batch_size)))
        progress = Progress(cfg.progress, run.budget.rounds, run.budget.round_steps or
                            task.steps_per_epoch(data.train, cfg.batch_size))
        try:
            for epoch in range(1, run.budget.rounds + 1):
                epoch_start = time.perf_counter()
                loss_sums, items = self._train_epoch(run, epoch, data, task, progress)
                train_seconds = time.perf_counter() - epoch_start
                val = evaluate_stacked(task, run.template, params, buffers, data.val, cfg.eval_batch_size, len(run.records))
                common = {"step": run.step, "lr": optimizer.param_groups[0]["lr"],
                          "time/epoch_s": time.perf_counter() - epoch_start, f"time/{task.unit}_per_s": items / train_seconds}
                self._end_epoch(run, epoch, [s / items for s in loss_sums], val, common, task, progress)
                if run.scheduler is not None and not run.budget.per_step_schedule:
                    run.scheduler.step()
                if cfg.checkpoint:  # as Trainer: not for a run that this epoch stopped
                    for index, state in run.checkpoints(epoch):
                        self.on_checkpoint(index, state)
                if all(not record.active for record in run.records):
                    break
        finally:
            progress.close()
        return self._finish(run.records, models, data, task, time.perf_counter() - run.started)

    def _train_epoch(self, run: _Stack, epoch: int, data: Data, task, progress):
        cfg = self.cfg
        device = next(iter(run.params.values())).device
        loss_of = vmap(lambda p, b, x, y: task.loss(lambda inputs: functional_call(run.template, (p, b), (inputs,)), x, y))
        loss_sums = torch.zeros(len(run.records), device=device)
        items = done = 0
        target = run.budget.steps_in_round(epoch)  # None: to the end of a new pass (an epoch budget)
        if target is None or run.passes is None or run.next_step >= run.passes[0].steps:
            run.passes, run.next_step = None, 0
        while done < target if target is not None else (run.passes is None or run.next_step < run.passes[0].steps):
            if run.passes is None or run.next_step >= run.passes[0].steps:
                run.passes = [task.epoch(data.train, cfg.batch_size, r.shuffler, data.augment, r.augmenter)
                              for r in run.records]
                run.next_step = 0
            batches = [batches.batch(run.next_step) for batches in run.passes]
            x = to_device(torch.stack([b[0] for b in batches]), device)
            y = to_device(torch.stack([b[1] for b in batches]), device)
            with MemoryFormatAsIs():
                losses = loss_of(run.params, run.buffers, x, y)
            run.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # seeds share no weights: the sum's gradient is each seed's own
            if cfg.grad_clip is not None:
                clip_per_seed(run.optimizer.param_groups[0]["params"], cfg.grad_clip)
            run.optimizer.step()
            if run.budget.per_step_schedule and run.scheduler is not None:
                run.scheduler.step()
            loss_sums += losses.detach() * batches[0][2]
            items += batches[0][2]
            run.step, run.next_step, done = run.step + 1, run.next_step + 1, done + 1
            progress.step()
            if self.first_step_done_at is None:
                self.first_step_done_at = time.perf_counter()
            if self.stop_requested:
                self._stop(run, epoch, done, loss_sums, items)
        return loss_sums.tolist(), items

    def _stop(self, run: _Stack, epoch: int, done: int, loss_sums, items) -> None:
        """As Trainer on a stop request: each seed's mid-round checkpoint, then StopRequested."""
        def in_epoch(index):
            return {"batches": run.passes[index].state(), "next_step": run.next_step, "round_step": done,
                    "loss_sum": loss_sums[index].detach().cpu().clone(), "items": items}

        for index, state in run.checkpoints(epoch - 1, in_epoch):
            self.on_checkpoint(index, state)
        raise StopRequested(self.stop_requested)

    def _end_epoch(self, run: _Stack, epoch, train_losses, val, common, task, progress):
        key = task.selection_metric
        for index, (record, row) in enumerate(zip(run.records, per_seed_rows(epoch, train_losses, val, common, task))):
            if not record.active:
                continue  # stopped early or diverged: its run ended; its slice trains on untouched by the others
            if not math.isfinite(row["train/loss"]):
                record.end(PsxError(f"training diverged: train/loss is {row['train/loss']} in epoch {epoch} "
                                    "(try a lower trainer.lr)"))
                continue
            record.history.append(row)
            self.on_epoch(index, row)
            if record.best_val is None or _better(task.mode, row[f"val/{key}"], record.best_val[key]):
                best_val = {k[len("val/"):]: v for k, v in row.items() if k.startswith("val/")}
                record.improve(epoch, best_val, seed_state(run.params, run.buffers, index))
            else:
                record.stale += 1
            if self.cfg.patience is not None and record.stale >= self.cfg.patience:
                record.end(None, stopped_early=True)
        progress.epoch_end(epoch, f"{sum(r.active for r in run.records)}/{len(run.records)} seeds training")

    def _finish(self, records, models, data, task, seconds) -> list[FitResult | PsxError]:
        results: list[FitResult | PsxError] = []
        for record, model in zip(records, models):
            if record.error is not None:
                results.append(record.error)
                continue
            # As a single run: the test at the best-validation epoch, with those weights restored.
            model.load_state_dict(record.best_state)
            test = task.evaluate(model, data.test, self.cfg.eval_batch_size)
            results.append(FitResult(
                best_epoch=record.best_epoch, best_val=record.best_val, test=test, final=record.history[-1],
                epochs_completed=len(record.history), stopped_early=record.stopped_early,
                train_seconds=seconds, history=record.history,
            ))
        return results


def _better(mode: str, value: float, best: float) -> bool:
    return value > best if mode == "max" else value < best
