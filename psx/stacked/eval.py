"""Validation of every seed of a stack at once: one vmapped forward per batch over all seeds."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from psx.stacked.layers import MemoryFormatAsIs
from psx.tasks import Classification


@torch.no_grad()
def evaluate_stacked(task, template: nn.Module, params, buffers, split, batch_size: int, seeds: int) -> list[dict[str, float]]:
    """Per seed what task.evaluate gives for that seed's model alone: {"loss", "acc"} (a classification task)."""
    if type(task) is not Classification:
        raise TypeError(f"stacked evaluation covers single-label classification, not {type(task).__name__}")
    template.eval()
    logits_of = vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), in_dims=(0, 0, None))
    device = next(iter(params.values())).device
    loss_sum = torch.zeros(seeds, device=device)
    correct = torch.zeros(seeds, device=device, dtype=torch.long)
    for start in range(0, len(split), batch_size):
        x, y = split.batch(slice(start, start + batch_size))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with MemoryFormatAsIs():
            logits = logits_of(params, buffers, x).float()  # (seeds, batch, classes)
        loss_sum += F.cross_entropy(logits.transpose(1, 2), y.expand(seeds, -1), reduction="none").sum(1)
        correct += (logits.argmax(2) == y).sum(1)
    template.train()
    n = len(split)
    return [{"loss": loss / n, "acc": right / n} for loss, right in zip(loss_sum.tolist(), correct.tolist())]
