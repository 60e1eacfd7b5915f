"""The training loop: plain PyTorch over in-memory tensors.

Batches are slices of a seeded random permutation (no DataLoader, no per-sample Python work);
the only host syncs are once per epoch (train loss, validation metrics). The loop's whole state
(weights, optimizer, scheduler, RNG streams, position in the epoch, best-so-far, history) is
checkpointed atomically at every epoch end and when a stop is requested (SIGTERM/SIGINT), so a
resumed CPU run ends with exactly the metrics of an unbroken one.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import nn

from psx.checkpoint import save_checkpoint
from psx.device import check_precision
from psx.data.spec import Data
from psx.errors import PsxError
from psx.models.eager import compile_model
from psx.progress import Progress


class StopRequested(KeyboardInterrupt):
    """Raised after the state was checkpointed because the process was asked to stop."""


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
    params = list(params)
    # The fused kernels update every tensor in one pass: on CPU PyTorch's default is a loop of about
    # ten ops per tensor, which costs as much as a whole forward pass for the many-tensor or large
    # unshared models (10x slower on rnn_unshared's 2.3M parameters).
    fused = {"fused": True} if params and all(p.device.type in ("cpu", "cuda") for p in params) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
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
        self.stop_requested = False  # set from a signal handler; checked after every step
        self.first_step_done_at: float | None = None  # perf_counter() after the first optimizer step

    def fit(self, model: nn.Module, data: Data, task, resume: dict[str, Any] | None = None) -> FitResult:
        cfg = self.cfg
        model_device = next(model.parameters()).device
        # Compiled forward for speed; state dicts always from the plain module (no "_orig_mod." keys).
        forward = compile_model(model) if cfg.compile else model
        autocast = precision_context(cfg.precision, model_device)
        scaler = torch.amp.GradScaler(model_device.type, enabled=cfg.precision == "fp16")
        optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
        scheduler = make_scheduler(cfg, optimizer, task.mode)
        shuffler = torch.Generator().manual_seed(self.seed)  # on the CPU: same order on every device
        augmenter = torch.Generator().manual_seed(self.seed + 1)  # data augmentation draws, if any
        train = data.train
        steps_per_epoch = task.steps_per_epoch(train, cfg.batch_size)
        better = (lambda a, b: a > b) if task.mode == "max" else (lambda a, b: a < b)
        key = task.selection_metric
        throughput = f"time/{task.unit}_per_s"

        s = {  # everything that must survive an interruption
            "epoch": 0, "step": 0, "stale": 0, "best_epoch": 0, "best_val": None, "best_model": None,
            "history": [], "in_epoch": None, "elapsed": 0.0,
        }
        if resume is not None:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            shuffler.set_state(resume["rng"]["shuffler"])
            augmenter.set_state(resume["rng"]["augmenter"])
            torch.set_rng_state(resume["rng"]["torch"])
            if torch.cuda.is_available() and resume["rng"].get("cuda"):
                torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
            s.update(resume["loop"])
            for row in s["history"]:
                self.on_epoch(row)

        def checkpoint(in_epoch=None):
            if self.checkpoint_path is None:
                return
            s["in_epoch"] = in_epoch
            save_checkpoint(self.checkpoint_path, {
                **self.checkpoint_extra,
                "completed": False,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": {
                    "shuffler": shuffler.get_state(),
                    "augmenter": augmenter.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                },
                "loop": dict(s),
            })

        progress = Progress(cfg.progress, cfg.epochs, steps_per_epoch, done_steps=s["step"])
        started = time.perf_counter() - s["elapsed"]
        stopped_early = False
        try:
            for epoch in range(s["epoch"] + 1, cfg.epochs + 1):
                epoch_start = time.perf_counter()
                model.train()
                partial = s["in_epoch"]  # set when a stop request cut this epoch short
                batches = task.epoch(train, cfg.batch_size, shuffler, data.augment, augmenter,
                                     state=partial["batches"] if partial else None)
                first = partial["next_step"] if partial else 0
                loss_sum = partial["loss_sum"].to(model_device) if partial else torch.zeros((), device=model_device)
                items = partial["items"] if partial else 0
                for i in range(first, batches.steps):
                    x, y, count = batches.batch(i)
                    x, y = to_device(x, model_device), to_device(y, model_device)
                    with autocast:
                        loss = task.loss(forward, x, y, batches)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], cfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += loss.detach() * count
                    items += count
                    s["step"] += 1
                    progress.step()
                    if self.first_step_done_at is None:
                        self.first_step_done_at = time.perf_counter()
                    if self.stop_requested:
                        s["elapsed"] = time.perf_counter() - started
                        checkpoint({"batches": batches.state(), "next_step": i + 1, "loss_sum": loss_sum.cpu(), "items": items})
                        raise StopRequested(self.stop_requested)
                s["in_epoch"] = None
                train_loss = loss_sum.item() / items
                if not math.isfinite(train_loss):
                    raise PsxError(f"training diverged: train/loss is {train_loss} in epoch {epoch} (try a lower trainer.lr)")
                train_seconds = time.perf_counter() - epoch_start
                with autocast:
                    val = task.evaluate(forward, data.val, cfg.eval_batch_size)
                row = {
                    "epoch": epoch,
                    "step": s["step"],
                    "train/loss": train_loss,
                    **task.train_metrics(train_loss),
                    **{f"val/{k}": v for k, v in val.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "time/epoch_s": time.perf_counter() - epoch_start,
                    throughput: items / train_seconds,
                }
                s["history"].append(row)
                self.on_epoch(row)
                progress.epoch_end(epoch, f"loss {train_loss:.4f}  val/{key} {val[key]:.4f}  {row[throughput]:,.0f} {task.unit}/s")

                if s["best_val"] is None or better(val[key], s["best_val"][key]):
                    s.update(best_val=val, best_epoch=epoch, stale=0)
                    s["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    s["stale"] += 1
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val[key])
                elif scheduler is not None:
                    scheduler.step()
                s["epoch"] = epoch
                s["elapsed"] = time.perf_counter() - started
                if cfg.patience is not None and s["stale"] >= cfg.patience:
                    stopped_early = True
                    break
                if cfg.checkpoint:
                    checkpoint()
        finally:
            progress.close()

        # Report test at the best-validation epoch: restore those weights, then evaluate once.
        model.load_state_dict(s["best_model"])
        with autocast:
            test = task.evaluate(forward, data.test, cfg.eval_batch_size)
        return FitResult(
            best_epoch=s["best_epoch"],
            best_val=s["best_val"],
            test=test,
            final=s["history"][-1],
            epochs_completed=len(s["history"]),
            stopped_early=stopped_early,
            train_seconds=time.perf_counter() - started,
            history=s["history"],
        )
