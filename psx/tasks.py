"""What one training step and one evaluation mean for a kind of problem.

The trainer calls only these two functions, so it knows nothing about models or data sets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psx.data.spec import Split


class Classification:
    selection_metric = "acc"  # the validation metric that picks the best epoch
    mode = "max"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Split, batch_size: int) -> dict[str, float]:
        model.eval()
        loss_sum = torch.zeros((), device=split.y.device)
        correct = torch.zeros((), device=split.y.device, dtype=torch.long)
        for start in range(0, len(split), batch_size):
            x, y = split.batch(slice(start, start + batch_size))
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = len(split)
        return {"loss": loss_sum.item() / n, "acc": correct.item() / n}
