"""The training loop: plain PyTorch over in-memory tensors.

Batches are slices of a seeded random permutation (no DataLoader, no per-sample Python work);
the only host syncs are once per epoch (train loss, validation metrics).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from psx.data.spec import Data
from psx.errors import PsxError
from psx.progress import Progress


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


def make_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise PsxError(f"unknown trainer.optimizer {cfg.optimizer!r} (sgd, adam, adamw)")


def make_scheduler(cfg: DictConfig, optimizer, mode: str):
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "plateau":
        # Decay as soon as the validation metric fails to improve (the classic PTB LM rule).
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.gamma, patience=0)
    raise PsxError(f"unknown trainer.scheduler {cfg.scheduler!r} (none, cosine, step, plateau)")


class Trainer:
    def __init__(self, cfg: DictConfig, seed: int, on_epoch: Callable[[dict], None] | None = None):
        self.cfg = cfg
        self.seed = seed
        self.on_epoch = on_epoch or (lambda row: None)

    def fit(self, model: nn.Module, data: Data, task) -> FitResult:
        cfg = self.cfg
        device = data.train.y.device
        optimizer = make_optimizer(cfg, model.parameters())
        scheduler = make_scheduler(cfg, optimizer, task.mode)
        shuffler = torch.Generator().manual_seed(self.seed)  # on the CPU: same order on every device
        augmenter = torch.Generator().manual_seed(self.seed + 1)  # data augmentation draws, if any
        train = data.train
        n = len(train)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        better = (lambda a, b: a > b) if task.mode == "max" else (lambda a, b: a < b)
        key = task.selection_metric

        best_state, best_val, best_epoch = None, None, 0
        history: list[dict[str, float]] = []
        step, stale, stopped_early = 0, 0, False
        progress = Progress(cfg.progress, cfg.epochs, steps_per_epoch)
        started = time.perf_counter()
        try:
            for epoch in range(1, cfg.epochs + 1):
                epoch_start = time.perf_counter()
                model.train()
                order = torch.randperm(n, generator=shuffler).to(device, non_blocking=True)
                loss_sum = torch.zeros((), device=device)
                for start in range(0, n, cfg.batch_size):
                    idx = order[start:start + cfg.batch_size]
                    x, y = train.batch(idx, data.augment, augmenter)
                    loss = task.loss(model, x, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    loss_sum += loss.detach() * len(idx)
                    step += 1
                    progress.step()
                train_loss = loss_sum.item() / n
                if not math.isfinite(train_loss):
                    raise PsxError(f"training diverged: train/loss is {train_loss} in epoch {epoch} (try a lower trainer.lr)")
                train_seconds = time.perf_counter() - epoch_start
                val = task.evaluate(model, data.val, cfg.eval_batch_size)
                row = {
                    "epoch": epoch,
                    "step": step,
                    "train/loss": train_loss,
                    **{f"val/{k}": v for k, v in val.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "time/epoch_s": time.perf_counter() - epoch_start,
                    "time/samples_per_s": n / train_seconds,
                }
                history.append(row)
                self.on_epoch(row)
                progress.epoch_end(epoch, f"loss {train_loss:.4f}  val/{key} {val[key]:.4f}  {row['time/samples_per_s']:,.0f} samples/s")

                if best_val is None or better(val[key], best_val[key]):
                    best_val, best_epoch, stale = val, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val[key])
                elif scheduler is not None:
                    scheduler.step()
                if cfg.patience is not None and stale >= cfg.patience:
                    stopped_early = True
                    break
        finally:
            progress.close()

        # Report test at the best-validation epoch: restore those weights, then evaluate once.
        model.load_state_dict(best_state)
        test = task.evaluate(model, data.test, cfg.eval_batch_size)
        return FitResult(
            best_epoch=best_epoch,
            best_val=best_val,
            test=test,
            final=history[-1],
            epochs_completed=len(history),
            stopped_early=stopped_early,
            train_seconds=time.perf_counter() - started,
            history=history,
        )
