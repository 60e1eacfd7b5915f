"""The optimizer and learning-rate schedule a run's trainer config names."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from psx.budget import schedule_length
from psx.errors import PsxError
from psx.penalty_decay import param_groups


def make_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    """`params`: tensors, or parameter groups (dicts with "params"; psx.penalty_decay.param_groups)."""
    params = list(params)
    tensors = [p for group in params for p in group["params"]] if params and isinstance(params[0], dict) else params
    # The fused kernels update every tensor in one pass: on CPU PyTorch's default is a loop of about
    # ten ops per tensor, which costs as much as a whole forward pass for the many-tensor or large
    # unshared models (10x slower on rnn_unshared's 2.3M parameters).
    fused = {"fused": True} if tensors and all(p.device.type in ("cpu", "cuda") for p in tensors) else {}
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
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule_length(cfg))
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "plateau":
        # Decay as soon as the validation metric fails to improve (the classic PTB LM rule).
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.gamma, patience=0)
    raise PsxError(f"unknown trainer.scheduler {cfg.scheduler!r} (none, cosine, step, plateau)")


def rebuild_optimizer(cfg: DictConfig, model, mode: str, old_optimizer=None, old_scheduler=None):
    """A new optimizer and scheduler over the model's parameters as they are now (a model that
    untied its convolutions has new tensors), keeping from the old ones (where given) the scheduler's
    state, the lr and other settings of the first group, and the state of every surviving parameter."""
    optimizer = make_optimizer(cfg, param_groups(model, cfg))
    scheduler = make_scheduler(cfg, optimizer, mode)
    if old_optimizer is None:
        return optimizer, scheduler
    if scheduler is not None:
        scheduler.load_state_dict(old_scheduler.state_dict())
    kept = {k: v for k, v in old_optimizer.param_groups[0].items() if k not in ("params", "weight_decay")}
    for group in optimizer.param_groups:
        group.update(kept)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.state.update({p: old_optimizer.state[p] for p in params if p in old_optimizer.state})
    return optimizer, scheduler
