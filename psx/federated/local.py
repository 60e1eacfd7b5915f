"""What a client does with its own data: train for a few epochs, and count what it gets right.

Training reuses psx's pieces (psx.optim's make_optimizer, the task's batches and loss), so a
client's step is the same step a centralised run takes. FedProx adds its proximal term
(mu/2) * ||w - w_global||^2 over the parameters the server sent (Li et al. 2020).
"""
from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

from psx.data.tensors import Split
from psx.errors import PsxError
from psx.optim import make_optimizer


def train_locally(model: nn.Module, split: Split, task, trainer_cfg: DictConfig, epochs: int,
                  generator: torch.Generator, proximal_mu: float = 0.0,
                  anchor: dict[str, torch.Tensor] | None = None) -> float:
    """`epochs` passes over `split` with a fresh optimizer (the usual FedAvg client); returns the
    mean training loss. `anchor`: the received global tensors FedProx pulls towards."""
    model.train()
    device = next(model.parameters()).device
    optimizer = make_optimizer(trainer_cfg, [p for p in model.parameters() if p.requires_grad])
    pulled = [(p, anchor[name].to(device)) for name, p in model.named_parameters()
              if proximal_mu > 0 and anchor is not None and name in anchor]
    loss_sum, items = torch.zeros((), device=device), 0
    for _ in range(epochs):
        batches = task.epoch(split, trainer_cfg.batch_size, generator)
        for i in range(batches.steps):
            x, y, count = batches.batch(i)
            x, y = x.to(device), y.to(device)
            loss = task.loss(model, x, y, batches)
            objective = loss + _proximal(pulled, proximal_mu) if pulled else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if trainer_cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], trainer_cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.detach() * count
            items += count
    mean = loss_sum.item() / max(items, 1)
    if not math.isfinite(mean):
        raise PsxError(f"a client's training diverged: train/loss is {mean} (try a lower trainer.lr)")
    return mean


def _proximal(pulled: list[tuple[nn.Parameter, torch.Tensor]], mu: float) -> torch.Tensor:
    return 0.5 * mu * sum((p - w).pow(2).sum() for p, w in pulled)


@torch.no_grad()
def per_class_counts(model: nn.Module, split: Split, classes: int, batch_size: int) -> dict[str, list[float]]:
    """Correct predictions and summed loss per true class: enough for the server to compute plain
    accuracy and accuracy under any client's label distribution without seeing a single example."""
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros(classes, dtype=torch.float64, device=device)
    loss = torch.zeros(classes, dtype=torch.float64, device=device)
    for start in range(0, len(split), batch_size):
        x, y = split.batch(slice(start, start + batch_size))
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        losses = nn.functional.cross_entropy(logits, y, reduction="none").double()
        correct.index_add_(0, y, (logits.argmax(1) == y).double())
        loss.index_add_(0, y, losses)
    return {"correct": correct.tolist(), "loss": loss.tolist()}
